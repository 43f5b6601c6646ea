package routing

import (
	"reflect"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestCompileAnnotations(t *testing.T) {
	tests := []struct {
		name         string
		annotations  map[string]string
		rules        string
		wantRetry    *routetable.Retry
		wantTimeouts routetable.Timeouts
		wantErr      []string
	}{
		{
			name:        "none",
			annotations: nil,
		},
		{
			name:        "http list with default limit",
			annotations: map[string]string{AnnotationRetryHTTP: "5xx, gateway-error,503 ,500-504,429"},
			wantRetry: &routetable.Retry{
				Codes:      []int{503, 429},
				CodeRanges: [][2]int{{500, 599}, {502, 504}, {500, 504}},
				Attempts:   1,
			},
		},
		{
			name:        "grpc names and numbers",
			annotations: map[string]string{AnnotationRetryGRPC: "unavailable,DEADLINE_EXCEEDED, 13, canceled,unavailable", AnnotationRetryLimit: "3"},
			wantRetry:   &routetable.Retry{GRPCCodes: []string{"unavailable", "deadline-exceeded", "internal", "cancelled"}, Attempts: 3},
		},
		{
			name:        "limit alone retries 5xx",
			annotations: map[string]string{AnnotationRetryLimit: "2"},
			wantRetry:   &routetable.Retry{CodeRanges: [][2]int{{500, 599}}, Attempts: 2},
		},
		{
			name:         "limit 0 disables retries, timeout still applies",
			annotations:  map[string]string{AnnotationRetryHTTP: "5xx", AnnotationRetryLimit: "0", AnnotationRetryTimeout: "300ms"},
			wantTimeouts: routetable.Timeouts{BackendRequest: routetable.Duration(300 * time.Millisecond)},
		},
		{
			name:         "timeouts",
			annotations:  map[string]string{AnnotationRetryTimeout: "250ms", AnnotationRequestTimeout: "5s"},
			wantRetry:    &routetable.Retry{CodeRanges: [][2]int{{500, 599}}, Attempts: 1},
			wantTimeouts: routetable.Timeouts{Request: routetable.Duration(5 * time.Second), BackendRequest: routetable.Duration(250 * time.Millisecond)},
		},
		{
			name:         "request timeout alone is not a retry",
			annotations:  map[string]string{AnnotationRequestTimeout: "1m"},
			wantTimeouts: routetable.Timeouts{Request: routetable.Duration(time.Minute)},
		},
		{
			name:        "spec retry wins over retry annotations",
			annotations: map[string]string{AnnotationRetryHTTP: "5xx", AnnotationRetryLimit: "5"},
			rules:       "  - retry: {codes: [503], attempts: 2}\n",
			wantRetry:   &routetable.Retry{Codes: []int{503}, Attempts: 2},
		},
		{
			name:         "spec timeouts win field by field",
			annotations:  map[string]string{AnnotationRetryTimeout: "250ms", AnnotationRequestTimeout: "5s", AnnotationRetryLimit: "1"},
			rules:        "  - timeouts: {request: 20s}\n",
			wantRetry:    &routetable.Retry{CodeRanges: [][2]int{{500, 599}}, Attempts: 1},
			wantTimeouts: routetable.Timeouts{Request: routetable.Duration(20 * time.Second), BackendRequest: routetable.Duration(250 * time.Millisecond)},
		},
		{
			name:        "spec request 0s still wins",
			annotations: map[string]string{AnnotationRequestTimeout: "5s"},
			rules:       "  - timeouts: {request: 0s}\n",
		},
		{
			name: "parse errors are reported and the annotation ignored",
			annotations: map[string]string{
				AnnotationRetryHTTP:      "5xx,teapot",
				AnnotationRetryGRPC:      "unavailable,ok",
				AnnotationRetryLimit:     "many",
				AnnotationRetryTimeout:   "-1s",
				AnnotationRequestTimeout: "10",
			},
			wantRetry: &routetable.Retry{CodeRanges: [][2]int{{500, 599}}, Attempts: 1},
			wantErr: []string{
				`httproute shop/r: metadata.annotations[retry.sluice.dev/http]: invalid retry condition "teapot"`,
				`metadata.annotations[retry.sluice.dev/grpc]: invalid gRPC retry condition "ok"`,
				`metadata.annotations[retry.sluice.dev/limit]: invalid retry limit "many"`,
				`metadata.annotations[retry.sluice.dev/timeout]: invalid duration "-1s"`,
				`metadata.annotations[timeout.sluice.dev/request]: invalid duration "10"`,
			},
		},
		{
			name:        "bad ranges",
			annotations: map[string]string{AnnotationRetryHTTP: "504-500", AnnotationRetryLimit: "70000"},
			wantRetry:   &routetable.Retry{CodeRanges: [][2]int{{500, 599}}, Attempts: 1},
			wantErr: []string{
				`metadata.annotations[retry.sluice.dev/http]: invalid status range "504-500"`,
				`metadata.annotations[retry.sluice.dev/limit]: retry limit 70000 out of range`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := tt.rules
			if rules == "" {
				rules = "  - matches: [{path: {value: /a}}, {path: {value: /b}}]\n  - matches: [{path: {value: /c}}]\n"
			}
			rt := webRoute(t, "r", rules)
			rt.Annotations = tt.annotations
			compiled, errs := Compile(webSvc, []gatewayv1.HTTPRoute{rt}, "")
			checkErrors(t, errStrings(errs), tt.wantErr)
			if len(compiled) == 0 {
				t.Fatal("no rules")
			}
			for _, r := range compiled {
				if !reflect.DeepEqual(r.Retry, tt.wantRetry) {
					t.Errorf("%s: retry %s, want %s", describe(r), toJSON(r.Retry), toJSON(tt.wantRetry))
				}
				if r.Timeouts != tt.wantTimeouts {
					t.Errorf("%s: timeouts %s, want %s", describe(r), toJSON(r.Timeouts), toJSON(tt.wantTimeouts))
				}
			}
		})
	}
}
