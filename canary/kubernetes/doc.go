// Package kubernetes runs canaries on a Kubernetes cluster: the Canary
// reconciler, built on controller-runtime, and the Kubernetes
// implementations of the canary driver's interfaces — Workloads
// (Deployments, their ConfigMaps and Secrets, Services and
// HorizontalPodAutoscalers) and Router (Gateway API v1 HTTPRoutes).
//
// # Generated objects
//
// For a Canary whose target is the Deployment "podinfo" selecting its pods by
// app=podinfo, with service.name "podinfo":
//
//   - Deployment "podinfo-primary", a clone of the target whose selector and
//     pod label are app=podinfo-primary; it runs the promoted revision. The
//     ConfigMaps and Secrets the target uses are copied as "<name>-primary"
//     and the clone refers to the copies, so that a changed ConfigMap is
//     rolled out as a new revision rather than under the primary's feet.
//   - Services "podinfo" (the apex, selecting the primary's pods),
//     "podinfo-primary" (the primary's pods) and "podinfo-canary" (the
//     target's pods).
//   - HTTPRoute "podinfo", parented on the apex Service (GAMMA), with one
//     rule splitting traffic between podinfo-primary and podinfo-canary; or,
//     with service.httpRouteRef, only the weights of those two backends in
//     the user's route.
//   - With autoscalerRef, HorizontalPodAutoscaler "<hpa>-primary" scaling the
//     primary as the target's scales the target.
//
// The target serves as the canary during a run and is scaled to zero between
// runs; its replicas before that are kept in ReplicasAnnotation.
//
// # Revisions
//
// A workload's revision is a hash of its pod template, Sluice's own
// annotations left out, and of the data of the ConfigMaps and Secrets it
// refers to (status.trackedConfigs). Sluice writes the revision into the pod
// template of the primary and of the scaled-up target (RevisionAnnotation),
// so that the pods, and the metrics of their proxies, carry it.
//
// # Traffic
//
// Weights that send more traffic to the canary (a higher weight, mirroring,
// A/B matching) are written only after the route's parent status says
// Accepted for its current generation; weights that send traffic back to the
// primary are written at once, so that a rollback never waits for the data
// plane's acknowledgement of the step before it.
package kubernetes

import "github.com/sluicehq/sluice/crds/sluice/v1beta1"

// Annotations and names this package reads and writes.
const (
	// Finalizer holds a Canary with spec.revertOnDeletion until the target
	// has its replicas and the apex Service its selector back.
	Finalizer = "sluice.dev/finalizer"

	// ActionAnnotation on a Canary asks for a manual action: promote,
	// abort, retry, pause or resume (`sluice promote` and the like set it).
	ActionAnnotation = "sluice.dev/action"
	// ActionAtAnnotation is when the action was asked for, in RFC 3339; an
	// action is applied once per request time.
	ActionAtAnnotation = "sluice.dev/action-at"

	// RevisionAnnotation on the pod template of the primary and of the
	// scaled-up target is the revision the pods run. It is left out of the
	// revision's own hash.
	RevisionAnnotation = v1beta1.RevisionAnnotation
	// ReplicasAnnotation on the target is its replica count before Sluice
	// scaled it to zero.
	ReplicasAnnotation = "sluice.dev/replicas"
	// OriginalSelectorAnnotation on an apex Service that existed before
	// Sluice took it over is its selector then, in JSON; revertOnDeletion
	// puts it back.
	OriginalSelectorAnnotation = "sluice.dev/original-selector"
	// ConfigTrackingAnnotation set to "disabled" on a ConfigMap or Secret
	// leaves it out of the revision: the primary then uses it as it is,
	// not a copy. Flagger's flagger.app/config-tracking is honoured too.
	ConfigTrackingAnnotation = "sluice.dev/config-tracking"

	// DefaultControllerName is the GAMMA controller whose parent status on
	// an HTTPRoute tells that Sluice's destination service accepted it.
	DefaultControllerName = "sluice.dev/gateway-controller"
)

// flaggerConfigTrackingAnnotation is Flagger's ConfigTrackingAnnotation.
const flaggerConfigTrackingAnnotation = "flagger.app/config-tracking"

// ownTemplateAnnotations are the pod-template annotations Sluice writes,
// left out of revisions and of the primary's copy of the target's template.
var ownTemplateAnnotations = []string{RevisionAnnotation}
