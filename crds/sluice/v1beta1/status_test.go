package v1beta1

import "testing"

func TestCheckSummary(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check CheckResult
		want  string
	}{
		{"below min", CheckResult{Name: "request-success-rate", Value: NewNumber(91.3), Min: NewNumber(99), Unit: "%", Verdict: VerdictFail},
			"request-success-rate 91.3% < min 99%"},
		{"above max", CheckResult{Name: "request-duration", Value: NewNumber(612.4567), Max: NewNumber(500), Unit: "ms", Verdict: VerdictFail},
			"request-duration 612.46ms > max 500ms"},
		{"rounded", CheckResult{Name: "request-success-rate", Value: NewNumber(98.99999), Min: NewNumber(99.5), Unit: "%", Verdict: VerdictFail},
			"request-success-rate 99% < min 99.5%"},
		{"template metric without unit", CheckResult{Name: "error-rate", Value: NewNumber(0.75), Min: NewNumber(0), Max: NewNumber(0.5), Verdict: VerdictFail},
			"error-rate 0.75 > max 0.5"},
		{"pass", CheckResult{Name: "request-duration", Value: NewNumber(120), Max: NewNumber(500), Unit: "ms", Verdict: VerdictPass},
			"request-duration 120ms pass"},
		{"no data", CheckResult{Name: "request-success-rate", Min: NewNumber(99), Verdict: VerdictNoData},
			"request-success-rate no data"},
		{"error", CheckResult{Name: "latency", Verdict: VerdictError, Message: "prometheus: connection refused"},
			"latency error: prometheus: connection refused"},
		{"failed webhook", CheckResult{Name: "load-test", Verdict: VerdictFail, Message: "status 500"},
			"load-test fail: status 500"},
	} {
		if got := tc.check.Summary(); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestFailureMessage(t *testing.T) {
	check := CheckResult{Name: "request-success-rate", Value: NewNumber(91.3), Min: NewNumber(99), Unit: "%", Verdict: VerdictFail}
	const want = "request-success-rate 91.3% < min 99% (3/5 failed checks)"
	if got := FailureMessage(check, 3, 5); got != want {
		t.Errorf("%q, want %q", got, want)
	}
}
