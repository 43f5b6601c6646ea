// Package routing compiles Gateway API HTTPRoutes attached to a Service (GAMMA)
// into the ordered routetable.Rule list a proxy runs, and reads and writes the
// backendRef weights of an HTTPRoute for the canary engine.
//
// # Compiling
//
// Compile takes one Service port and every HTTPRoute that might attach to it and
// returns the rules in Gateway API precedence order, so that the proxy can take the
// first rule that matches a request. Semantics, where the Gateway API leaves a choice:
//
//   - Attachment: a parentRef attaches when its group is "" or "core", its kind is
//     Service, its name is the service's and its namespace (default: the route's) is
//     the service's; port and sectionName, when set, must equal the port's number and
//     name. A nil group is the Gateway API default (gateway.networking.k8s.io) and so
//     never names a Service.
//   - Producer and consumer routes (GEP-1294): a route in the service's namespace is
//     a producer route and applies to every client. A route in another namespace is a
//     consumer route and applies only to clients in that namespace. Groups are not
//     merged: when the client's namespace has consumer routes for the service, only
//     those are used; otherwise the producer routes are. An empty clientNamespace
//     means producer routes only.
//   - Precedence across all rules of the selected routes: Exact path, then PathPrefix
//     by length in characters (longest first), then RegularExpression paths (longest
//     expression first; they rank after every prefix, "/" included, so a catch-all shadows them),
//     then a method match, more header matches, more query matches, the older route
//     (creationTimestamp), namespace/name alphabetically, the rule's index and the
//     match's index. A rule with N matches becomes N Rules; a rule with no matches
//     becomes one Rule with PathPrefix "/".
//   - backendRefs: group ""/core with kind Service (a nil kind is Service) becomes a
//     Backend keyed routetable.ServiceKey(name, namespace (default the route's), port),
//     with its weight copied (nil stays nil, meaning 1). Any other kind, a missing port
//     or an unsupported per-backend filter makes the backend invalid: it is kept, with
//     its weight, as a Backend whose Service is "", and the proxy answers 500 for the
//     requests it is picked for (Gateway API: an invalid backend's share gets 500). A
//     rule with no backendRefs and no redirect sends to the parent service itself
//     (GAMMA: omitted backendRefs mean the Service's own endpoints).
//   - Errors: everything unsupported or malformed becomes a RouteError naming the
//     route, the field path and the problem, and the rest still compiles. A rule with
//     an error in its own fields (an unsupported filter such as CORS, ExternalAuth or
//     ExtensionRef, conflicting filters, a malformed timeout or retry) is invalid and
//     compiles to a 500: Backends empty and no redirect. A match that cannot be
//     evaluated (a bad regular expression, a relative path) is dropped with an error;
//     the rule's other matches still work. An unusable mirror is dropped. An
//     unparseable annotation is ignored. sessionPersistence is not supported: it is
//     reported and ignored.
//
// # Retries and timeouts
//
// A rule's retry and timeouts fields are used as the Gateway API defines them (retry
// follows the v1.7 wording: attempts defaults to 1 and 0 disables retries). Clusters
// on the standard channel cannot store spec.rules[].retry, so the route annotations
// below apply to each of its rules; a spec field, when set, wins over the annotation
// for the same setting.
//
//   - retry.sluice.dev/http: comma list of "5xx" (500-599), "gateway-error" (502-504),
//     a code "503" (100-599) or a range "500-504".
//   - retry.sluice.dev/grpc: comma list of gRPC status names ("unavailable",
//     "deadline-exceeded", ...; numbers are accepted and turned into names).
//   - retry.sluice.dev/limit: the number of retries (0-65535); default 1 when any
//     retry annotation is present; 0 disables retries.
//   - retry.sluice.dev/timeout: per-attempt timeout (becomes timeouts.backendRequest).
//   - timeout.sluice.dev/request: whole-request timeout (becomes timeouts.request).
//
// When retry annotations are present but neither http nor grpc gives any condition,
// HTTP 5xx is retried (Linkerd's default).
package routing

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ServicePort describes one port of a Kubernetes-style Service as the compiler needs it.
type ServicePort struct {
	// Name and Namespace identify the Service ("" namespace means "default").
	Name, Namespace string
	// Port is the service port number; PortName its name (matched by sectionName).
	Port     int32
	PortName string
	// ClusterIPs are the Service's virtual addresses.
	ClusterIPs []string
	// AppProtocol is the port's appProtocol, if any.
	AppProtocol string
}

// Key is the port's routetable service key ("name.namespace:port").
func (s ServicePort) Key() string {
	return routetable.ServiceKey(s.Name, s.Namespace, int(s.Port))
}

// RouteError is a problem found in one HTTPRoute while compiling it.
type RouteError struct {
	// Route is "namespace/name".
	Route string
	// Field is the path of the offending field ("spec.rules[1].filters[0]").
	Field string
	// Message says what is wrong.
	Message string
}

// Error formats the error as "route: field: message".
func (e RouteError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("httproute %s: %s", e.Route, e.Message)
	}
	return fmt.Sprintf("httproute %s: %s: %s", e.Route, e.Field, e.Message)
}

// Compile attaches every HTTPRoute whose parentRefs name the service (GAMMA: group
// "" or "core", kind Service, same name; namespace defaults to the route's;
// port/sectionName, when set, must match this port) and returns the compiled,
// precedence-ordered rules. Producer routes (route namespace == service namespace)
// apply to every client; consumer routes (another namespace) are returned only when
// clientNamespace equals the route's namespace, and then replace the producer routes
// for that client. Unsupported things become errors collected per route while the
// rest still compiles; an invalid rule compiles to a 500 (Backends empty and no
// redirect). Errors are reported for the routes that apply to this client only.
// See the package documentation for the details.
func Compile(svc ServicePort, routes []gatewayv1.HTTPRoute, clientNamespace string) ([]routetable.Rule, []RouteError) {
	svcNS := nsOr(svc.Namespace)
	var producers, consumers []*gatewayv1.HTTPRoute
	for i := range routes {
		rt := &routes[i]
		rns := nsOr(rt.Namespace)
		if !attachesTo(rt, svc) {
			continue
		}
		switch {
		case rns == svcNS:
			producers = append(producers, rt)
		case clientNamespace != "" && rns == clientNamespace:
			consumers = append(consumers, rt)
		}
	}
	selected := producers
	if len(consumers) > 0 {
		selected = consumers
	}
	slices.SortStableFunc(selected, func(a, b *gatewayv1.HTTPRoute) int {
		if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(routeName(a), routeName(b))
	})

	var entries []entry
	var errs []RouteError
	for order, rt := range selected {
		c := compiler{route: rt, name: routeName(rt), ns: nsOr(rt.Namespace), svc: svc}
		c.annotations = c.parseAnnotations()
		for i := range rt.Spec.Rules {
			for _, e := range c.compileRule(i, &rt.Spec.Rules[i]) {
				e.routeOrder = order
				entries = append(entries, e)
			}
		}
		errs = append(errs, c.errs...)
	}
	slices.SortStableFunc(entries, comparePrecedence)
	var rules []routetable.Rule
	if len(entries) > 0 {
		rules = make([]routetable.Rule, len(entries))
		for i := range entries {
			rules[i] = entries[i].rule
		}
	}
	return rules, errs
}

// attachesTo reports whether any parentRef of the route names the service port.
func attachesTo(rt *gatewayv1.HTTPRoute, svc ServicePort) bool {
	for _, pr := range rt.Spec.ParentRefs {
		if parentRefMatches(pr, nsOr(rt.Namespace), svc) {
			return true
		}
	}
	return false
}

func parentRefMatches(pr gatewayv1.ParentReference, routeNS string, svc ServicePort) bool {
	if pr.Group == nil || (*pr.Group != "" && *pr.Group != "core") {
		return false
	}
	if pr.Kind == nil || *pr.Kind != "Service" {
		return false
	}
	if string(pr.Name) != svc.Name {
		return false
	}
	ns := routeNS
	if pr.Namespace != nil && *pr.Namespace != "" {
		ns = string(*pr.Namespace)
	}
	if ns != nsOr(svc.Namespace) {
		return false
	}
	if pr.Port != nil && *pr.Port != svc.Port {
		return false
	}
	if pr.SectionName != nil && string(*pr.SectionName) != svc.PortName {
		return false
	}
	return true
}

// entry is a compiled rule with what precedence needs beyond the rule itself.
type entry struct {
	rule       routetable.Rule
	routeOrder int // position of the route by (creationTimestamp, namespace/name)
	matchIndex int
}

func pathRank(m *routetable.Match) int {
	switch m.PathType {
	case routetable.PathExact:
		return 0
	case routetable.PathRegex:
		return 2
	default:
		return 1
	}
}

// comparePrecedence orders entries highest precedence first.
func comparePrecedence(a, b entry) int {
	am, bm := &a.rule.Match, &b.rule.Match
	if c := cmp.Compare(pathRank(am), pathRank(bm)); c != 0 {
		return c
	}
	if pathRank(am) != 0 {
		if c := cmp.Compare(len(bm.Path), len(am.Path)); c != 0 { // longer first
			return c
		}
	}
	if c := cmp.Compare(boolRank(bm.Method != ""), boolRank(am.Method != "")); c != 0 {
		return c
	}
	if c := cmp.Compare(len(bm.Headers), len(am.Headers)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(bm.QueryParams), len(am.QueryParams)); c != 0 {
		return c
	}
	if c := cmp.Compare(a.routeOrder, b.routeOrder); c != 0 {
		return c
	}
	if c := cmp.Compare(a.rule.RuleIndex, b.rule.RuleIndex); c != 0 {
		return c
	}
	return cmp.Compare(a.matchIndex, b.matchIndex)
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nsOr(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

func routeName(rt *gatewayv1.HTTPRoute) string {
	return nsOr(rt.Namespace) + "/" + rt.Name
}
