package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Config kinds, as the keys of status.trackedConfigs name them.
const (
	kindConfigMap = "configmap"
	kindSecret    = "secret"
)

// configRef names a ConfigMap or a Secret a pod template refers to.
type configRef struct {
	kind string // kindConfigMap or kindSecret
	name string
}

// key is the ref's key in status.trackedConfigs: "configmap/<name>".
func (r configRef) key() string { return r.kind + "/" + r.name }

// trackedConfig is a ConfigMap or Secret a target uses, read.
type trackedConfig struct {
	ref       configRef
	checksum  string
	configMap *corev1.ConfigMap
	secret    *corev1.Secret
}

// trackedConfigs are a workload's configs by key.
type trackedConfigs map[string]*trackedConfig

// checksums returns the configs' checksums by key.
func (t trackedConfigs) checksums() map[string]string {
	if len(t) == 0 {
		return nil
	}
	out := make(map[string]string, len(t))
	for k, c := range t {
		out[k] = c.checksum
	}
	return out
}

// has reports whether the config kind/name is tracked.
func (t trackedConfigs) has(kind, name string) bool {
	_, ok := t[configRef{kind, name}.key()]
	return ok
}

// podConfigRefs lists the ConfigMaps and Secrets spec refers to through its
// volumes (configMap, secret, projected), and its containers' and init
// containers' env and envFrom, in a stable order.
func podConfigRefs(spec *corev1.PodSpec) []configRef {
	seen := map[configRef]bool{}
	var out []configRef
	add := func(kind, name string) {
		r := configRef{kind, name}
		if name == "" || seen[r] {
			return
		}
		seen[r] = true
		out = append(out, r)
	}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			add(kindConfigMap, v.ConfigMap.Name)
		case v.Secret != nil:
			add(kindSecret, v.Secret.SecretName)
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					add(kindConfigMap, s.ConfigMap.Name)
				}
				if s.Secret != nil {
					add(kindSecret, s.Secret.Name)
				}
			}
		}
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					add(kindConfigMap, e.ConfigMapRef.Name)
				}
				if e.SecretRef != nil {
					add(kindSecret, e.SecretRef.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					add(kindConfigMap, r.Name)
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					add(kindSecret, r.Name)
				}
			}
		}
	}
	return out
}

// trackableSecret reports whether a Secret of type t holds configuration
// (Flagger's rule): service-account tokens, registry credentials and the
// like are not tracked.
func trackableSecret(t corev1.SecretType) bool {
	switch t {
	case "", corev1.SecretTypeOpaque, corev1.SecretTypeBasicAuth, corev1.SecretTypeSSHAuth, corev1.SecretTypeTLS:
		return true
	}
	return false
}

// trackingDisabled reports whether annotations opt an object out of config
// tracking.
func trackingDisabled(annotations map[string]string) bool {
	return annotations[ConfigTrackingAnnotation] == "disabled" || annotations[flaggerConfigTrackingAnnotation] == "disabled"
}

// readConfigs reads the ConfigMaps and Secrets spec refers to in namespace
// ns and returns those that are tracked: present, not opted out, and (for
// Secrets) holding configuration. A missing one is left out: the pods that
// need it cannot start, and its appearing changes the revision.
func readConfigs(ctx context.Context, r client.Reader, ns string, spec *corev1.PodSpec) (trackedConfigs, error) {
	out := trackedConfigs{}
	for _, ref := range podConfigRefs(spec) {
		key := types.NamespacedName{Namespace: ns, Name: ref.name}
		tc := &trackedConfig{ref: ref}
		switch ref.kind {
		case kindConfigMap:
			cm := &corev1.ConfigMap{}
			if err := r.Get(ctx, key, cm); err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("reading ConfigMap %s: %w", key, err)
			}
			if trackingDisabled(cm.Annotations) {
				continue
			}
			tc.configMap = cm
			tc.checksum = checksum(struct {
				Data       map[string]string `json:"data,omitempty"`
				BinaryData map[string][]byte `json:"binaryData,omitempty"`
			}{cm.Data, cm.BinaryData})
		case kindSecret:
			s := &corev1.Secret{}
			if err := r.Get(ctx, key, s); err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("reading Secret %s: %w", key, err)
			}
			if trackingDisabled(s.Annotations) || !trackableSecret(s.Type) {
				continue
			}
			tc.secret = s
			tc.checksum = checksum(s.Data)
		}
		out[ref.key()] = tc
	}
	return out, nil
}

// checksum is the first 8 hex digits of the SHA-256 of v's JSON.
func checksum(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		data = fmt.Appendf(nil, "%#v", v)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:4])
}

// revisionOf is the revision of a workload running tpl with configs (by
// key, their checksums): 10 hex digits of a SHA-256 over the template, with
// Sluice's own annotations left out, and the sorted configs.
func revisionOf(tpl *corev1.PodTemplateSpec, configs map[string]string) string {
	t := tpl.DeepCopy()
	stripOwnAnnotations(t.Annotations)
	if len(t.Annotations) == 0 {
		t.Annotations = nil
	}
	h := sha256.New()
	data, err := json.Marshal(t)
	if err != nil {
		data = fmt.Appendf(nil, "%#v", t)
	}
	h.Write(data)
	keys := make([]string, 0, len(configs))
	for k := range configs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "\n%s=%s", k, configs[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:5])
}

// stripOwnAnnotations deletes the pod-template annotations Sluice writes.
func stripOwnAnnotations(a map[string]string) {
	for _, k := range ownTemplateAnnotations {
		delete(a, k)
	}
}

// primaryConfigName is the name of the primary's copy of a config.
func primaryConfigName(name string) string { return name + "-primary" }

// isPrimaryConfigName reports whether name looks like a primary's copy.
func isPrimaryConfigName(name string) bool { return strings.HasSuffix(name, "-primary") }
