package v1beta1

import (
	"reflect"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// minimal is the smallest valid canary release.
func minimal() *Canary {
	return &Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "prod"},
		Spec: CanarySpec{
			TargetRef: LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "api"},
			Service:   CanaryService{Port: 8080},
			Analysis:  &CanaryAnalysis{Interval: "30s", StepWeight: 10},
		},
	}
}

func TestSetDefaults(t *testing.T) {
	c := minimal()
	c.Spec.Service.Rewrite = &HTTPRewrite{URI: "/"}
	c.Spec.Service.GatewayRefs = []ParentReference{{Name: "gw"}}
	c.Spec.Service.Mirror = []HTTPRequestMirrorFilter{{BackendRef: BackendObjectReference{Name: "shadow", Port: ptrTo[int32](80)}}}
	c.Spec.Analysis.Metrics = []CanaryMetric{{Name: MetricRequestSuccessRate}, {Name: "x", Interval: "30s"}}
	c.Spec.Analysis.Webhooks = []CanaryWebhook{{Name: "load", URL: "http://t/"}, {Name: "gate", Type: ConfirmPromotionHook, URL: "http://t/", Timeout: "1m"}}
	c.Spec.Analysis.Alerts = []CanaryAlert{{Name: "a", ProviderRef: CrossNamespaceObjectReference{Name: "slack"}}}
	c.Spec.Analysis.SessionAffinity = &SessionAffinity{CookieName: "c"}
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatal(errorsString(errs))
	}

	SetDefaults(c)
	a := c.Spec.Analysis
	for _, check := range []struct {
		name      string
		got, want any
	}{
		{"progressDeadlineSeconds", *c.Spec.ProgressDeadlineSeconds, int32(600)},
		{"portName", c.Spec.Service.PortName, "http"},
		{"targetPort", *c.Spec.Service.TargetPort, intstr.FromInt32(8080)},
		{"rewrite.type", c.Spec.Service.Rewrite.Type, RewriteFullPath},
		{"gatewayRefs.group", *c.Spec.Service.GatewayRefs[0].Group, "gateway.networking.k8s.io"},
		{"gatewayRefs.kind", *c.Spec.Service.GatewayRefs[0].Kind, "Gateway"},
		{"mirror.group", *c.Spec.Service.Mirror[0].BackendRef.Group, ""},
		{"mirror.kind", *c.Spec.Service.Mirror[0].BackendRef.Kind, "Service"},
		{"interval", a.Interval, "30s"},
		{"threshold", a.Threshold, 1},
		{"maxWeight", a.MaxWeight, 100},
		{"primaryReadyThreshold", *a.PrimaryReadyThreshold, 100},
		{"canaryReadyThreshold", *a.CanaryReadyThreshold, 100},
		{"noDataPolicy", a.NoDataPolicy, NoDataHold},
		{"windowPolicy", a.WindowPolicy, WindowFinish},
		{"metrics[0].interval", a.Metrics[0].Interval, "1m"},
		{"metrics[1].interval", a.Metrics[1].Interval, "30s"},
		{"webhooks[0].type", a.Webhooks[0].Type, RolloutHook},
		{"webhooks[0].timeout", a.Webhooks[0].Timeout, "10s"},
		{"webhooks[1].type", a.Webhooks[1].Type, ConfirmPromotionHook},
		{"webhooks[1].timeout", a.Webhooks[1].Timeout, "1m"},
		{"alerts[0].severity", a.Alerts[0].Severity, SeverityInfo},
		{"sessionAffinity.maxAge", a.SessionAffinity.MaxAge, 86400},
		{"stepWeight", a.StepWeight, 10},
		{"stepWeights", a.StepWeights, []int(nil)},
		{"iterations", a.Iterations, 0},
	} {
		if !reflect.DeepEqual(check.got, check.want) {
			t.Errorf("%s = %#v, want %#v", check.name, check.got, check.want)
		}
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatalf("invalid after SetDefaults: %s", errorsString(errs))
	}

	again := c.DeepCopy()
	SetDefaults(again)
	if !reflect.DeepEqual(c, again) {
		t.Error("SetDefaults is not idempotent")
	}

	// Written values are kept; an empty interval becomes Flagger's 60s.
	c = minimal()
	c.Spec.ProgressDeadlineSeconds = ptrTo[int32](60)
	c.Spec.Service.TargetPort = ptrTo(intstr.FromString("web"))
	c.Spec.Analysis.Interval = ""
	c.Spec.Analysis.MaxWeight = 50
	SetDefaults(c)
	if *c.Spec.ProgressDeadlineSeconds != 60 || c.Spec.Service.TargetPort.StrVal != "web" || c.Spec.Analysis.MaxWeight != 50 || c.GetAnalysisInterval() != time.Minute {
		t.Errorf("SetDefaults overwrote: %+v", c.Spec)
	}

	// No maxWeight with a ladder of weights: the last step is the maximum.
	c = minimal()
	c.Spec.Analysis.StepWeight = 0
	c.Spec.Analysis.StepWeights = []int{5, 20, 60}
	SetDefaults(c)
	if c.Spec.Analysis.MaxWeight != 0 || c.GetMaxWeight() != 60 {
		t.Errorf("maxWeight %d, GetMaxWeight %d", c.Spec.Analysis.MaxWeight, c.GetMaxWeight())
	}

	// A canary without analysis keeps none.
	c = minimal()
	c.Spec.Analysis = nil
	SetDefaults(c)
	if c.Spec.Analysis != nil || !c.SkipAnalysis() {
		t.Error("SetDefaults invented an analysis")
	}
}

func TestGetStepWeights(t *testing.T) {
	for _, tc := range []struct {
		name     string
		analysis *CanaryAnalysis
		want     []int
		max      int
		strategy Strategy
	}{
		{"no analysis", nil, nil, 100, StrategyCanary},
		{"step 20 to 100", &CanaryAnalysis{StepWeight: 20}, []int{20, 40, 60, 80, 100}, 100, StrategyCanary},
		{"step 5 to 50", &CanaryAnalysis{StepWeight: 5, MaxWeight: 50}, []int{5, 10, 15, 20, 25, 30, 35, 40, 45, 50}, 50, StrategyCanary},
		{"last step cut at maxWeight", &CanaryAnalysis{StepWeight: 20, MaxWeight: 50}, []int{20, 40, 50}, 50, StrategyCanary},
		{"step 30 to 100", &CanaryAnalysis{StepWeight: 30}, []int{30, 60, 90, 100}, 100, StrategyCanary},
		{"one step", &CanaryAnalysis{StepWeight: 100}, []int{100}, 100, StrategyCanary},
		{"ladder", &CanaryAnalysis{StepWeights: []int{1, 2, 10, 80}}, []int{1, 2, 10, 80}, 80, StrategyCanary},
		{"ladder ignores maxWeight", &CanaryAnalysis{StepWeights: []int{10, 50}, MaxWeight: 20}, []int{10, 50}, 50, StrategyCanary},
		{"blue/green", &CanaryAnalysis{Iterations: 10}, nil, 100, StrategyBlueGreen},
		{"A/B", &CanaryAnalysis{Iterations: 10, Match: []HTTPMatchRequest{{Headers: map[string]StringMatch{"x": {Exact: "1"}}}}}, nil, 100, StrategyABTesting},
		{"match without iterations is a canary", &CanaryAnalysis{StepWeight: 50, Match: []HTTPMatchRequest{{}}}, []int{50, 100}, 100, StrategyCanary},
		{"nothing set", &CanaryAnalysis{}, nil, 100, StrategyCanary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := minimal()
			c.Spec.Analysis = tc.analysis
			if got := c.GetStepWeights(); !slices.Equal(got, tc.want) {
				t.Errorf("GetStepWeights = %v, want %v", got, tc.want)
			}
			if got := c.GetMaxWeight(); got != tc.max {
				t.Errorf("GetMaxWeight = %d, want %d", got, tc.max)
			}
			if got := c.GetStrategy(); got != tc.strategy {
				t.Errorf("GetStrategy = %s, want %s", got, tc.strategy)
			}
		})
	}
}

func TestGetAnalysisInterval(t *testing.T) {
	for _, tc := range []struct {
		interval string
		want     time.Duration
	}{
		{"", time.Minute},
		{"30s", 30 * time.Second},
		{"1m30s", 90 * time.Second},
		{"2h", 2 * time.Hour},
		{"5s", 10 * time.Second},
		{"soon", time.Minute},
	} {
		c := minimal()
		c.Spec.Analysis.Interval = tc.interval
		if got := c.GetAnalysisInterval(); got != tc.want {
			t.Errorf("interval %q: got %v, want %v", tc.interval, got, tc.want)
		}
	}
	c := minimal()
	c.Spec.Analysis = nil
	if c.GetAnalysisInterval() != time.Minute || c.GetAnalysisThreshold() != 1 || c.GetPrimaryReadyThreshold() != 100 || c.GetNoDataPolicy() != NoDataHold || c.GetWindowPolicy() != WindowFinish {
		t.Error("getters without analysis do not return the defaults")
	}
}

func TestGetters(t *testing.T) {
	c := minimal()
	c.Spec.Service.Name = "web"
	if a, p, cn := c.GetServiceNames(); a != "web" || p != "web-primary" || cn != "web-canary" {
		t.Errorf("service names %s %s %s", a, p, cn)
	}
	if c.GetPrimaryName() != "api-primary" {
		t.Errorf("primary %s", c.GetPrimaryName())
	}
	if c.GetProgressDeadline() != 600*time.Second {
		t.Errorf("deadline %v", c.GetProgressDeadline())
	}
	c.Spec.Analysis.Threshold = 3
	c.Spec.Analysis.CanaryReadyThreshold = ptrTo(50)
	c.Spec.Analysis.NoDataPolicy = NoDataFail
	c.Spec.Analysis.WindowPolicy = WindowHold
	if c.GetAnalysisThreshold() != 3 || c.GetCanaryReadyThreshold() != 50 || c.GetNoDataPolicy() != NoDataFail || c.GetWindowPolicy() != WindowHold {
		t.Error("getters do not return what is set")
	}
	if c.SkipAnalysis() {
		t.Error("SkipAnalysis with an analysis")
	}
	c.Spec.SkipAnalysis = true
	if !c.SkipAnalysis() {
		t.Error("skipAnalysis ignored")
	}
	if !(LocalObjectReference{APIVersion: "serving.knative.dev/v1", Kind: "Service"}).IsKnativeService() || (LocalObjectReference{APIVersion: "v1", Kind: "Service"}).IsKnativeService() {
		t.Error("IsKnativeService")
	}

	f := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		name   string
		metric CanaryMetric
		lo, hi *float64
	}{
		{"range", CanaryMetric{Name: "x", ThresholdRange: &CanaryThresholdRange{Min: NewNumber(1), Max: NewNumber(2)}}, f(1), f(2)},
		{"range wins over threshold", CanaryMetric{Name: "x", Threshold: 9, ThresholdRange: &CanaryThresholdRange{Max: NewNumber(2)}}, nil, f(2)},
		{"success rate threshold is a minimum", CanaryMetric{Name: MetricRequestSuccessRate, Threshold: 99}, f(99), nil},
		{"other threshold is a maximum", CanaryMetric{Name: MetricRequestDuration, Threshold: 500}, nil, f(500)},
		{"no threshold on a template is a maximum of 0", CanaryMetric{Name: "errors", TemplateRef: &CrossNamespaceObjectReference{Name: "e"}}, nil, f(0)},
	} {
		lo, hi := tc.metric.GetThresholdRange()
		if !reflect.DeepEqual(lo, tc.lo) || !reflect.DeepEqual(hi, tc.hi) {
			t.Errorf("%s: range %v..%v, want %v..%v", tc.name, deref(lo), deref(hi), deref(tc.lo), deref(tc.hi))
		}
	}
	if !(&CanaryMetric{Name: "request-duration"}).IsBuiltin() || (&CanaryMetric{Name: "x", Query: "up"}).IsBuiltin() {
		t.Error("IsBuiltin")
	}

	for _, tc := range []struct {
		hook    CanaryWebhook
		typ     HookType
		timeout time.Duration
	}{
		{CanaryWebhook{}, RolloutHook, 10 * time.Second},
		{CanaryWebhook{Type: EventHook, Timeout: "2m"}, EventHook, 2 * time.Minute},
		{CanaryWebhook{Timeout: "1"}, RolloutHook, 10 * time.Second},
	} {
		if tc.hook.GetType() != tc.typ || tc.hook.GetTimeout() != tc.timeout {
			t.Errorf("%+v: type %s timeout %v", tc.hook, tc.hook.GetType(), tc.hook.GetTimeout())
		}
	}
	if (&CanaryAlert{}).GetSeverity() != SeverityInfo || (&SessionAffinity{}).GetMaxAge() != 86400 || (&HTTPRewrite{Type: "odd"}).GetType() != RewriteFullPath {
		t.Error("defaults of alert, session affinity or rewrite")
	}
	if (&AlertProviderSpec{}).GetChannel() != "general" || (&AlertProviderSpec{Username: "bot"}).GetUsername() != "bot" {
		t.Error("alert provider defaults")
	}

	w := AnalysisWindow{Schedule: "0 9 * * 1-5", Duration: "8h"}
	if loc, err := w.GetLocation(); err != nil || loc != time.UTC || w.GetDuration() != 8*time.Hour {
		t.Errorf("window: %v %v %v", loc, err, w.GetDuration())
	}
	w.TimeZone = "Europe/Paris"
	if loc, err := w.GetLocation(); err != nil || loc.String() != "Europe/Paris" {
		t.Errorf("window zone: %v %v", loc, err)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
