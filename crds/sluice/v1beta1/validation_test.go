package v1beta1

import (
	"encoding/json"
	"strings"
	"testing"
)

// invalidCase is a valid manifest made invalid by one change. Each case runs
// through Validate and, unless goOnly, through the generated schema; both
// must report an error at path, and Validate's must contain want.
type invalidCase struct {
	name string
	// file is the manifest under testdata/valid, doc its document.
	file string
	doc  int
	// change makes the object invalid.
	change func(t *testing.T, obj map[string]any)
	// path is the field the error names.
	path string
	// want is part of Validate's message.
	want string
	// schemaWant, when set, is part of the schema's message (CEL rules).
	schemaWant string
	// goOnly marks rules the schema cannot express.
	goOnly bool
}

const (
	gatewayCanary = "gatewayapi-canary.yaml"
	seedCanary    = "seed-linkerd-canary.yaml"
	abCanary      = "ab-testing.yaml"
	moreCanaries  = "blue-green.yaml"
	templates     = "templates-and-providers.yaml"
)

func setTo(path string, v any) func(*testing.T, map[string]any) {
	return func(t *testing.T, obj map[string]any) { set(t, obj, path, v) }
}

func deleted(path string) func(*testing.T, map[string]any) {
	return func(t *testing.T, obj map[string]any) { del(t, obj, path) }
}

func both(a, b func(*testing.T, map[string]any)) func(*testing.T, map[string]any) {
	return func(t *testing.T, obj map[string]any) { a(t, obj); b(t, obj) }
}

var invalidCases = []invalidCase{
	// The rules.
	{name: "no targetRef", file: seedCanary, change: deleted("spec.targetRef"),
		path: "spec.targetRef", want: "Required value"},
	{name: "targetRef without name", file: seedCanary, change: deleted("spec.targetRef.name"),
		path: "spec.targetRef.name", want: "Required value"},
	{name: "targetRef without kind", file: seedCanary, change: deleted("spec.targetRef.kind"),
		path: "spec.targetRef.kind", want: "Required value"},
	{name: "autoscalerRef without kind", file: gatewayCanary, change: deleted("spec.autoscalerRef.kind"),
		path: "spec.autoscalerRef.kind", want: "Required value"},
	{name: "targetRef to a Pod", file: seedCanary, change: setTo("spec.targetRef.kind", "Pod"),
		path: "spec.targetRef.kind", want: `Unsupported value: "Pod"`, schemaWant: "targetRef.kind must be Deployment, DaemonSet or Service"},
	{name: "interval not a duration", file: seedCanary, change: setTo("spec.analysis.interval", "30"),
		path: "spec.analysis.interval", want: "analysis.interval must be a duration of at least 10s", schemaWant: "analysis.interval must be a duration of at least 10s"},
	{name: "interval in words", file: seedCanary, change: setTo("spec.analysis.interval", "one minute"),
		path: "spec.analysis.interval", want: "analysis.interval must be a duration of at least 10s", schemaWant: "analysis.interval must be a duration of at least 10s"},
	{name: "interval negative", file: seedCanary, change: setTo("spec.analysis.interval", "-30s"),
		path: "spec.analysis.interval", want: "analysis.interval must be a duration of at least 10s", schemaWant: "analysis.interval must be a duration of at least 10s"},
	{name: "interval under 10s", file: seedCanary, change: setTo("spec.analysis.interval", "9s"),
		path: "spec.analysis.interval", want: "analysis.interval must be a duration of at least 10s", schemaWant: "analysis.interval must be a duration of at least 10s"},
	{name: "interval under 10s in ms", file: seedCanary, change: setTo("spec.analysis.interval", "9999ms"),
		path: "spec.analysis.interval", want: "analysis.interval must be a duration of at least 10s", schemaWant: "analysis.interval must be a duration of at least 10s"},
	{name: "no interval", file: seedCanary, change: deleted("spec.analysis.interval"),
		path: "spec.analysis.interval", want: "Required value"},
	{name: "stepWeight over maxWeight", file: seedCanary, change: setTo("spec.analysis.stepWeight", 60),
		path: "spec.analysis.stepWeight", want: "analysis.stepWeight must not be greater than analysis.maxWeight (50)", schemaWant: "analysis.stepWeight must not be greater than analysis.maxWeight"},
	{name: "no stepWeight, stepWeights or iterations", file: seedCanary, change: deleted("spec.analysis.stepWeight"),
		path: "spec.analysis", want: "analysis needs one of stepWeight or stepWeights (canary release) or iterations", schemaWant: "analysis needs one of stepWeight or stepWeights"},
	{name: "stepWeight and iterations", file: seedCanary, change: setTo("spec.analysis.iterations", 10),
		path: "spec.analysis", want: "exclude one another: set exactly one", schemaWant: "exclude one another: set exactly one"},
	{name: "stepWeight and stepWeights", file: seedCanary, change: setTo("spec.analysis.stepWeights", []int{10, 20}),
		path: "spec.analysis", want: "exclude one another", schemaWant: "exclude one another"},
	{name: "iterations and stepWeights", file: abCanary, change: setTo("spec.analysis.stepWeights", []int{10, 20}),
		path: "spec.analysis", want: "exclude one another", schemaWant: "exclude one another"},
	{name: "unknown webhook type", file: gatewayCanary, change: setTo("spec.analysis.webhooks[1].type", "during-rollout"),
		path: "spec.analysis.webhooks[1].type", want: `Unsupported value: "during-rollout"`},
	{name: "thresholdRange min over max", file: gatewayCanary, change: setTo("spec.analysis.metrics[0].thresholdRange.min", 2),
		path: "spec.analysis.metrics[0].thresholdRange.min", want: "thresholdRange.min must not be greater than thresholdRange.max (1)", schemaWant: "thresholdRange.min must not be greater than thresholdRange.max"},
	{name: "thresholdRange min over max, decimals", file: seedCanary, change: setTo("spec.analysis.metrics[0].thresholdRange.max", 98.5),
		path: "spec.analysis.metrics[0].thresholdRange.min", want: "thresholdRange.min must not be greater than thresholdRange.max (98.5)", schemaWant: "thresholdRange.min must not be greater than thresholdRange.max"},

	// Spec.
	{name: "unknown provider", file: seedCanary, change: setTo("spec.provider", "gatewayapi"),
		path: "spec.provider", want: `Unsupported value: "gatewayapi"`},
	{name: "zero progress deadline", file: seedCanary, change: setTo("spec.progressDeadlineSeconds", 0),
		path: "spec.progressDeadlineSeconds", want: "must be at least 1"},
	{name: "autoscaler kind", file: gatewayCanary, change: setTo("spec.autoscalerRef.kind", "VerticalPodAutoscaler"),
		path: "spec.autoscalerRef.kind", want: "Unsupported value", schemaWant: "autoscalerRef.kind must be HorizontalPodAutoscaler or ScaledObject"},
	{name: "primary scaler min over max", file: gatewayCanary, change: setTo("spec.autoscalerRef.primaryScalerReplicas.minReplicas", 6),
		path: "spec.autoscalerRef.primaryScalerReplicas.minReplicas", want: "must not be greater than maxReplicas (5)", schemaWant: "must not be greater than maxReplicas"},
	{name: "ingressRef kind", file: seedCanary, change: setTo("spec.ingressRef", LocalObjectReference{APIVersion: "v1", Kind: "Gateway", Name: "x"}),
		path: "spec.ingressRef.kind", want: "Unsupported value", schemaWant: "ingressRef.kind must be Ingress"},
	{name: "service name too long", file: gatewayCanary, change: setTo("spec.service.name", strings.Repeat("a", 56)),
		path: "spec.service.name", want: "service.name must be a DNS label", schemaWant: "service.name must be a DNS label"},
	{name: "service name with a dot", file: gatewayCanary, change: setTo("spec.service.name", "api.v2"),
		path: "spec.service.name", want: "service.name must be a DNS label", schemaWant: "service.name must be a DNS label"},
	{name: "target name unfit for a Service", file: seedCanary, change: setTo("spec.targetRef.name", "api.v2"),
		path: "spec.targetRef.name", want: "targetRef.name names the Services when service.name is unset", schemaWant: "targetRef.name names the Services when service.name is unset"},
	{name: "no service", file: seedCanary, change: deleted("spec.service"),
		path: "spec.service", want: "Required value"},
	{name: "no service port", file: gatewayCanary, change: deleted("spec.service.port"),
		path: "spec.service.port", want: "Required value"},
	{name: "service port out of range", file: seedCanary, change: setTo("spec.service.port", 70000),
		path: "spec.service.port", want: "must be between 1 and 65535"},
	{name: "target port zero", file: seedCanary, change: setTo("spec.service.targetPort", 0),
		path: "spec.service.targetPort", want: "service.targetPort must be a port number", schemaWant: "service.targetPort must be a port number"},
	{name: "target port name too long", file: seedCanary, change: setTo("spec.service.targetPort", "a-very-long-port-name"),
		path: "spec.service.targetPort", want: "service.targetPort must be a port number", schemaWant: "service.targetPort must be a port number"},
	{name: "traffic distribution", file: gatewayCanary, change: setTo("spec.service.trafficDistribution", "Random"),
		path: "spec.service.trafficDistribution", want: `Unsupported value: "Random"`},
	{name: "route timeout with decimals", file: gatewayCanary, change: setTo("spec.service.timeout", "1.5s"),
		path: "spec.service.timeout", want: "must be a Gateway API duration"},
	{name: "gatewayRef port", file: gatewayCanary, change: setTo("spec.service.gatewayRefs[0].port", 0),
		path: "spec.service.gatewayRefs[0].port", want: "must be between 1 and 65535"},
	{name: "mirror to a Service without port", file: moreCanaries, doc: 1, change: deleted("spec.service.mirror[0].backendRef.port"),
		path: "spec.service.mirror[0].backendRef.port", want: "backendRef.port is required for a Service backend", schemaWant: "backendRef.port is required for a Service backend"},
	{name: "rewrite type", file: gatewayCanary, change: setTo("spec.service.rewrite.type", "ReplacePrefix"),
		path: "spec.service.rewrite.type", want: `Unsupported value: "ReplacePrefix"`},
	{name: "string match with two kinds", file: gatewayCanary, change: setTo("spec.service.match[0].uri.exact", "/api"),
		path: "spec.service.match[0].uri", want: "only one of exact, prefix, suffix or regex", schemaWant: "only one of exact, prefix, suffix or regex"},
	{name: "header match with two kinds", file: abCanary, change: setTo("spec.analysis.match[0].headers.x-canary.exact", "insider"),
		path: "spec.analysis.match[0].headers[x-canary]", want: "only one of exact, prefix, suffix or regex", schemaWant: "only one of exact, prefix, suffix or regex"},
	{name: "header regex not RE2", file: abCanary, change: setTo("spec.analysis.match[0].headers.x-canary.regex", "(?=insider)"),
		path: "spec.analysis.match[0].headers[x-canary].regex", want: "not an RE2 regular expression", goOnly: true},

	// Analysis.
	{name: "negative threshold", file: seedCanary, change: setTo("spec.analysis.threshold", -1),
		path: "spec.analysis.threshold", want: "must not be negative"},
	{name: "negative iterations", file: abCanary, change: setTo("spec.analysis.iterations", -1),
		path: "spec.analysis.iterations", want: "must be at least 1"},
	{name: "maxWeight over 100", file: seedCanary, change: setTo("spec.analysis.maxWeight", 101),
		path: "spec.analysis.maxWeight", want: "must be between 0 and 100"},
	{name: "mirrorWeight over 100", file: moreCanaries, change: setTo("spec.analysis.mirrorWeight", 150),
		path: "spec.analysis.mirrorWeight", want: "must be between 0 and 100"},
	{name: "stepWeightPromotion over 100", file: gatewayCanary, change: setTo("spec.analysis.stepWeightPromotion", 101),
		path: "spec.analysis.stepWeightPromotion", want: "must be between 0 and 100"},
	{name: "ready threshold over 100", file: gatewayCanary, change: setTo("spec.analysis.canaryReadyThreshold", 101),
		path: "spec.analysis.canaryReadyThreshold", want: "must be between 0 and 100"},
	{name: "stepWeights decreasing", file: moreCanaries, doc: 1, change: setTo("spec.analysis.stepWeights", []int{10, 50, 25}),
		path: "spec.analysis.stepWeights", want: "analysis.stepWeights must be strictly increasing", schemaWant: "analysis.stepWeights must be strictly increasing"},
	{name: "stepWeights repeated", file: moreCanaries, doc: 1, change: setTo("spec.analysis.stepWeights", []int{10, 10, 20}),
		path: "spec.analysis.stepWeights", want: "analysis.stepWeights must be strictly increasing", schemaWant: "analysis.stepWeights must be strictly increasing"},
	{name: "stepWeights over 100", file: moreCanaries, doc: 1, change: setTo("spec.analysis.stepWeights", []int{10, 101}),
		path: "spec.analysis.stepWeights[1]", want: "must be between 1 and 100"},
	{name: "metric without name", file: seedCanary, change: deleted("spec.analysis.metrics[1].name"),
		path: "spec.analysis.metrics[1].name", want: "Required value"},
	{name: "metric interval", file: seedCanary, change: setTo("spec.analysis.metrics[1].interval", "1 minute"),
		path: "spec.analysis.metrics[1].interval", want: "metrics[].interval must be a positive duration", schemaWant: "metrics[].interval must be a positive duration"},
	{name: "template without name", file: gatewayCanary, change: deleted("spec.analysis.metrics[0].templateRef.name"),
		path: "spec.analysis.metrics[0].templateRef.name", want: "Required value"},
	{name: "alert severity", file: gatewayCanary, change: setTo("spec.analysis.alerts[0].severity", "critical"),
		path: "spec.analysis.alerts[0].severity", want: `Unsupported value: "critical"`},
	{name: "alert without provider", file: gatewayCanary, change: deleted("spec.analysis.alerts[1].providerRef.name"),
		path: "spec.analysis.alerts[1].providerRef.name", want: "Required value"},
	{name: "webhook without url", file: gatewayCanary, change: deleted("spec.analysis.webhooks[2].url"),
		path: "spec.analysis.webhooks[2].url", want: "Required value"},
	{name: "webhook url without scheme", file: gatewayCanary, change: setTo("spec.analysis.webhooks[2].url", "flagger-loadtester.test/gate/check"),
		path: "spec.analysis.webhooks[2].url", want: "webhooks[].url must be an absolute http or https URL", schemaWant: "webhooks[].url must be an absolute http or https URL"},
	{name: "webhook url not http", file: gatewayCanary, change: setTo("spec.analysis.webhooks[2].url", "ftp://loadtester/"),
		path: "spec.analysis.webhooks[2].url", want: "webhooks[].url must be an absolute http or https URL", schemaWant: "webhooks[].url must be an absolute http or https URL"},
	{name: "webhook timeout", file: gatewayCanary, change: setTo("spec.analysis.webhooks[0].timeout", "15"),
		path: "spec.analysis.webhooks[0].timeout", want: "webhooks[].timeout must be a positive duration", schemaWant: "webhooks[].timeout must be a positive duration"},
	{name: "webhook retries", file: gatewayCanary, change: setTo("spec.analysis.webhooks[4].retries", -1),
		path: "spec.analysis.webhooks[4].retries", want: "must not be negative"},
	{name: "same cookie names", file: gatewayCanary, change: setTo("spec.analysis.sessionAffinity.primaryCookieName", "flagger-cookie"),
		path: "spec.analysis.sessionAffinity.primaryCookieName", want: "must differ from sessionAffinity.cookieName", schemaWant: "must differ from sessionAffinity.cookieName"},
	{name: "no cookie name", file: gatewayCanary, change: deleted("spec.analysis.sessionAffinity.cookieName"),
		path: "spec.analysis.sessionAffinity.cookieName", want: "Required value"},
	{name: "sameSite", file: gatewayCanary, change: setTo("spec.analysis.sessionAffinity.sameSite", "Sometimes"),
		path: "spec.analysis.sessionAffinity.sameSite", want: `Unsupported value: "Sometimes"`},
	{name: "noDataPolicy", file: moreCanaries, doc: 2, change: setTo("spec.analysis.noDataPolicy", "ignore"),
		path: "spec.analysis.noDataPolicy", want: `Unsupported value: "ignore"`},
	{name: "windowPolicy", file: moreCanaries, doc: 2, change: setTo("spec.analysis.windowPolicy", "stop"),
		path: "spec.analysis.windowPolicy", want: `Unsupported value: "stop"`},
	{name: "window schedule in words", file: moreCanaries, doc: 2, change: setTo("spec.analysis.windows[0].schedule", "every weekday at nine"),
		path: "spec.analysis.windows[0].schedule", want: "windows[].schedule must be a cron expression", schemaWant: "windows[].schedule must be a cron expression"},
	{name: "window schedule of six fields", file: moreCanaries, doc: 2, change: setTo("spec.analysis.windows[0].schedule", "0 0 9 * * 1-5"),
		path: "spec.analysis.windows[0].schedule", want: "windows[].schedule must be a cron expression", schemaWant: "windows[].schedule must be a cron expression"},
	{name: "window schedule characters", file: moreCanaries, doc: 2, change: setTo("spec.analysis.windows[0].schedule", "0 9 * * mon;fri"),
		path: "spec.analysis.windows[0].schedule", want: `cron field "mon;fri"`, goOnly: true},
	{name: "window without duration", file: moreCanaries, doc: 2, change: deleted("spec.analysis.windows[0].duration"),
		path: "spec.analysis.windows[0].duration", want: "Required value"},
	{name: "window of zero length", file: moreCanaries, doc: 2, change: setTo("spec.analysis.windows[1].duration", "0s"),
		path: "spec.analysis.windows[1].duration", want: "windows[].duration must be a positive duration", schemaWant: "windows[].duration must be a positive duration"},
	{name: "window time zone unknown", file: moreCanaries, doc: 2, change: setTo("spec.analysis.windows[0].timezone", "Mars/Olympus_Mons"),
		path: "spec.analysis.windows[0].timezone", want: "unknown time zone", goOnly: true},
	{name: "window time zone malformed", file: moreCanaries, doc: 2, change: setTo("spec.analysis.windows[0].timezone", "Europe Paris"),
		path: "spec.analysis.windows[0].timezone", want: "must be an IANA time zone name"},

	// MetricTemplate.
	{name: "metric provider type", file: templates, change: setTo("spec.provider.type", "prom"),
		path: "spec.provider.type", want: `Unsupported value: "prom"`},
	{name: "metric provider without type", file: templates, change: deleted("spec.provider.type"),
		path: "spec.provider.type", want: "Required value"},
	{name: "metric provider address", file: templates, change: setTo("spec.provider.address", "prometheus:9090"),
		path: "spec.provider.address", want: "spec.provider.address must be an absolute http or https URL", schemaWant: "spec.provider.address must be an absolute http or https URL"},
	{name: "template without query", file: templates, change: deleted("spec.query"),
		path: "spec.query", want: "Required value"},
	{name: "template query does not parse", file: templates, doc: 1, change: setTo("spec.query", "rate(x{ns=\"{{ namespace }\"}[1m])"),
		path: "spec.query", want: "query is not a valid template", goOnly: true},
	{name: "template query calls an unknown function", file: templates, doc: 1, change: setTo("spec.query", "rate(x{ns=\"{{ canary }}\"}[1m])"),
		path: "spec.query", want: `function "canary" not defined`, goOnly: true},

	// AlertProvider.
	{name: "alert provider type", file: templates, doc: 3, change: setTo("spec.type", "pagerduty"),
		path: "spec.type", want: `Unsupported value: "pagerduty"`},
	{name: "alert provider without address or secret", file: templates, doc: 3, change: both(deleted("spec.address"), deleted("spec.proxy")),
		path: "spec", want: "alert provider needs spec.address or spec.secretRef", schemaWant: "alert provider needs spec.address or spec.secretRef"},
	{name: "alert provider address", file: templates, doc: 3, change: setTo("spec.address", "hooks.slack.com/services/x"),
		path: "spec.address", want: "spec.address must be an absolute http or https URL", schemaWant: "spec.address must be an absolute http or https URL"},
	{name: "alert provider proxy", file: templates, doc: 3, change: setTo("spec.proxy", "squid:3128"),
		path: "spec.proxy", want: "spec.proxy must be an absolute http or https URL", schemaWant: "spec.proxy must be an absolute http or https URL"},
	{name: "alert provider secret without name", file: templates, doc: 4, change: deleted("spec.secretRef.name"),
		path: "spec.secretRef.name", want: "Required value"},
}

// object returns the case's manifest with its change applied.
func (tc invalidCase) object(t *testing.T) (kind string, obj map[string]any) {
	t.Helper()
	docs := readDocs(t, "testdata/valid/"+tc.file)
	if tc.doc >= len(docs) {
		t.Fatalf("%s has no document %d", tc.file, tc.doc)
	}
	obj = toMap(t, docs[tc.doc].yaml)
	tc.change(t, obj)
	return docs[tc.doc].kind, obj
}

// TestValidate: Validate finds every invalid case, only there, and names
// the field.
func TestValidate(t *testing.T) {
	for _, tc := range invalidCases {
		t.Run(tc.name, func(t *testing.T) {
			_, obj := tc.object(t)
			b, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			v, err := decodeStrict(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			errs := v.Validate()
			if len(errs) == 0 {
				t.Fatalf("valid; want an error at %s", tc.path)
			}
			for _, e := range errs {
				if e.Field != tc.path {
					t.Errorf("error at another field: %v", e)
				}
			}
			if msg := errs.ToAggregate().Error(); !strings.Contains(msg, tc.want) || !strings.HasPrefix(msg, tc.path+": ") {
				t.Errorf("message %q, want it to start with %q and contain %q", msg, tc.path+": ", tc.want)
			}
		})
	}
}

// TestSchemaRejects: the generated schema (OpenAPI and CEL) rejects every
// invalid case a schema can express, at the same field.
func TestSchemaRejects(t *testing.T) {
	crds := loadCRDs(t)
	for _, tc := range invalidCases {
		t.Run(tc.name, func(t *testing.T) {
			kind, obj := tc.object(t)
			pruned, errs := crds[kind].admit(t, obj)
			if len(pruned) > 0 {
				t.Errorf("pruned %v", pruned)
			}
			if tc.goOnly {
				if len(errs) > 0 {
					t.Fatalf("a Go-only rule is in the schema after all (drop goOnly):%s", errorsString(errs))
				}
				return
			}
			if len(errs) == 0 {
				t.Fatalf("admitted; want an error at %s", tc.path)
			}
			found := false
			for _, e := range errs {
				switch {
				case e.Field == tc.path:
					found = true
					if tc.schemaWant != "" && !strings.Contains(e.Error(), tc.schemaWant) {
						t.Errorf("message %q, want it to contain %q", e.Error(), tc.schemaWant)
					}
				case !strings.HasPrefix(e.Field, tc.path):
					t.Errorf("error at another field: %v", e)
				}
			}
			if !found {
				t.Errorf("no error at %s:%s", tc.path, errorsString(errs))
			}
		})
	}
}
