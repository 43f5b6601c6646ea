package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/sluicehq/sluice/routing"
)

// ControllerName is the controller name under which Sluice writes the
// parent status of HTTPRoutes attached to Services.
const ControllerName gatewayv1.GatewayController = "sluice.dev/gateway-controller"

// maxConditionMessage is the longest condition message the API accepts.
const maxConditionMessage = 32768

// Backoff bounds of StatusWriter's retries after a failed write.
const (
	statusRetryMin = time.Second
	statusRetryMax = time.Minute
)

// StatusWriter keeps the parent status of HTTPRoutes attached to Services
// (GAMMA) up to date, as a mesh implementation of the Gateway API must: for
// every Service parentRef of every HTTPRoute, one status.parents entry with
// controllerName sluice.dev/gateway-controller and the conditions
//
//   - Accepted: True when the Service exists and has the port (and the port
//     name) the parentRef names; False with reason NoMatchingParent when not.
//   - ResolvedRefs: True when every backendRef (and mirror backendRef) names
//     an existing Service port it may refer to; False with the first
//     problem's reason (InvalidKind for another kind, RefNotPermitted for
//     another namespace without a ReferenceGrant, BackendNotFound for a
//     missing Service or port) and every problem in the message.
//
// What the route compiler rejects (an unsupported filter makes its rule
// answer 500; an unusable match or mirror is dropped) is listed in the
// Accepted message: the route is attached all the same.
//
// observedGeneration is the route's generation. Entries of other
// controllers are left alone, entries of parents no longer referenced are
// removed, and a route whose status would not change is not written.
//
// Every replica of the destination service computes the same statuses, but
// only one may write them, or they race on every change: run Run under
// RunAsLeader. Run starts with every route (SyncAll), so a replica that
// takes over catches up on what changed while nobody led.
type StatusWriter struct {
	src    *Source
	client gatewayclient.Interface
	log    *slog.Logger
	now    func() time.Time
}

// NewStatusWriter returns a StatusWriter that reads the cluster from src
// and writes statuses through client. A nil log means slog.Default().
func NewStatusWriter(src *Source, client gatewayclient.Interface, log *slog.Logger) *StatusWriter {
	if log == nil {
		log = slog.Default()
	}
	return &StatusWriter{src: src, client: client, log: log.With("component", "httproute-status"), now: time.Now}
}

// Run writes statuses once the source has synced, then again whenever the
// source changes, until ctx is done. A failed write is retried with backoff
// even if nothing changes.
func (w *StatusWriter) Run(ctx context.Context) error {
	if err := w.src.WaitForSync(ctx); err != nil {
		return nil // ctx done first
	}
	delay := statusRetryMin
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		changed := w.src.Changed()
		var again <-chan time.Time
		if failed := w.SyncAll(ctx); failed > 0 {
			timer.Reset(delay)
			again = timer.C
			delay = min(2*delay, statusRetryMax)
		} else {
			delay = statusRetryMin
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			timer.Stop()
		case <-again:
		}
	}
}

// SyncAll brings the status of every HTTPRoute up to date and returns how
// many writes failed (each is logged).
func (w *StatusWriter) SyncAll(ctx context.Context) (failed int) {
	for _, obj := range w.src.routes.GetIndexer().List() {
		rt := obj.(*gatewayv1.HTTPRoute)
		if err := w.sync(ctx, rt); err != nil {
			if ctx.Err() != nil {
				return failed
			}
			failed++
			w.log.WarnContext(ctx, "cannot write httproute status", "route", rt.Namespace+"/"+rt.Name, "error", err)
		}
	}
	return failed
}

// sync writes the status of one route if it changed, starting from the
// cached copy and reading the route again after a conflict.
func (w *StatusWriter) sync(ctx context.Context, cached *gatewayv1.HTTPRoute) error {
	first := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rt := cached
		if !first {
			var err error
			rt, err = w.client.GatewayV1().HTTPRoutes(cached.Namespace).Get(ctx, cached.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read httproute %s/%s: %w", cached.Namespace, cached.Name, err)
			}
		}
		first = false
		next := mergeParentStatuses(rt.Status.Parents, parentStatuses(w.src, rt), metav1.NewTime(w.now()))
		if equality.Semantic.DeepEqual(next, rt.Status.Parents) {
			return nil
		}
		up := rt.DeepCopy()
		up.Status.Parents = next
		_, err := w.client.GatewayV1().HTTPRoutes(up.Namespace).UpdateStatus(ctx, up, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("update status of httproute %s/%s: %w", up.Namespace, up.Name, err)
		}
		return err
	})
}

// clusterView is what route statuses are computed from.
type clusterView interface {
	// service returns the Service ns/name, or nil.
	service(ns, name string) *corev1.Service
	// permitted reports whether a ReferenceGrant in toNS lets HTTPRoutes of
	// fromNS refer to the Service toNS/name.
	permitted(fromNS, toNS, name string) bool
}

// parentStatuses computes Sluice's status entries of a route, one per
// Service parentRef in spec order, with conditions whose
// lastTransitionTime is not set.
func parentStatuses(view clusterView, rt *gatewayv1.HTTPRoute) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	var resolved *metav1.Condition
	for _, pr := range rt.Spec.ParentRefs {
		if !isServiceParent(pr) || len(out) == 32 {
			continue
		}
		if resolved == nil {
			c := resolvedRefs(view, rt)
			resolved = &c
		}
		accepted, ports := acceptance(view, rt, pr)
		if msgs := compileErrors(rt, ports); len(msgs) > 0 {
			accepted.Message = conditionMessage(accepted.Message + "; with problems: " + strings.Join(msgs, "; "))
		}
		out = append(out, gatewayv1.RouteParentStatus{
			ParentRef:      *pr.DeepCopy(),
			ControllerName: ControllerName,
			Conditions:     []metav1.Condition{accepted, *resolved},
		})
	}
	return out
}

// acceptance returns the Accepted condition of one Service parentRef and
// the Service ports it attaches to.
func acceptance(view clusterView, rt *gatewayv1.HTTPRoute, pr gatewayv1.ParentReference) (metav1.Condition, []routing.ServicePort) {
	ns := parentNamespace(pr, rt.Namespace)
	cond := func(ok bool, msg string) metav1.Condition {
		c := metav1.Condition{
			Type:               string(gatewayv1.RouteConditionAccepted),
			Status:             metav1.ConditionTrue,
			Reason:             string(gatewayv1.RouteReasonAccepted),
			Message:            conditionMessage(msg),
			ObservedGeneration: rt.Generation,
		}
		if !ok {
			c.Status, c.Reason = metav1.ConditionFalse, string(gatewayv1.RouteReasonNoMatchingParent)
		}
		return c
	}
	svc := view.service(ns, string(pr.Name))
	if svc == nil {
		return cond(false, fmt.Sprintf("Service %s/%s does not exist", ns, pr.Name)), nil
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return cond(false, fmt.Sprintf("Service %s/%s is an ExternalName Service, which the mesh does not route", ns, pr.Name)), nil
	}
	var ports []routing.ServicePort
	for _, sp := range routing.ServicePortsOf(svc) {
		if (pr.Port == nil || *pr.Port == sp.Port) && (pr.SectionName == nil || string(*pr.SectionName) == sp.PortName) {
			ports = append(ports, sp)
		}
	}
	if len(ports) == 0 {
		var what []string
		if pr.Port != nil {
			what = append(what, fmt.Sprintf("port %d", *pr.Port))
		}
		if pr.SectionName != nil {
			what = append(what, fmt.Sprintf("port named %q", *pr.SectionName))
		}
		if len(what) == 0 {
			what = append(what, "TCP port")
		}
		return cond(false, fmt.Sprintf("Service %s/%s has no %s", ns, pr.Name, strings.Join(what, " and "))), nil
	}
	return cond(true, fmt.Sprintf("attached to Service %s/%s", ns, pr.Name)), ports
}

// resolvedRefs returns the ResolvedRefs condition of a route.
func resolvedRefs(view clusterView, rt *gatewayv1.HTTPRoute) metav1.Condition {
	type problem struct {
		reason gatewayv1.RouteConditionReason
		msg    string
	}
	var problems []problem
	check := func(field string, ref gatewayv1.BackendObjectReference) {
		group, kind := "", "Service"
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		if !isCoreGroup(group) || kind != "Service" {
			gk := kind
			if group != "" {
				gk = kind + "." + group
			}
			problems = append(problems, problem{gatewayv1.RouteReasonInvalidKind,
				fmt.Sprintf("%s: %s is not supported (only Service)", field, gk)})
			return
		}
		ns := rt.Namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		if ns != rt.Namespace && !isParentService(rt, ns, string(ref.Name)) && !view.permitted(rt.Namespace, ns, string(ref.Name)) {
			problems = append(problems, problem{gatewayv1.RouteReasonRefNotPermitted,
				fmt.Sprintf("%s: Service %s/%s is in another namespace and no ReferenceGrant there permits it", field, ns, ref.Name)})
			return
		}
		svc := view.service(ns, string(ref.Name))
		switch {
		case svc == nil:
			problems = append(problems, problem{gatewayv1.RouteReasonBackendNotFound,
				fmt.Sprintf("%s: Service %s/%s not found", field, ns, ref.Name)})
		case ref.Port == nil:
			problems = append(problems, problem{gatewayv1.RouteReasonBackendNotFound,
				fmt.Sprintf("%s: port is required for Service %s/%s", field, ns, ref.Name)})
		default:
			if _, ok := routedPort(svc, *ref.Port); !ok {
				problems = append(problems, problem{gatewayv1.RouteReasonBackendNotFound,
					fmt.Sprintf("%s: Service %s/%s has no TCP port %d", field, ns, ref.Name, *ref.Port)})
			}
		}
	}
	for i := range rt.Spec.Rules {
		r := &rt.Spec.Rules[i]
		for j := range r.BackendRefs {
			check(fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j), r.BackendRefs[j].BackendObjectReference)
		}
		for j := range r.Filters {
			if f := r.Filters[j]; f.Type == gatewayv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
				check(fmt.Sprintf("spec.rules[%d].filters[%d].requestMirror.backendRef", i, j), f.RequestMirror.BackendRef)
			}
		}
	}
	c := metav1.Condition{
		Type:               string(gatewayv1.RouteConditionResolvedRefs),
		Status:             metav1.ConditionTrue,
		Reason:             string(gatewayv1.RouteReasonResolvedRefs),
		Message:            "all references resolved",
		ObservedGeneration: rt.Generation,
	}
	if len(problems) > 0 {
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.msg
		}
		c.Status, c.Reason = metav1.ConditionFalse, string(problems[0].reason)
		c.Message = conditionMessage(strings.Join(msgs, "; "))
	}
	return c
}

// isParentService reports whether the route has a parentRef naming the
// Service ns/name: a consumer route may send to its parent without a
// ReferenceGrant.
func isParentService(rt *gatewayv1.HTTPRoute, ns, name string) bool {
	for _, pr := range rt.Spec.ParentRefs {
		if isServiceParent(pr) && parentNamespace(pr, rt.Namespace) == ns && string(pr.Name) == name {
			return true
		}
	}
	return false
}

// compileErrors returns what the route compiler reports for the route on
// the given ports, each problem once, in order.
func compileErrors(rt *gatewayv1.HTTPRoute, ports []routing.ServicePort) []string {
	var out []string
	for _, sp := range ports {
		// Compiling as a client of the route's own namespace selects the
		// route whether it is a producer or a consumer route.
		_, errs := routing.Compile(sp, []gatewayv1.HTTPRoute{*rt}, rt.Namespace)
		for _, e := range errs {
			msg := e.Field + ": " + e.Message
			if e.Field == "" {
				msg = e.Message
			}
			if !slices.Contains(out, msg) {
				out = append(out, msg)
			}
		}
	}
	return out
}

// conditionMessage truncates a message to what the API accepts.
func conditionMessage(msg string) string {
	if len(msg) <= maxConditionMessage {
		return msg
	}
	const more = "…"
	cut := maxConditionMessage - len(more)
	for cut > 0 && !isRuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + more
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// mergeParentStatuses returns the status.parents a route should have: the
// entries of other controllers as they are, then ours. An entry of ours
// that was there keeps the lastTransitionTime of every condition whose
// status did not change; other conditions get now.
func mergeParentStatuses(old, ours []gatewayv1.RouteParentStatus, now metav1.Time) []gatewayv1.RouteParentStatus {
	var out []gatewayv1.RouteParentStatus
	for i := range old {
		if old[i].ControllerName != ControllerName {
			out = append(out, *old[i].DeepCopy())
		}
	}
	for _, want := range ours {
		var conds []metav1.Condition
		for i := range old {
			if old[i].ControllerName == ControllerName && equality.Semantic.DeepEqual(old[i].ParentRef, want.ParentRef) {
				conds = slices.Clone(old[i].Conditions)
				break
			}
		}
		conds = slices.DeleteFunc(conds, func(c metav1.Condition) bool {
			return !slices.ContainsFunc(want.Conditions, func(w metav1.Condition) bool { return w.Type == c.Type })
		})
		for _, c := range want.Conditions {
			c.LastTransitionTime = now
			meta.SetStatusCondition(&conds, c)
		}
		out = append(out, gatewayv1.RouteParentStatus{
			ParentRef:      want.ParentRef,
			ControllerName: ControllerName,
			Conditions:     conds,
		})
	}
	if out == nil {
		out = []gatewayv1.RouteParentStatus{} // status.parents is required
	}
	return out
}
