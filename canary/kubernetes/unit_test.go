package kubernetes

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/routing"
)

// These tests need no API server; the envtest ones are in controller_test.go.

func template(image string, annotations map[string]string) *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "podinfo"}, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
}

func TestRevisionOf(t *testing.T) {
	base := revisionOf(template("podinfo:1", nil), map[string]string{"configmap/a": "1111", "secret/b": "2222"})
	if len(base) != 10 {
		t.Fatalf("revision %q: want 10 hex digits", base)
	}
	for _, tc := range []struct {
		name    string
		tpl     *corev1.PodTemplateSpec
		configs map[string]string
		same    bool
	}{
		{"identical", template("podinfo:1", nil), map[string]string{"secret/b": "2222", "configmap/a": "1111"}, true},
		{"Sluice's annotation left out", template("podinfo:1", map[string]string{RevisionAnnotation: "abc"}), map[string]string{"configmap/a": "1111", "secret/b": "2222"}, true},
		{"other annotation counts", template("podinfo:1", map[string]string{"x": "y"}), map[string]string{"configmap/a": "1111", "secret/b": "2222"}, false},
		{"image", template("podinfo:2", nil), map[string]string{"configmap/a": "1111", "secret/b": "2222"}, false},
		{"config data", template("podinfo:1", nil), map[string]string{"configmap/a": "1112", "secret/b": "2222"}, false},
		{"config gone", template("podinfo:1", nil), map[string]string{"configmap/a": "1111"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := revisionOf(tc.tpl, tc.configs)
			if (got == base) != tc.same {
				t.Errorf("revision %s vs base %s: same = %v, want %v", got, base, got == base, tc.same)
			}
		})
	}
	// Computing a revision does not change the template.
	tpl := template("podinfo:1", map[string]string{RevisionAnnotation: "abc"})
	revisionOf(tpl, nil)
	if tpl.Annotations[RevisionAnnotation] != "abc" {
		t.Error("revisionOf modified its template")
	}
}

func TestPodConfigRefs(t *testing.T) {
	spec := &corev1.PodSpec{
		Volumes: []corev1.Volume{
			{Name: "a", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm-vol"}}}},
			{Name: "b", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec-vol"}}},
			{Name: "c", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cm-proj"}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "sec-proj"}}},
			}}}},
		},
		InitContainers: []corev1.Container{{Name: "init", EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "sec-init"}}}}}},
		Containers: []corev1.Container{{
			Name:    "app",
			EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm-vol"}}}},
			Env: []corev1.EnvVar{
				{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm-env"}, Key: "k"}}},
				{Name: "B", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec-env"}, Key: "k"}}},
				{Name: "C", Value: "plain"},
			},
		}},
	}
	var got []string
	for _, r := range podConfigRefs(spec) {
		got = append(got, r.key())
	}
	want := []string{"configmap/cm-vol", "secret/sec-vol", "configmap/cm-proj", "secret/sec-proj", "secret/sec-init", "configmap/cm-env", "secret/sec-env"}
	if !slices.Equal(got, want) {
		t.Errorf("refs = %v, want %v", got, want)
	}

	// The primary's copy refers to the copies of the tracked configs only.
	tracked := trackedConfigs{"configmap/cm-vol": {}, "secret/sec-env": {}}
	rewriteConfigRefs(spec, tracked)
	got = got[:0]
	for _, r := range podConfigRefs(spec) {
		got = append(got, r.key())
	}
	want = []string{"configmap/cm-vol-primary", "secret/sec-vol", "configmap/cm-proj", "secret/sec-proj", "secret/sec-init", "configmap/cm-env", "secret/sec-env-primary"}
	if !slices.Equal(got, want) {
		t.Errorf("rewritten refs = %v, want %v", got, want)
	}
}

func TestDeploymentReady(t *testing.T) {
	dep := func(gen, observed int64, replicas int32, st appsv1.DeploymentStatus) *appsv1.Deployment {
		st.ObservedGeneration = observed
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Generation: gen},
			Spec:       appsv1.DeploymentSpec{Replicas: &replicas},
			Status:     st,
		}
	}
	for _, tc := range []struct {
		name      string
		d         *appsv1.Deployment
		threshold int
		ready     bool
		msg       string
	}{
		{"rolled out", dep(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), 100, true, ""},
		{"scaled to zero", dep(3, 3, 0, appsv1.DeploymentStatus{}), 100, false, "scaled to zero"},
		{"generation not observed", dep(3, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), 100, false, "generation 3"},
		{"updating", dep(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 3}), 100, false, "1 of 3 replicas updated"},
		{"old replicas left", dep(2, 2, 3, appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 3, AvailableReplicas: 3}), 100, false, "1 old replicas"},
		{"not available", dep(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2}), 100, false, "2/3 replicas available"},
		{"enough available for the threshold", dep(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2}), 50, true, ""},
		{"threshold rounds up", dep(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 1}), 50, false, "1/3"},
		{"deadline exceeded", dep(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3, Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded", Message: "ReplicaSet has timed out"},
		}}), 100, false, "progress deadline"},
		{"failure named", dep(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 0, Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentReplicaFailure, Status: corev1.ConditionTrue, Message: "quota exceeded"},
		}}), 100, false, "quota exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ready, msg := deploymentReady(tc.d, tc.threshold)
			if ready != tc.ready || !strings.Contains(msg, tc.msg) {
				t.Errorf("ready = %v %q, want %v with %q", ready, msg, tc.ready, tc.msg)
			}
		})
	}
}

func TestSelectorLabelOf(t *testing.T) {
	d := func(labels map[string]string) *appsv1.Deployment {
		return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}},
		}}
	}
	for _, tc := range []struct {
		labels map[string]string
		want   podLabel
		err    bool
	}{
		{map[string]string{"app": "a", "name": "n"}, podLabel{"app", "a"}, false},
		{map[string]string{"name": "n", "tier": "web"}, podLabel{"name", "n"}, false},
		{map[string]string{"app.kubernetes.io/name": "k"}, podLabel{"app.kubernetes.io/name", "k"}, false},
		{map[string]string{"tier": "web"}, podLabel{}, true},
	} {
		got, err := selectorLabelOf(d(tc.labels))
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("selectorLabelOf(%v) = %v, %v; want %v, error %v", tc.labels, got, err, tc.want, tc.err)
		}
	}
}

func TestPrimaryTemplate(t *testing.T) {
	target := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      map[string]string{"app": "podinfo", "tier": "web"},
			Annotations: map[string]string{RevisionAnnotation: "old", "prometheus.io/scrape": "true"},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "podinfo:2"}},
			Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "podinfo"}},
					TopologyKey:   "kubernetes.io/hostname",
				}},
			}},
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
				LabelSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"podinfo", "other"}},
				}},
			}},
		},
	}}}
	tpl := primaryTemplate(target, podLabel{"app", "podinfo"}, nil, "rev1")
	if !maps.Equal(tpl.Labels, map[string]string{"app": "podinfo-primary", "tier": "web"}) {
		t.Errorf("labels = %v", tpl.Labels)
	}
	if !maps.Equal(tpl.Annotations, map[string]string{RevisionAnnotation: "rev1", "prometheus.io/scrape": "true"}) {
		t.Errorf("annotations = %v", tpl.Annotations)
	}
	if got := tpl.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels["app"]; got != "podinfo-primary" {
		t.Errorf("anti-affinity selects app=%s, want podinfo-primary", got)
	}
	if got := tpl.Spec.TopologySpreadConstraints[0].LabelSelector.MatchExpressions[0].Values; !slices.Equal(got, []string{"podinfo-primary", "other"}) {
		t.Errorf("topology spread values = %v", got)
	}
	if target.Spec.Template.Labels["app"] != "podinfo" || target.Spec.Template.Annotations[RevisionAnnotation] != "old" {
		t.Error("primaryTemplate modified the target")
	}
}

func testCanary() *v1beta1.Canary {
	c := &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: "test", Name: "podinfo"},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "podinfo"},
			Service:   v1beta1.CanaryService{Port: 9898, Timeout: "30s"},
			Analysis: &v1beta1.CanaryAnalysis{
				Interval: "1m", Iterations: 5,
				Match: []v1beta1.HTTPMatchRequest{{Headers: map[string]v1beta1.StringMatch{"x-canary": {Exact: "insider"}}}},
			},
		},
	}
	v1beta1.SetDefaults(c)
	return c
}

func TestDesiredRoute(t *testing.T) {
	c := testCanary()
	weights := func(spec gatewayv1.HTTPRouteSpec) []routing.RuleWeights {
		return routing.BackendWeights(&gatewayv1.HTTPRoute{Spec: spec}, "podinfo-primary", "podinfo-canary")
	}
	observe := func(spec gatewayv1.HTTPRouteSpec) canary.Route {
		t.Helper()
		obs, err := (&Router{}).observe(c, &gatewayv1.HTTPRoute{Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		return obs
	}

	spec, err := desiredRoute(c, canary.SetWeights{Primary: 70, Canary: 30})
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.ParentRefs) != 1 || *spec.ParentRefs[0].Kind != "Service" || *spec.ParentRefs[0].Group != "" ||
		spec.ParentRefs[0].Name != "podinfo" || *spec.ParentRefs[0].Port != 9898 {
		t.Errorf("parentRefs = %+v", spec.ParentRefs)
	}
	if len(spec.Rules) != 1 || *spec.Rules[0].Timeouts.Request != "30s" || *spec.Rules[0].Matches[0].Path.Value != "/" {
		t.Fatalf("rules = %+v", spec.Rules)
	}
	if got := weights(spec); len(got) != 1 || got[0].Weights["podinfo-primary"] != 70 || got[0].Weights["podinfo-canary"] != 30 {
		t.Errorf("weights = %+v, want 70/30", got)
	}
	if obs := observe(spec); obs.PrimaryWeight != 70 || obs.CanaryWeight != 30 || obs.Mirrored || obs.Matched {
		t.Errorf("observed as %+v", obs)
	}

	c.Spec.Analysis.MirrorWeight = 40
	spec, _ = desiredRoute(c, canary.SetWeights{Primary: 100, Mirror: true})
	if f := spec.Rules[0].Filters; len(f) != 1 || f[0].Type != gatewayv1.HTTPRouteFilterRequestMirror ||
		f[0].RequestMirror.BackendRef.Name != "podinfo-canary" || *f[0].RequestMirror.Percent != 40 {
		t.Errorf("mirror filters = %+v", f)
	}
	if obs := observe(spec); !obs.Mirrored || obs.Matched || obs.PrimaryWeight != 100 {
		t.Errorf("mirrored route observed as %+v", obs)
	}

	spec, _ = desiredRoute(c, canary.SetWeights{Canary: 100, Match: true})
	if len(spec.Rules) != 2 || spec.Rules[0].Name == nil || *spec.Rules[0].Name != routing.ABRuleName {
		t.Fatalf("A/B rules = %+v, want the A/B rule, then the split rule", spec.Rules)
	}
	h := spec.Rules[0].Matches[0].Headers
	if len(h) != 1 || h[0].Name != "x-canary" || h[0].Value != "insider" || *h[0].Type != gatewayv1.HeaderMatchExact {
		t.Errorf("A/B header match = %+v", h)
	}
	if *spec.Rules[0].Timeouts.Request != "30s" {
		t.Errorf("the A/B rule lost the service's timeout: %+v", spec.Rules[0].Timeouts)
	}
	if got := weights(spec); len(got) != 2 || got[0].Weights["podinfo-canary"] != 100 || got[1].Weights["podinfo-primary"] != 100 || got[1].Weights["podinfo-canary"] != 0 {
		t.Errorf("A/B weights = %+v", got)
	}
	if obs := observe(spec); !obs.Matched || obs.CanaryWeight != 100 || obs.PrimaryWeight != 0 {
		t.Errorf("A/B route observed as %+v", obs)
	}

	// Service matches that are not exact become regular expressions; what
	// a Gateway API route cannot match is an error naming the field.
	ms, err := routeMatches([]v1beta1.HTTPMatchRequest{{
		URI:     &v1beta1.StringMatch{Suffix: ".json"},
		Method:  &v1beta1.StringMatch{Exact: "get"},
		Headers: map[string]v1beta1.StringMatch{"user-agent": {Prefix: "curl/"}},
	}, {
		Headers: map[string]v1beta1.StringMatch{"x-env": {Exact: "test"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if *ms[0].Path.Type != gatewayv1.PathMatchRegularExpression || *ms[0].Path.Value != `.*\.json` || *ms[0].Method != "GET" ||
		*ms[0].Headers[0].Type != gatewayv1.HeaderMatchRegularExpression {
		t.Errorf("matches = %+v", ms[0])
	}
	if *ms[1].Path.Value != "/" {
		t.Errorf("a match without uri = %+v, want path prefix /", ms[1])
	}
	_, err = routeMatches([]v1beta1.HTTPMatchRequest{{}, {Authority: &v1beta1.StringMatch{Exact: "a"}}})
	if err == nil || !strings.HasPrefix(err.Error(), "[1].authority") {
		t.Errorf("an authority match: %v, want an error naming [1].authority", err)
	}

	// The spec hash changes with the spec only.
	a, _ := desiredRoute(c, canary.SetWeights{Primary: 100})
	b, _ := desiredRoute(c, canary.SetWeights{Primary: 100})
	if specHash(&a) != specHash(&b) {
		t.Error("equal specs hash differently")
	}
	c2 := c.DeepCopy()
	c2.Spec.Service.Timeout = "10s"
	b, _ = desiredRoute(c2, canary.SetWeights{Primary: 100})
	if specHash(&a) == specHash(&b) {
		t.Error("a changed timeout did not change the hash")
	}
}

func TestAccepted(t *testing.T) {
	group, kind, port := gatewayv1.Group(""), gatewayv1.Kind("Service"), gatewayv1.PortNumber(9898)
	parent := gatewayv1.ParentReference{Group: &group, Kind: &kind, Name: "podinfo", Port: &port}
	route := func(gen int64, parents ...gatewayv1.RouteParentStatus) *gatewayv1.HTTPRoute {
		r := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "test", Generation: gen}}
		r.Spec.ParentRefs = []gatewayv1.ParentReference{parent}
		r.Status.Parents = parents
		return r
	}
	status := func(controller string, cond metav1.ConditionStatus, gen int64) gatewayv1.RouteParentStatus {
		return gatewayv1.RouteParentStatus{
			ParentRef:      parent,
			ControllerName: gatewayv1.GatewayController(controller),
			Conditions:     []metav1.Condition{{Type: "Accepted", Status: cond, ObservedGeneration: gen}},
		}
	}
	other := parent
	other.Name = "other"
	for _, tc := range []struct {
		name  string
		route *gatewayv1.HTTPRoute
		want  bool
	}{
		{"no status", route(2), false},
		{"accepted", route(2, status(DefaultControllerName, metav1.ConditionTrue, 2)), true},
		{"older generation", route(3, status(DefaultControllerName, metav1.ConditionTrue, 2)), false},
		{"not accepted", route(2, status(DefaultControllerName, metav1.ConditionFalse, 2)), false},
		{"another controller", route(2, status("example.com/gw", metav1.ConditionTrue, 2)), false},
		{"another parent", route(2, gatewayv1.RouteParentStatus{
			ParentRef: other, ControllerName: DefaultControllerName,
			Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, ObservedGeneration: 2}},
		}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (&Router{}).accepted(tc.route); got != tc.want {
				t.Errorf("accepted = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestExposes(t *testing.T) {
	for _, tc := range []struct {
		cur  canary.Route
		w    canary.SetWeights
		want bool
	}{
		{canary.Route{PrimaryWeight: 100}, canary.SetWeights{Primary: 75, Canary: 25}, true},
		{canary.Route{PrimaryWeight: 50, CanaryWeight: 50}, canary.SetWeights{Primary: 100}, false},
		{canary.Route{PrimaryWeight: 100}, canary.SetWeights{Primary: 100, Mirror: true}, true},
		{canary.Route{PrimaryWeight: 100, Mirrored: true}, canary.SetWeights{Primary: 100}, false},
		{canary.Route{PrimaryWeight: 100}, canary.SetWeights{Canary: 100, Match: true}, true},
		{canary.Route{CanaryWeight: 100, Matched: true}, canary.SetWeights{Primary: 100}, false},
	} {
		if got := exposes(tc.cur, tc.w); got != tc.want {
			t.Errorf("exposes(%+v, %+v) = %v, want %v", tc.cur, tc.w, got, tc.want)
		}
	}
}

func TestManualAction(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        *canary.ManualAction
		err         bool
	}{
		{"none", nil, nil, false},
		{"promote", map[string]string{ActionAnnotation: "Promote", ActionAtAnnotation: "2026-05-01T12:00:00Z"}, &canary.ManualAction{Kind: canary.ManualPromote, RequestedAt: at}, false},
		{"no time", map[string]string{ActionAnnotation: "abort"}, nil, true},
		{"bad time", map[string]string{ActionAnnotation: "abort", ActionAtAnnotation: "yesterday"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &v1beta1.Canary{ObjectMeta: metav1.ObjectMeta{Annotations: tc.annotations}}
			got, err := manualAction(c)
			if (err != nil) != tc.err {
				t.Fatalf("error = %v, want error %v", err, tc.err)
			}
			if (got == nil) != (tc.want == nil) || got != nil && (got.Kind != tc.want.Kind || !got.RequestedAt.Equal(tc.want.RequestedAt)) {
				t.Errorf("action = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRetryAnnotations(t *testing.T) {
	s := &v1beta1.CanaryService{Retries: &v1beta1.HTTPRetry{Attempts: 3, PerTryTimeout: "2s", RetryOn: "gateway-error, connect-failure,503,500-504"}}
	want := map[string]string{
		routing.AnnotationRetryLimit:   "3",
		routing.AnnotationRetryTimeout: "2s",
		routing.AnnotationRetryHTTP:    "gateway-error,503,500-504",
	}
	if got := retryAnnotations(s); !maps.Equal(got, want) {
		t.Errorf("annotations = %v, want %v", got, want)
	}
	if got := retryAnnotations(&v1beta1.CanaryService{}); got != nil {
		t.Errorf("annotations without retries = %v", got)
	}
}

func TestClipNote(t *testing.T) {
	long := strings.Repeat("é", 1000)
	got := clipNote(long)
	if len(got) > maxEventNote || !strings.HasSuffix(got, "…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("clipNote cut %d bytes to %d: %q…", len(long), len(got), got[:20])
	}
	if clipNote("short") != "short" {
		t.Error("a short note was changed")
	}
}
