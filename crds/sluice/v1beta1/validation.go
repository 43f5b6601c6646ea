package v1beta1

import (
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"text/template"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The Validate methods apply the rules of the CRD schema (OpenAPI and CEL)
// in Go, with the same field paths, for objects that never passed through an
// API server (local mode) and for what slipped past an older schema, and add
// the rules a schema cannot express: time zones that exist and templates
// that parse. They check the object as written, before SetDefaults.

var (
	// durationPattern is a Go duration without sign, as the schema accepts.
	durationPattern = regexp.MustCompile(`^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$`)
	// gatewayDurationPattern is a Gateway API duration (GEP-2257).
	gatewayDurationPattern = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)
	// cronPattern is five space-separated fields or a descriptor.
	cronPattern = regexp.MustCompile(`^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$`)
	// cronFieldPattern is the alphabet of one cron field.
	cronFieldPattern = regexp.MustCompile(`^[0-9A-Za-z*/,?-]+$`)
	// dnsLabelPattern is an RFC 1035 label, as Service names are.
	dnsLabelPattern = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	// timeZonePattern is the shape of an IANA zone name.
	timeZonePattern = regexp.MustCompile(`^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$`)
)

var (
	providers = []string{
		"sluice", "apisix", "appmesh", "appmesh:v1beta2", "contour", "gatewayapi:v1",
		"gatewayapi:v1beta1", "gloo", "istio", "knative", "kubernetes", "kuma", "linkerd",
		"nginx", "osm", "skipper", "smi:v1alpha1", "smi:v1alpha2", "smi:v1alpha3", "traefik",
	}
	targetKinds          = []string{"Deployment", "DaemonSet", "Service"}
	autoscalerKinds      = []string{"HorizontalPodAutoscaler", "ScaledObject"}
	trafficDistributions = []string{"PreferClose", "PreferSameZone", "PreferSameNode"}
	rewriteTypes         = []string{string(RewriteFullPath), string(RewritePrefixMatch)}
	severities           = []string{"", string(SeverityInfo), string(SeverityWarn), string(SeverityError)}
	sameSites            = []string{"Strict", "Lax", "None"}
	noDataPolicies       = []string{string(NoDataHold), string(NoDataFail)}
	windowPolicies       = []string{string(WindowFinish), string(WindowHold)}
	metricProviders      = []string{
		"sluice", "prometheus", "influxdb", "datadog", "externalmetrics", "stackdriver",
		"cloudwatch", "newrelic", "graphite", "dynatrace", "keptn", "splunk",
	}
	alertProviders = []string{"slack", "msteams", "discord", "rocket", "gchat", "generic"}
)

// Validate checks the Canary as the API server would, and what it cannot,
// returning every problem with the path of the field at fault, e.g.
// "spec.analysis.stepWeight: Invalid value: 60: analysis.stepWeight must not
// be greater than analysis.maxWeight (50)".
func (c *Canary) Validate() field.ErrorList {
	var errs field.ErrorList
	if c.Name == "" && c.GenerateName == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
	}
	spec := field.NewPath("spec")
	s := &c.Spec
	if s.Provider != "" {
		errs = append(errs, oneOf(spec.Child("provider"), string(s.Provider), providers)...)
	}
	if len(s.MetricsServer) > 2048 {
		errs = append(errs, field.TooLong(spec.Child("metricsServer"), "", 2048))
	}
	errs = append(errs, validateLocalRef(spec.Child("targetRef"), &s.TargetRef, targetKinds)...)
	if r := s.AutoscalerRef; r != nil {
		errs = append(errs, validateAutoscalerRef(spec.Child("autoscalerRef"), r)...)
	}
	if r := s.IngressRef; r != nil {
		errs = append(errs, validateLocalRef(spec.Child("ingressRef"), r, []string{"Ingress"})...)
	}
	if r := s.RouteRef; r != nil {
		errs = append(errs, validateLocalRef(spec.Child("routeRef"), r, []string{"ApisixRoute"})...)
	}
	if r := s.UpstreamRef; r != nil {
		p := spec.Child("upstreamRef")
		if r.APIVersion == "" || r.Kind != "Upstream" {
			errs = append(errs, field.Invalid(p, r.Kind, "upstreamRef needs apiVersion and kind Upstream"))
		}
		if r.Name == "" {
			errs = append(errs, field.Required(p.Child("name"), ""))
		}
	}
	switch {
	case s.Service.Name != "":
		if !validServiceName(s.Service.Name) {
			errs = append(errs, field.Invalid(spec.Child("service", "name"), s.Service.Name,
				"service.name must be a DNS label (lower-case letters, digits, '-') of at most 55 characters, so that <name>-primary and <name>-canary are valid Service names"))
		}
	case s.TargetRef.Name != "" && !validServiceName(s.TargetRef.Name):
		errs = append(errs, field.Invalid(spec.Child("targetRef", "name"), s.TargetRef.Name,
			"targetRef.name names the Services when service.name is unset, so it must be a DNS label of at most 55 characters; set service.name otherwise"))
	}
	if reflect.DeepEqual(s.Service, CanaryService{}) {
		errs = append(errs, field.Required(spec.Child("service"), "at least service.port"))
	} else {
		errs = append(errs, validateService(spec.Child("service"), &s.Service)...)
	}
	if s.Analysis == nil {
		errs = append(errs, field.Required(spec.Child("analysis"), "an analysis is needed, even with skipAnalysis"))
	} else {
		errs = append(errs, validateAnalysis(spec.Child("analysis"), s.Analysis)...)
	}
	if d := s.ProgressDeadlineSeconds; d != nil && *d < 1 {
		errs = append(errs, field.Invalid(spec.Child("progressDeadlineSeconds"), *d, "must be at least 1"))
	}
	return errs
}

func validateLocalRef(p *field.Path, r *LocalObjectReference, kinds []string) field.ErrorList {
	if *r == (LocalObjectReference{}) {
		return field.ErrorList{field.Required(p, "apiVersion, kind and name of the referent")}
	}
	var errs field.ErrorList
	if r.APIVersion == "" {
		errs = append(errs, field.Required(p.Child("apiVersion"), ""))
	}
	if r.Kind == "" {
		errs = append(errs, field.Required(p.Child("kind"), ""))
	} else {
		errs = append(errs, oneOf(p.Child("kind"), r.Kind, kinds)...)
	}
	if r.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	return errs
}

func validateAutoscalerRef(p *field.Path, r *AutoscalerReference) field.ErrorList {
	var errs field.ErrorList
	if r.APIVersion == "" {
		errs = append(errs, field.Required(p.Child("apiVersion"), ""))
	}
	if r.Kind == "" {
		errs = append(errs, field.Required(p.Child("kind"), ""))
	} else {
		errs = append(errs, oneOf(p.Child("kind"), r.Kind, autoscalerKinds)...)
	}
	if r.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	if rr := r.PrimaryScalerReplicas; rr != nil {
		rp := p.Child("primaryScalerReplicas")
		if rr.MinReplicas != nil && *rr.MinReplicas < 1 {
			errs = append(errs, field.Invalid(rp.Child("minReplicas"), *rr.MinReplicas, "must be at least 1"))
		}
		if rr.MaxReplicas != nil && *rr.MaxReplicas < 1 {
			errs = append(errs, field.Invalid(rp.Child("maxReplicas"), *rr.MaxReplicas, "must be at least 1"))
		}
		if rr.MinReplicas != nil && rr.MaxReplicas != nil && *rr.MinReplicas > *rr.MaxReplicas {
			errs = append(errs, field.Invalid(rp.Child("minReplicas"), *rr.MinReplicas,
				fmt.Sprintf("must not be greater than maxReplicas (%d)", *rr.MaxReplicas)))
		}
	}
	return errs
}

func validateService(p *field.Path, s *CanaryService) field.ErrorList {
	var errs field.ErrorList
	switch {
	case s.Port == 0:
		errs = append(errs, field.Required(p.Child("port"), "the port of the generated Services"))
	case s.Port < 1 || s.Port > 65535:
		errs = append(errs, field.Invalid(p.Child("port"), s.Port, "must be between 1 and 65535"))
	}
	if tp := s.TargetPort; tp != nil {
		if tp.Type == intstr.Int && (tp.IntVal < 1 || tp.IntVal > 65535) || tp.Type == intstr.String && (tp.StrVal == "" || len(tp.StrVal) > 15) {
			errs = append(errs, field.Invalid(p.Child("targetPort"), tp.String(),
				"service.targetPort must be a port number from 1 to 65535 or a port name of at most 15 characters"))
		}
	}
	if s.TrafficDistribution != "" {
		errs = append(errs, oneOf(p.Child("trafficDistribution"), string(s.TrafficDistribution), trafficDistributions)...)
	}
	for _, t := range []struct{ name, value string }{{"timeout", s.Timeout}, {"backendTimeout", s.BackendTimeout}} {
		if t.value != "" && !gatewayDurationPattern.MatchString(t.value) {
			errs = append(errs, field.Invalid(p.Child(t.name), t.value,
				"must be a Gateway API duration: up to four groups of 1-5 digits and h, m, s or ms, such as 30s or 1m30s"))
		}
	}
	errs = append(errs, maxItems(p.Child("gatewayRefs"), len(s.GatewayRefs), 32)...)
	for i := range s.GatewayRefs {
		r := &s.GatewayRefs[i]
		rp := p.Child("gatewayRefs").Index(i)
		if r.Name == "" {
			errs = append(errs, field.Required(rp.Child("name"), ""))
		}
		errs = append(errs, validatePort(rp.Child("port"), r.Port)...)
	}
	errs = append(errs, validateMatches(p.Child("match"), s.Match)...)
	if r := s.Rewrite; r != nil && r.Type != "" {
		errs = append(errs, oneOf(p.Child("rewrite", "type"), string(r.Type), rewriteTypes)...)
	}
	if r := s.Retries; r != nil && r.Attempts < 0 {
		errs = append(errs, field.Invalid(p.Child("retries", "attempts"), r.Attempts, "must not be negative"))
	}
	errs = append(errs, maxItems(p.Child("mirror"), len(s.Mirror), 16)...)
	for i := range s.Mirror {
		r := &s.Mirror[i].BackendRef
		rp := p.Child("mirror").Index(i).Child("backendRef")
		if r.Name == "" {
			errs = append(errs, field.Required(rp.Child("name"), ""))
		}
		group, kind := "", "Service"
		if r.Group != nil {
			group = *r.Group
		}
		if r.Kind != nil {
			kind = *r.Kind
		}
		if group == "" && kind == "Service" && r.Port == nil {
			errs = append(errs, field.Required(rp.Child("port"), "backendRef.port is required for a Service backend"))
		}
		errs = append(errs, validatePort(rp.Child("port"), r.Port)...)
	}
	if cp := s.CorsPolicy; cp != nil {
		op := p.Child("corsPolicy", "allowOrigins")
		errs = append(errs, maxItems(op, len(cp.AllowOrigins), 64)...)
		for i := range cp.AllowOrigins {
			errs = append(errs, validateStringMatch(op.Index(i), &cp.AllowOrigins[i])...)
		}
	}
	return errs
}

func validatePort(p *field.Path, port *int32) field.ErrorList {
	if port != nil && (*port < 1 || *port > 65535) {
		return field.ErrorList{field.Invalid(p, *port, "must be between 1 and 65535")}
	}
	return nil
}

func validateMatches(p *field.Path, matches []HTTPMatchRequest) field.ErrorList {
	errs := maxItems(p, len(matches), 32)
	for i := range matches {
		m := &matches[i]
		mp := p.Index(i)
		for _, sm := range []struct {
			name string
			m    *StringMatch
		}{{"uri", m.URI}, {"scheme", m.Scheme}, {"method", m.Method}, {"authority", m.Authority}} {
			if sm.m != nil {
				errs = append(errs, validateStringMatch(mp.Child(sm.name), sm.m)...)
			}
		}
		for _, mm := range []struct {
			name string
			m    map[string]StringMatch
		}{{"headers", m.Headers}, {"queryParams", m.QueryParams}, {"withoutHeaders", m.WithoutHeaders}} {
			for k, v := range mm.m {
				errs = append(errs, validateStringMatch(mp.Child(mm.name).Key(k), &v)...)
			}
		}
		if m.Port < 0 || m.Port > 65535 {
			errs = append(errs, field.Invalid(mp.Child("port"), m.Port, "must be between 0 and 65535"))
		}
	}
	return errs
}

func validateStringMatch(p *field.Path, m *StringMatch) field.ErrorList {
	n := 0
	for _, s := range []string{m.Exact, m.Prefix, m.Suffix, m.Regex} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return field.ErrorList{field.Invalid(p, *m, "a string match takes only one of exact, prefix, suffix or regex")}
	}
	if m.Regex != "" {
		if _, err := regexp.Compile(m.Regex); err != nil {
			return field.ErrorList{field.Invalid(p.Child("regex"), m.Regex, "not an RE2 regular expression: "+err.Error())}
		}
	}
	return nil
}

func validateAnalysis(p *field.Path, a *CanaryAnalysis) field.ErrorList {
	var errs field.ErrorList

	switch {
	case a.Interval == "":
		errs = append(errs, field.Required(p.Child("interval"), "the time between steps, at least 10s"))
	default:
		if d, ok := parseDuration(a.Interval); !ok || d < MinAnalysisInterval {
			errs = append(errs, field.Invalid(p.Child("interval"), a.Interval,
				"analysis.interval must be a duration of at least 10s, such as 30s or 1m"))
		}
	}
	if a.Threshold < 0 {
		errs = append(errs, field.Invalid(p.Child("threshold"), a.Threshold, "must not be negative"))
	}

	// Strategy: exactly one of stepWeight, stepWeights and iterations.
	var set []string
	if a.StepWeight != 0 {
		set = append(set, "stepWeight")
	}
	if len(a.StepWeights) > 0 {
		set = append(set, "stepWeights")
	}
	if a.Iterations != 0 {
		set = append(set, "iterations")
	}
	switch len(set) {
	case 0:
		errs = append(errs, field.Required(p,
			"analysis needs one of stepWeight or stepWeights (canary release) or iterations (A/B testing with match, blue/green without)"))
	case 1:
	default:
		errs = append(errs, field.Invalid(p, strings.Join(set, ", "),
			"analysis.stepWeight, analysis.stepWeights and analysis.iterations exclude one another: set exactly one"))
	}
	if a.Iterations < 0 {
		errs = append(errs, field.Invalid(p.Child("iterations"), a.Iterations, "must be at least 1"))
	}
	errs = append(errs, percent(p.Child("maxWeight"), a.MaxWeight, 0)...)
	errs = append(errs, percent(p.Child("mirrorWeight"), a.MirrorWeight, 0)...)
	errs = append(errs, percent(p.Child("stepWeightPromotion"), a.StepWeightPromotion, 0)...)
	if a.StepWeight != 0 {
		errs = append(errs, percent(p.Child("stepWeight"), a.StepWeight, 1)...)
		if a.MaxWeight > 0 && a.StepWeight > a.MaxWeight {
			errs = append(errs, field.Invalid(p.Child("stepWeight"), a.StepWeight,
				fmt.Sprintf("analysis.stepWeight must not be greater than analysis.maxWeight (%d)", a.MaxWeight)))
		}
	}
	if len(a.StepWeights) > 0 {
		sp := p.Child("stepWeights")
		errs = append(errs, maxItems(sp, len(a.StepWeights), 100)...)
		for i, w := range a.StepWeights {
			errs = append(errs, percent(sp.Index(i), w, 1)...)
		}
		for i := 1; i < len(a.StepWeights); i++ {
			if a.StepWeights[i] <= a.StepWeights[i-1] {
				errs = append(errs, field.Invalid(sp, a.StepWeights, "analysis.stepWeights must be strictly increasing"))
				break
			}
		}
	}
	if t := a.PrimaryReadyThreshold; t != nil {
		errs = append(errs, percent(p.Child("primaryReadyThreshold"), *t, 0)...)
	}
	if t := a.CanaryReadyThreshold; t != nil {
		errs = append(errs, percent(p.Child("canaryReadyThreshold"), *t, 0)...)
	}

	errs = append(errs, maxItems(p.Child("alerts"), len(a.Alerts), 32)...)
	for i := range a.Alerts {
		al := &a.Alerts[i]
		ap := p.Child("alerts").Index(i)
		if al.Name == "" {
			errs = append(errs, field.Required(ap.Child("name"), ""))
		}
		errs = append(errs, oneOf(ap.Child("severity"), string(al.Severity), severities)...)
		if al.ProviderRef.Name == "" {
			errs = append(errs, field.Required(ap.Child("providerRef", "name"), "the AlertProvider's name"))
		}
	}

	errs = append(errs, maxItems(p.Child("metrics"), len(a.Metrics), 64)...)
	for i := range a.Metrics {
		errs = append(errs, validateMetric(p.Child("metrics").Index(i), &a.Metrics[i])...)
	}

	errs = append(errs, maxItems(p.Child("webhooks"), len(a.Webhooks), 64)...)
	for i := range a.Webhooks {
		errs = append(errs, validateWebhook(p.Child("webhooks").Index(i), &a.Webhooks[i])...)
	}

	errs = append(errs, validateMatches(p.Child("match"), a.Match)...)

	if sa := a.SessionAffinity; sa != nil {
		sp := p.Child("sessionAffinity")
		if sa.CookieName == "" {
			errs = append(errs, field.Required(sp.Child("cookieName"), ""))
		}
		if sa.PrimaryCookieName != "" && sa.PrimaryCookieName == sa.CookieName {
			errs = append(errs, field.Invalid(sp.Child("primaryCookieName"), sa.PrimaryCookieName,
				"sessionAffinity.primaryCookieName must differ from sessionAffinity.cookieName"))
		}
		if sa.SameSite != "" {
			errs = append(errs, oneOf(sp.Child("sameSite"), string(sa.SameSite), sameSites)...)
		}
		if sa.MaxAge < 0 {
			errs = append(errs, field.Invalid(sp.Child("maxAge"), sa.MaxAge, "must not be negative"))
		}
	}

	if a.NoDataPolicy != "" {
		errs = append(errs, oneOf(p.Child("noDataPolicy"), string(a.NoDataPolicy), noDataPolicies)...)
	}
	if a.WindowPolicy != "" {
		errs = append(errs, oneOf(p.Child("windowPolicy"), string(a.WindowPolicy), windowPolicies)...)
	}
	errs = append(errs, maxItems(p.Child("windows"), len(a.Windows), 16)...)
	for i := range a.Windows {
		errs = append(errs, validateWindow(p.Child("windows").Index(i), &a.Windows[i])...)
	}
	return errs
}

func validateMetric(p *field.Path, m *CanaryMetric) field.ErrorList {
	var errs field.ErrorList
	if m.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	if m.Interval != "" {
		if d, ok := parseDuration(m.Interval); !ok || d <= 0 {
			errs = append(errs, field.Invalid(p.Child("interval"), m.Interval,
				"metrics[].interval must be a positive duration, such as 1m"))
		}
	}
	if r := m.ThresholdRange; r != nil && r.Min != nil && r.Max != nil && *r.Min > *r.Max {
		errs = append(errs, field.Invalid(p.Child("thresholdRange", "min"), r.Min.Float64(),
			fmt.Sprintf("thresholdRange.min must not be greater than thresholdRange.max (%s)", r.Max)))
	}
	if r := m.TemplateRef; r != nil && r.Name == "" {
		errs = append(errs, field.Required(p.Child("templateRef", "name"), "the MetricTemplate's name"))
	}
	return errs
}

func validateWebhook(p *field.Path, w *CanaryWebhook) field.ErrorList {
	var errs field.ErrorList
	if w.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	}
	if w.Type != "" {
		types := make([]string, 0, len(HookTypes))
		for _, t := range HookTypes {
			types = append(types, string(t))
		}
		errs = append(errs, oneOf(p.Child("type"), string(w.Type), types)...)
	}
	if w.URL == "" {
		errs = append(errs, field.Required(p.Child("url"), ""))
	} else if !isHTTPURL(w.URL) {
		errs = append(errs, field.Invalid(p.Child("url"), w.URL, "webhooks[].url must be an absolute http or https URL"))
	}
	if w.Timeout != "" {
		if d, ok := parseDuration(w.Timeout); !ok || d <= 0 {
			errs = append(errs, field.Invalid(p.Child("timeout"), w.Timeout,
				"webhooks[].timeout must be a positive duration, such as 30s"))
		}
	}
	if w.Retries < 0 {
		errs = append(errs, field.Invalid(p.Child("retries"), w.Retries, "must not be negative"))
	}
	return errs
}

func validateWindow(p *field.Path, w *AnalysisWindow) field.ErrorList {
	var errs field.ErrorList
	switch {
	case w.Schedule == "":
		errs = append(errs, field.Required(p.Child("schedule"), "a cron expression, such as \"0 9 * * 1-5\""))
	case !cronPattern.MatchString(w.Schedule):
		errs = append(errs, field.Invalid(p.Child("schedule"), w.Schedule,
			"windows[].schedule must be a cron expression of five fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily"))
	case !strings.HasPrefix(w.Schedule, "@"):
		for _, f := range strings.Fields(w.Schedule) {
			if !cronFieldPattern.MatchString(f) {
				errs = append(errs, field.Invalid(p.Child("schedule"), w.Schedule,
					fmt.Sprintf("cron field %q has characters other than digits, names, * / , - ?", f)))
				break
			}
		}
	}
	if w.Duration == "" {
		errs = append(errs, field.Required(p.Child("duration"), "how long the window stays open, such as 8h"))
	} else if d, ok := parseDuration(w.Duration); !ok || d <= 0 {
		errs = append(errs, field.Invalid(p.Child("duration"), w.Duration, "windows[].duration must be a positive duration, such as 8h"))
	}
	if w.TimeZone != "" {
		if !timeZonePattern.MatchString(w.TimeZone) {
			errs = append(errs, field.Invalid(p.Child("timezone"), w.TimeZone, "must be an IANA time zone name, such as Europe/Paris"))
		} else if _, err := time.LoadLocation(w.TimeZone); err != nil {
			errs = append(errs, field.Invalid(p.Child("timezone"), w.TimeZone, "unknown time zone: "+err.Error()))
		}
	}
	return errs
}

// Validate checks the MetricTemplate as the API server would, and that its
// query parses as a template over the functions a check provides.
func (t *MetricTemplate) Validate() field.ErrorList {
	var errs field.ErrorList
	if t.Name == "" && t.GenerateName == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
	}
	p := field.NewPath("spec")
	pp := p.Child("provider")
	if t.Spec.Provider.Type == "" {
		errs = append(errs, field.Required(pp.Child("type"), ""))
	} else {
		errs = append(errs, oneOf(pp.Child("type"), string(t.Spec.Provider.Type), metricProviders)...)
	}
	if a := t.Spec.Provider.Address; a != "" && !isHTTPURL(a) {
		errs = append(errs, field.Invalid(pp.Child("address"), a, "spec.provider.address must be an absolute http or https URL"))
	}
	if r := t.Spec.Provider.SecretRef; r != nil && r.Name == "" {
		errs = append(errs, field.Required(pp.Child("secretRef", "name"), ""))
	}
	if t.Spec.Query == "" {
		errs = append(errs, field.Required(p.Child("query"), ""))
	} else if err := ParseQueryTemplate(t.Spec.Query); err != nil {
		errs = append(errs, field.Invalid(p.Child("query"), t.Spec.Query, err.Error()))
	}
	return errs
}

// QueryTemplateFuncs are the functions a MetricTemplate query may call:
// name, namespace, target, service, ingress, route and interval return
// strings, variables returns the check's templateVariables.
var QueryTemplateFuncs = []string{"name", "namespace", "target", "service", "ingress", "route", "interval", "variables"}

// ParseQueryTemplate reports whether query parses as a MetricTemplate query:
// a text/template over QueryTemplateFuncs.
func ParseQueryTemplate(query string) error {
	funcs := template.FuncMap{}
	for _, name := range QueryTemplateFuncs {
		if name == "variables" {
			funcs[name] = func() map[string]string { return nil }
			continue
		}
		funcs[name] = func() string { return "" }
	}
	if _, err := template.New("query").Funcs(funcs).Option("missingkey=error").Parse(query); err != nil {
		return fmt.Errorf("query is not a valid template: %w", err)
	}
	return nil
}

// Validate checks the AlertProvider as the API server would.
func (a *AlertProvider) Validate() field.ErrorList {
	var errs field.ErrorList
	if a.Name == "" && a.GenerateName == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
	}
	p := field.NewPath("spec")
	s := &a.Spec
	if s.Type == "" {
		errs = append(errs, field.Required(p.Child("type"), ""))
	} else {
		errs = append(errs, oneOf(p.Child("type"), string(s.Type), alertProviders)...)
	}
	if s.Address == "" && s.SecretRef == nil {
		errs = append(errs, field.Required(p, "alert provider needs spec.address or spec.secretRef"))
	}
	if s.Address != "" && !isHTTPURL(s.Address) {
		errs = append(errs, field.Invalid(p.Child("address"), s.Address, "spec.address must be an absolute http or https URL"))
	}
	if s.Proxy != "" && !isHTTPURL(s.Proxy) {
		errs = append(errs, field.Invalid(p.Child("proxy"), s.Proxy, "spec.proxy must be an absolute http or https URL"))
	}
	if r := s.SecretRef; r != nil && r.Name == "" {
		errs = append(errs, field.Required(p.Child("secretRef", "name"), ""))
	}
	return errs
}

// validServiceName reports whether name, and name with "-primary" or
// "-canary", are valid Service names.
func validServiceName(name string) bool {
	return len(name) <= 55 && dnsLabelPattern.MatchString(name)
}

// parseDuration parses s as the schema does: an unsigned Go duration with
// units.
func parseDuration(s string) (time.Duration, bool) {
	if !durationPattern.MatchString(s) {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func oneOf(p *field.Path, v string, allowed []string) field.ErrorList {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(p, v, allowed)}
}

func percent(p *field.Path, v, lo int) field.ErrorList {
	if v < lo || v > 100 {
		return field.ErrorList{field.Invalid(p, v, fmt.Sprintf("must be between %d and 100", lo))}
	}
	return nil
}

func maxItems(p *field.Path, n, limit int) field.ErrorList {
	if n > limit {
		return field.ErrorList{field.TooMany(p, n, limit)}
	}
	return nil
}
