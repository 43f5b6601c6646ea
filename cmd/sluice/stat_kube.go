package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/local/up"
	"github.com/sluicehq/sluice/mesh/injector"
	"github.com/sluicehq/sluice/mesh/telemetry"
)

// Where the telemetry API is on a cluster.
const (
	controlPlaneNamespace = "sluice"
	telemetryService      = "sluice-telemetry"
	telemetryPortName     = "http"
)

// telemetryProxyPath is the API server's service-proxy path to the
// telemetry API.
func telemetryProxyPath() string {
	return "/api/v1/namespaces/" + controlPlaneNamespace + "/services/" + telemetryService + ":" + telemetryPortName + "/proxy"
}

// telemetryClient is a client of the cluster's telemetry API, reached
// through the API server's service proxy with the kubeconfig's credentials.
func (k *kubeTarget) telemetryClient() (*telemetry.Client, error) {
	hc, err := rest.HTTPClientFor(k.cfg)
	if err != nil {
		return nil, fmt.Errorf("a client for the API server at %s: %w", k.cfg.Host, err)
	}
	hc.Timeout = 30 * time.Second
	base, _, err := rest.DefaultServerUrlFor(k.cfg)
	if err != nil {
		return nil, fmt.Errorf("the API server's address %q: %w", k.cfg.Host, err)
	}
	return &telemetry.Client{BaseURL: strings.TrimRight(base.String(), "/") + telemetryProxyPath(), HTTPClient: hc}, nil
}

// kubeStat reads what `sluice stat` shows from a cluster: the Deployments
// and pods of namespace ("" for all) as the workloads and replicas, and
// telemetry's summaries over window.
func kubeStat(ctx context.Context, k *kubeTarget, namespace string, window time.Duration) (*up.Status, []telemetry.WorkloadSummary, error) {
	st, err := kubeWorkloads(ctx, k.client, namespace)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the workloads of %s: %w", k, err)
	}
	var svc corev1.Service
	err = k.client.Get(ctx, types.NamespacedName{Namespace: controlPlaneNamespace, Name: telemetryService}, &svc)
	if apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("%s has no service %s/%s to ask for metrics: %s", k, controlPlaneNamespace, telemetryService, hintInstall)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading service %s/%s on %s: %w", controlPlaneNamespace, telemetryService, k, err)
	}
	tc, err := k.telemetryClient()
	if err != nil {
		return nil, nil, err
	}
	sums, err := tc.Workloads(ctx, window)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (is the control plane installed and ready? see `sluice check`)", err)
	}
	return st, sums, nil
}

// kubeWorkloads describes the Deployments of namespace ("" for all) and
// their pods as local mode's status does.
func kubeWorkloads(ctx context.Context, c client.Reader, namespace string) (*up.Status, error) {
	var deps appsv1.DeploymentList
	if err := c.List(ctx, &deps, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	var rss appsv1.ReplicaSetList
	if err := c.List(ctx, &rss, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	st := &up.Status{}
	for _, d := range deps.Items {
		replicas := 1
		if d.Spec.Replicas != nil {
			replicas = int(*d.Spec.Replicas)
		}
		st.Workloads = append(st.Workloads, supervisor.WorkloadStatus{
			Namespace: d.Namespace, Name: d.Name, Replicas: replicas,
			Current: int(d.Status.UpdatedReplicas), Ready: int(d.Status.ReadyReplicas),
		})
	}
	owner := map[string]string{} // namespace/replicaset → deployment
	for _, rs := range rss.Items {
		if ref := controllerOf(rs.OwnerReferences, "Deployment"); ref != "" {
			owner[rs.Namespace+"/"+rs.Name] = ref
		}
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		rs := controllerOf(p.OwnerReferences, "ReplicaSet")
		dep := owner[p.Namespace+"/"+rs]
		if dep == "" {
			continue
		}
		st.Replicas = append(st.Replicas, up.Replica{ReplicaStatus: podReplica(p, dep)})
	}
	return st, nil
}

// controllerOf is the name of the controlling owner of kind; "" if none.
func controllerOf(refs []metav1.OwnerReference, kind string) string {
	for _, r := range refs {
		if r.Kind == kind && r.Controller != nil && *r.Controller {
			return r.Name
		}
	}
	return ""
}

// podReplica describes a pod of Deployment dep as a local replica.
func podReplica(p *corev1.Pod, dep string) supervisor.ReplicaStatus {
	r := supervisor.ReplicaStatus{
		Namespace: p.Namespace, Workload: dep, Pod: p.Name,
		Revision: p.Annotations["sluice.dev/revision"],
		Stopping: p.DeletionTimestamp != nil,
		Created:  p.CreationTimestamp.Time,
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			r.Ready = true
		}
	}
	var problems []string
	for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if cs.Name == injector.ProxyContainerName {
			r.ProxyReady = cs.Ready
			r.Proxy.Restarts = int(cs.RestartCount)
		} else {
			r.App.Restarts += int(cs.RestartCount)
		}
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			problems = append(problems, fmt.Sprintf("container %s: %s", cs.Name, cmp.Or(cs.State.Waiting.Message, cs.State.Waiting.Reason)))
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
			problems = append(problems, fmt.Sprintf("container %s: exited %d (%s)", cs.Name, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason))
		}
	}
	if !r.Ready {
		if len(problems) == 0 {
			problems = append(problems, "phase "+string(p.Status.Phase)+", not ready")
		}
		r.Problem = strings.Join(problems, "; ")
	}
	return r
}
