package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/mesh/injector"
)

// podTemplatePaths are where each workload kind keeps its pod template, as
// JSON Pointer tokens.
var podTemplatePaths = map[string][]string{
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

func newInjectCmd() *cobra.Command {
	var file string
	cfg := injector.DefaultConfig()
	cfg.ProxyVersion = version
	cfg.CreatedBy = "sluice inject " + version
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "Add the sluice-proxy sidecar to the pods of Kubernetes manifests",
		Long: `Inject reads Kubernetes manifests (YAML, several documents) and prints them with
Sluice's sidecar added, as the injector webhook adds it, to every Pod and to the pod
templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs.
Other kinds pass through unchanged.

Every pod is injected unless its annotation sluice.dev/inject is "disabled";
config.sluice.dev/* annotations tune the proxy as they do for the webhook. A line
per workload on stderr says what was done. Nothing is printed if an annotation is
invalid.

  sluice inject -f app.yaml | kubectl apply -f -
  kubectl get deploy web -o yaml | sluice inject -f - | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var in io.Reader
			switch file {
			case "":
				return errors.New("inject: -f FILE (or - for stdin) is required")
			case "-":
				in = cmd.InOrStdin()
			default:
				f, err := os.Open(file)
				if err != nil {
					return fmt.Errorf("inject: %w", err)
				}
				defer f.Close()
				in = f
			}
			return injectManifests(in, cmd.OutOrStdout(), cmd.ErrOrStderr(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "manifests to inject, - for stdin")
	f.BoolVar(&cfg.NativeSidecars, "native-sidecars", cfg.NativeSidecars, "add the proxy as a native sidecar (Kubernetes 1.29 and later); false adds it as the first container")
	f.StringVar(&cfg.ControlPlaneNamespace, "control-plane-namespace", cfg.ControlPlaneNamespace, "namespace of Sluice's control plane")
	f.StringVar(&cfg.TrustDomain, "trust-domain", cfg.TrustDomain, "the mesh's trust domain")
	f.StringVar(&cfg.ClusterDomain, "cluster-domain", cfg.ClusterDomain, "the cluster's DNS domain")
	f.StringVar(&cfg.ProxyImage, "proxy-image", cfg.ProxyImage, "sluice-proxy image, without its tag")
	f.StringVar(&cfg.ProxyVersion, "proxy-version", cfg.ProxyVersion, "sluice-proxy image tag")
	return cmd
}

// injectManifests injects every document of in and writes them to out, with
// a line per workload to report. It writes nothing to out on error.
func injectManifests(in io.Reader, out, report io.Writer, cfg injector.Config) error {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var docs [][]byte
	var lines []string
	for n := 1; ; n++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("inject: document %d: %w", n, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		doc, docLines, err := injectDocument(raw, cfg)
		if err != nil {
			return fmt.Errorf("inject: document %d: %w", n, err)
		}
		docs = append(docs, doc)
		lines = append(lines, docLines...)
	}
	var b bytes.Buffer
	for i, d := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(d)
		if !bytes.HasSuffix(d, []byte("\n")) {
			b.WriteByte('\n')
		}
	}
	if _, err := out.Write(b.Bytes()); err != nil {
		return fmt.Errorf("inject: %w", err)
	}
	for _, l := range lines {
		fmt.Fprintln(report, l)
	}
	return nil
}

// injectDocument injects one YAML document. A document with nothing to
// inject comes back as it was, comments and all; one that changed is
// re-encoded.
func injectDocument(raw []byte, cfg injector.Config) ([]byte, []string, error) {
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, nil, err
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return raw, nil, nil // comments only, or not an object
	}
	changed, lines, err := injectObject(obj, cfg)
	if err != nil || !changed {
		return raw, lines, err
	}
	j, err = json.Marshal(obj)
	if err != nil {
		return nil, nil, err
	}
	out, err := yaml.JSONToYAML(j)
	return out, lines, err
}

// injectObject injects obj in place: a Pod, a workload's pod template, or
// the items of a List. It reports whether anything changed.
func injectObject(obj map[string]any, cfg injector.Config) (bool, []string, error) {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	namespace, _ := meta["namespace"].(string)
	id := strings.ToLower(kind) + "/" + name

	if kind == "List" {
		items, _ := obj["items"].([]any)
		changed := false
		var lines []string
		for i, it := range items {
			item, ok := it.(map[string]any)
			if !ok {
				continue
			}
			c, l, err := injectObject(item, cfg)
			if err != nil {
				return false, nil, fmt.Errorf("items[%d]: %w", i, err)
			}
			changed = changed || c
			lines = append(lines, l...)
		}
		return changed, lines, nil
	}

	var path []string
	var owner *metav1.OwnerReference
	if kind != "Pod" {
		p, ok := podTemplatePaths[kind]
		if !ok {
			return false, nil, nil // not a workload: passed through
		}
		path = p
		owner = &metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, Controller: ptr.To(true)}
	}
	target, err := lookup(obj, path)
	if err != nil {
		return false, nil, fmt.Errorf("%s: %w", id, err)
	}
	// The typed pod only decides and computes the patch; the patch is
	// applied to the document, so fields unknown to these types survive.
	raw, err := json.Marshal(target)
	if err != nil {
		return false, nil, fmt.Errorf("%s: %w", id, err)
	}
	var pod corev1.Pod
	if kind == "Pod" {
		err = json.Unmarshal(raw, &pod)
	} else {
		var tmpl corev1.PodTemplateSpec
		err = json.Unmarshal(raw, &tmpl)
		pod = corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
		pod.Namespace = namespace
		pod.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	if err != nil {
		return false, nil, fmt.Errorf("%s: not a valid pod: %w", id, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        namespace,
		Annotations: map[string]string{injector.AnnotationInject: injector.InjectEnabled},
	}}
	patched, rep, err := injector.Inject(&pod, ns, cfg)
	if err != nil {
		return false, nil, fmt.Errorf("%s: %w", id, err)
	}
	line := id + ": " + rep.String()
	if !rep.Injected {
		return false, []string{line}, nil
	}
	ops, err := injector.CreatePatch(&pod, patched)
	if err != nil {
		return false, nil, fmt.Errorf("%s: %w", id, err)
	}
	if _, ok := target["metadata"].(map[string]any); !ok {
		target["metadata"] = map[string]any{}
	}
	if _, err := injector.ApplyPatch(target, ops); err != nil {
		return false, nil, fmt.Errorf("%s: %w", id, err)
	}
	return true, []string{line}, nil
}

// lookup returns the object at path below obj.
func lookup(obj map[string]any, path []string) (map[string]any, error) {
	cur := obj
	for i, key := range path {
		next, ok := cur[key].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("no %s", strings.Join(path[:i+1], "."))
		}
		cur = next
	}
	return cur, nil
}
