package main

import (
	"bytes"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func testCanaries() []v1beta1.Canary {
	at := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	v := func(f float64) *v1beta1.Number { n := v1beta1.Number(f); return &n }
	return []v1beta1.Canary{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "default"},
			Status: v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, CanaryWeight: 20, FailedChecks: 1,
				LastTransitionTime: &at, ObservedRevision: "bbb", LastPromotedRevision: "aaa",
				Message: "request-success-rate 91.3% < min 99% (1/2 failed checks)",
				Checks: []v1beta1.CheckResult{
					{Name: "request-success-rate", Value: v(91.3), Min: v(99), Unit: "%", Verdict: v1beta1.VerdictFail},
					{Name: "request-duration", Value: v(12.5), Max: v(500), Unit: "ms", Verdict: v1beta1.VerdictPass},
				}},
		},
		{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "production"}},
	}
}

func TestRenderCanariesGolden(t *testing.T) {
	for _, tc := range []struct{ file, output string }{
		{"get_canaries.golden", ""},
		{"get_canaries_wide.golden", "wide"},
		{"get_canaries.json.golden", "json"},
		{"get_canaries.yaml.golden", "yaml"},
	} {
		var b bytes.Buffer
		if err := renderCanaries(&b, testCanaries(), tc.output, true); err != nil {
			t.Fatal(err)
		}
		golden(t, tc.file, b.Bytes())
	}
	var b bytes.Buffer
	if err := renderCanaries(&b, nil, "", true); err != nil {
		t.Fatal(err)
	}
	golden(t, "get_canaries_empty.golden", b.Bytes())
}

func TestStepLineGolden(t *testing.T) {
	var b bytes.Buffer
	for _, c := range testCanaries() {
		b.WriteString(stepLine(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), &canaryState{c: c}) + "\n")
	}
	golden(t, "status_steps.golden", b.Bytes())
}

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   v1beta1.CanaryStatus
		rev  string
		want int
	}{
		{"promoted current", v1beta1.CanaryStatus{Phase: v1beta1.PhaseSucceeded, LastPromotedRevision: "b", ObservedRevision: "b"}, "b", exitPromoted},
		{"promoted previous", v1beta1.CanaryStatus{Phase: v1beta1.PhaseSucceeded, LastPromotedRevision: "a", ObservedRevision: "a"}, "b", -1},
		{"failed current", v1beta1.CanaryStatus{Phase: v1beta1.PhaseFailed, LastPromotedRevision: "a", ObservedRevision: "b"}, "b", exitFailed},
		{"failed previous", v1beta1.CanaryStatus{Phase: v1beta1.PhaseFailed, LastPromotedRevision: "a", ObservedRevision: "b"}, "c", -1},
		{"progressing", v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, LastPromotedRevision: "a", ObservedRevision: "b"}, "b", -1},
	} {
		s := &canaryState{c: v1beta1.Canary{Status: tc.st}, revision: tc.rev}
		if got := s.verdict(); got != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestCanaryCommandsExitCodes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"status", "backend", "--wait", "--state-dir", dir}, exitUnreachable},
		{[]string{"status", "a/b/c", "--state-dir", dir}, exitUnreachable},
		{[]string{"promote", "backend", "--state-dir", dir}, exitUnreachable},
		{[]string{"get", "pods", "--state-dir", dir}, exitUnreachable},
		{[]string{"apply", "-f", dir + "/missing.yaml", "--state-dir", dir}, exitUnreachable},
	} {
		var out, errOut bytes.Buffer
		if got := run(tc.args, &out, &errOut); got != tc.want {
			t.Errorf("sluice %v: exit %d, want %d (%s)", tc.args, got, tc.want, errOut.String())
		}
	}
}
