package webhook

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a webhook receiver that records each request and answers with
// the status its answer function picks.
type recorder struct {
	mu     sync.Mutex
	bodies []string
	paths  []string
	types  []string
	answer func(n int, r *http.Request) int // n counts requests from 1
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.bodies = append(rec.bodies, string(b))
	rec.paths = append(rec.paths, r.URL.Path)
	rec.types = append(rec.types, r.Method+" "+r.Header.Get("Content-Type"))
	n := len(rec.bodies)
	rec.mu.Unlock()
	code := http.StatusOK
	if rec.answer != nil {
		code = rec.answer(n, r)
	}
	w.WriteHeader(code)
}

func (rec *recorder) snapshot() (bodies, paths, types []string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.bodies...), append([]string(nil), rec.paths...), append([]string(nil), rec.types...)
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// newCaller returns a Caller with its own transport (closed at cleanup) and
// a 1ms backoff.
func newCaller(t *testing.T) *Caller {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &Caller{HTTPClient: &http.Client{Transport: tr}, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}
}

// fakeClock returns a Now that advances by step at every call.
func fakeClock(step time.Duration) func() time.Time {
	var mu sync.Mutex
	t := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now := t
		t = t.Add(step)
		return now
	}
}

func testCanary() *v1beta1.Canary {
	return &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Namespace: "test"},
		Status:     v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, ObservedRevision: "7d9c5b6f4", LastAppliedSpec: "old"},
	}
}

func TestPayloadPerKind(t *testing.T) {
	rec := &recorder{}
	srv := newServer(t, rec)
	c := newCaller(t)
	canary := testCanary()
	at := time.UnixMilli(1748779200123)

	tests := []struct {
		typ     v1beta1.HookType
		payload Payload
		meta    map[string]string
		want    string
	}{
		{v1beta1.ConfirmRolloutHook, NewPayload(canary, v1beta1.PhaseWaiting), nil,
			`{"name":"podinfo","namespace":"test","phase":"Waiting","checksum":"7d9c5b6f4"}`},
		{v1beta1.PreRolloutHook, NewPayload(canary, v1beta1.PhaseProgressing), map[string]string{"type": "bash", "cmd": "curl -s http://podinfo-canary.test:9898/token"},
			`{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"7d9c5b6f4","metadata":{"cmd":"curl -s http://podinfo-canary.test:9898/token","type":"bash"}}`},
		{v1beta1.RolloutHook, NewPayload(canary, v1beta1.PhaseProgressing), map[string]string{"cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"},
			`{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"7d9c5b6f4","metadata":{"cmd":"hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"}}`},
		{"", NewPayload(canary, v1beta1.PhaseProgressing), nil,
			`{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"7d9c5b6f4"}`},
		{v1beta1.ConfirmTrafficIncreaseHook, NewPayload(canary, v1beta1.PhaseProgressing), nil,
			`{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"7d9c5b6f4"}`},
		{v1beta1.ConfirmPromotionHook, NewPayload(canary, v1beta1.PhaseProgressing), map[string]string{"team": "payments"},
			`{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"7d9c5b6f4","metadata":{"team":"payments"}}`},
		{v1beta1.PostRolloutHook, NewPayload(canary, v1beta1.PhaseSucceeded), nil,
			`{"name":"podinfo","namespace":"test","phase":"Succeeded","checksum":"7d9c5b6f4"}`},
		{v1beta1.RollbackHook, NewPayload(canary, v1beta1.PhaseWaitingPromotion), nil,
			`{"name":"podinfo","namespace":"test","phase":"WaitingPromotion","checksum":"7d9c5b6f4"}`},
		{v1beta1.EventHook, EventPayload(canary, v1beta1.PhaseProgressing, "Advance podinfo.test canary weight 10", EventNormal, at),
			map[string]string{"env": "prod", "eventType": "overridden?"},
			`{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"7d9c5b6f4","metadata":{"env":"prod","eventMessage":"Advance podinfo.test canary weight 10","eventType":"Normal","timestamp":"1748779200123"}}`},
	}
	for i, tt := range tests {
		t.Run(string(tt.typ), func(t *testing.T) {
			hook := v1beta1.CanaryWebhook{Name: "h", Type: tt.typ, URL: srv.URL + "/hook", Metadata: tt.meta}
			out := c.Call(context.Background(), hook, tt.payload)
			if !out.OK || out.Err != nil {
				t.Fatalf("Call: OK=%v err=%v message=%q", out.OK, out.Err, out.Message)
			}
			bodies, paths, types := rec.snapshot()
			if len(bodies) != i+1 {
				t.Fatalf("receiver saw %d requests, want %d", len(bodies), i+1)
			}
			if got := bodies[i]; got != tt.want {
				t.Errorf("payload\n got %s\nwant %s", got, tt.want)
			}
			if paths[i] != "/hook" || types[i] != "POST application/json" {
				t.Errorf("request = %s %s, want POST application/json /hook", types[i], paths[i])
			}
			wantType := tt.typ
			if wantType == "" {
				wantType = v1beta1.RolloutHook
			}
			if out.Type != wantType || out.Hook != "h" {
				t.Errorf("outcome names %s hook %s, want %s hook h", out.Type, out.Hook, wantType)
			}
		})
	}
	// The caller's payload map is not modified by the merge.
	p := EventPayload(canary, v1beta1.PhaseProgressing, "m", EventWarning, at)
	c.Call(context.Background(), v1beta1.CanaryWebhook{Name: "e", Type: v1beta1.EventHook, URL: srv.URL, Metadata: map[string]string{"x": "y"}}, p)
	if _, ok := p.Metadata["x"]; ok {
		t.Error("Call modified the caller's payload metadata")
	}
}

func TestNewPayloadChecksumFallsBackToLastAppliedSpec(t *testing.T) {
	c := testCanary()
	c.Status.ObservedRevision = ""
	if got := NewPayload(c, v1beta1.PhaseProgressing).Checksum; got != "old" {
		t.Errorf("checksum = %q, want the last applied spec %q", got, "old")
	}
}

func TestSuccessIsAny2xx(t *testing.T) {
	tests := []struct {
		code int
		ok   bool
	}{
		{200, true}, {201, true}, {202, true}, {203, true}, {204, true}, {299, true},
		{301, false}, {400, false}, {403, false}, {404, false}, {409, false}, {501, false},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.code), func(t *testing.T) {
			srv := newServer(t, &recorder{answer: func(int, *http.Request) int { return tt.code }})
			out := newCaller(t).Call(context.Background(), v1beta1.CanaryWebhook{Name: "h", Type: v1beta1.RolloutHook, URL: srv.URL}, Payload{})
			if out.OK != tt.ok || out.Status != tt.code {
				t.Errorf("status %d: OK=%v Status=%d, want OK=%v", tt.code, out.OK, out.Status, tt.ok)
			}
			if (out.Err == nil) != tt.ok {
				t.Errorf("status %d: Err=%v", tt.code, out.Err)
			}
			if out.Attempts != 1 {
				t.Errorf("status %d: %d attempts, want 1 (not retried)", tt.code, out.Attempts)
			}
		})
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name         string
		retries      int
		failFirst    int // requests answered with failCode before 200
		failCode     int
		wantOK       bool
		wantAttempts int
	}{
		{"503 then success", 3, 2, http.StatusServiceUnavailable, true, 3},
		{"429 then success", 1, 1, http.StatusTooManyRequests, true, 2},
		{"retries exhausted", 1, 5, http.StatusInternalServerError, false, 2},
		{"no retries", 0, 1, http.StatusBadGateway, false, 1},
		{"403 not retried", 3, 5, http.StatusForbidden, false, 1},
		{"501 not retried", 3, 5, http.StatusNotImplemented, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{answer: func(n int, _ *http.Request) int {
				if n <= tt.failFirst {
					return tt.failCode
				}
				return http.StatusOK
			}}
			srv := newServer(t, rec)
			out := newCaller(t).Call(context.Background(), v1beta1.CanaryWebhook{Name: "h", URL: srv.URL, Retries: tt.retries}, Payload{Name: "a"})
			if out.OK != tt.wantOK || out.Attempts != tt.wantAttempts {
				t.Errorf("OK=%v Attempts=%d, want OK=%v Attempts=%d (%s)", out.OK, out.Attempts, tt.wantOK, tt.wantAttempts, out.Message)
			}
			bodies, _, _ := rec.snapshot()
			if len(bodies) != tt.wantAttempts {
				t.Errorf("receiver saw %d requests, want %d", len(bodies), tt.wantAttempts)
			}
			for i, b := range bodies {
				if b != bodies[0] {
					t.Errorf("attempt %d sent %s, first sent %s", i+1, b, bodies[0])
				}
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int32
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer close(release) // before srv.Close (cleanup) so no handler blocks it

	c := newCaller(t)
	// The timeout also bounds each request's way to the handler: 20 ms (and
	// once in 300 runs even 300 ms) was not enough for it on a loaded
	// machine, and the server then saw fewer than two attempts.
	out := c.Call(context.Background(), v1beta1.CanaryWebhook{Name: "slow", Type: v1beta1.PreRolloutHook, URL: srv.URL, Timeout: "1s", Retries: 1}, Payload{})
	if out.OK || out.Status != 0 {
		t.Fatalf("OK=%v Status=%d, want a failed call without a status", out.OK, out.Status)
	}
	if out.Attempts != 2 {
		t.Errorf("attempts=%d, want 2 (a timeout is retried)", out.Attempts)
	}
	// The handler of an attempt the caller gave up on may start late.
	for deadline := time.Now().Add(10 * time.Second); started.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := started.Load(); n != 2 {
		t.Errorf("server saw %d attempts, want 2", n)
	}
	if !strings.Contains(out.Message, "no answer within 1s after 2 attempts") || !strings.HasPrefix(out.Message, "pre-rollout hook slow: POST "+srv.URL) {
		t.Errorf("message = %q", out.Message)
	}
	if out.Verdict() != v1beta1.VerdictError {
		t.Errorf("verdict = %s, want error", out.Verdict())
	}
}

func TestCancelStopsRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int32
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		cancel() // the caller gives up during the first attempt
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	c := newCaller(t)
	c.Backoff = time.Hour // a retry would wait forever without the cancellation
	out := c.Call(ctx, v1beta1.CanaryWebhook{Name: "h", URL: srv.URL, Retries: 5}, Payload{})
	if out.OK || n.Load() != 1 || out.Attempts != 1 {
		t.Errorf("OK=%v attempts=%d requests=%d, want one failed attempt", out.OK, out.Attempts, n.Load())
	}
}

// refusedURL returns a loopback URL that nothing listens on.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + "/"
}

func TestMessages(t *testing.T) {
	rec := &recorder{answer: func(_ int, r *http.Request) int {
		switch r.URL.Path {
		case "/ok":
			return http.StatusOK
		case "/forbidden":
			return http.StatusForbidden
		case "/boom":
			return http.StatusInternalServerError
		}
		return http.StatusNotFound
	}}
	srv := newServer(t, rec)
	refused := refusedURL(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(refused, "http://"), "/")

	tests := []struct {
		hook v1beta1.CanaryWebhook
		want string
	}{
		{v1beta1.CanaryWebhook{Name: "acceptance-test", Type: v1beta1.PreRolloutHook, URL: srv.URL + "/ok"},
			"pre-rollout hook acceptance-test: 200 OK in 35ms"},
		{v1beta1.CanaryWebhook{Name: "approve", Type: v1beta1.ConfirmPromotionHook, URL: srv.URL + "/forbidden"},
			"confirm-promotion hook approve: 403 (gate closed), will ask again next interval"},
		{v1beta1.CanaryWebhook{Name: "approve", Type: v1beta1.ConfirmRolloutHook, URL: srv.URL + "/boom"},
			"confirm-rollout hook approve: 500 Internal Server Error (gate treated as closed), will ask again next interval"},
		{v1beta1.CanaryWebhook{Name: "rb", Type: v1beta1.RollbackHook, URL: srv.URL + "/ok"},
			"rollback hook rb: 200 OK in 35ms, rollback requested"},
		{v1beta1.CanaryWebhook{Name: "rb", Type: v1beta1.RollbackHook, URL: srv.URL + "/forbidden"},
			"rollback hook rb: 403 (no rollback requested)"},
		{v1beta1.CanaryWebhook{Name: "load", URL: srv.URL + "/missing"},
			"rollout hook load: 404 Not Found"},
		{v1beta1.CanaryWebhook{Name: "load", Type: v1beta1.RolloutHook, URL: refused, Retries: 2},
			"rollout hook load: POST " + refused + ": dial tcp " + addr + ": connect: connection refused after 3 attempts"},
		{v1beta1.CanaryWebhook{Name: "bad", Type: v1beta1.ConfirmTrafficIncreaseHook, URL: "ftp://example/"},
			`confirm-traffic-increase hook bad: url "ftp://example/" is not an http(s) URL, will ask again next interval`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			c := newCaller(t)
			c.Now = fakeClock(35 * time.Millisecond)
			out := c.Call(context.Background(), tt.hook, Payload{Name: "podinfo", Namespace: "test"})
			if out.Message != tt.want {
				t.Errorf("message\n got %q\nwant %q", out.Message, tt.want)
			}
			if !out.OK && (out.Err == nil || !strings.Contains(out.Err.Error(), tt.hook.Name)) {
				t.Errorf("Err = %v, want an error naming the hook", out.Err)
			}
		})
	}
}

func TestFailureBodyInMessage(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "helm test\nfailed:   podinfo-grpc\n")
	}))
	out := newCaller(t).Call(context.Background(), v1beta1.CanaryWebhook{Name: "helm", Type: v1beta1.PreRolloutHook, URL: srv.URL}, Payload{})
	const want = "pre-rollout hook helm: 400 Bad Request: helm test failed: podinfo-grpc"
	if out.Message != want || out.Body != "helm test failed: podinfo-grpc" {
		t.Errorf("message = %q body = %q, want %q", out.Message, out.Body, want)
	}
	if out.Verdict() != v1beta1.VerdictFail {
		t.Errorf("verdict = %s, want fail", out.Verdict())
	}
}

func TestHooksOrderAndCallInOrder(t *testing.T) {
	rec := &recorder{answer: func(_ int, r *http.Request) int {
		if strings.HasSuffix(r.URL.Path, "-no") {
			return http.StatusForbidden
		}
		return http.StatusOK
	}}
	srv := newServer(t, rec)
	canary := testCanary()
	canary.Spec.Analysis = &v1beta1.CanaryAnalysis{Webhooks: []v1beta1.CanaryWebhook{
		{Name: "gate-1", Type: v1beta1.ConfirmPromotionHook, URL: srv.URL + "/gate-1"},
		{Name: "load", URL: srv.URL + "/load"},
		{Name: "post-1", Type: v1beta1.PostRolloutHook, URL: srv.URL + "/post-1-no"},
		{Name: "gate-2", Type: v1beta1.ConfirmPromotionHook, URL: srv.URL + "/gate-2-no"},
		{Name: "smoke", Type: v1beta1.RolloutHook, URL: srv.URL + "/smoke"},
		{Name: "post-2", Type: v1beta1.PostRolloutHook, URL: srv.URL + "/post-2"},
		{Name: "gate-3", Type: v1beta1.ConfirmPromotionHook, URL: srv.URL + "/gate-3"},
		{Name: "rb-1", Type: v1beta1.RollbackHook, URL: srv.URL + "/rb-1-no"},
		{Name: "rb-2", Type: v1beta1.RollbackHook, URL: srv.URL + "/rb-2"},
		{Name: "rb-3", Type: v1beta1.RollbackHook, URL: srv.URL + "/rb-3"},
	}}

	names := func(hs []v1beta1.CanaryWebhook) string {
		var s []string
		for _, h := range hs {
			s = append(s, h.Name)
		}
		return strings.Join(s, ",")
	}
	for typ, want := range map[v1beta1.HookType]string{
		v1beta1.ConfirmPromotionHook: "gate-1,gate-2,gate-3",
		v1beta1.RolloutHook:          "load,smoke",
		"":                           "load,smoke",
		v1beta1.PostRolloutHook:      "post-1,post-2",
		v1beta1.RollbackHook:         "rb-1,rb-2,rb-3",
		v1beta1.EventHook:            "",
	} {
		if got := names(Hooks(canary, typ)); got != want {
			t.Errorf("Hooks(%q) = %q, want %q", typ, got, want)
		}
	}
	if Hooks(&v1beta1.Canary{}, v1beta1.RolloutHook) != nil || Hooks(nil, v1beta1.RolloutHook) != nil {
		t.Error("Hooks of a canary without analysis should be nil")
	}

	tests := []struct {
		typ       v1beta1.HookType
		wantPaths string
		allOK     bool
		anyOK     bool
	}{
		// A closed gate stops the loop: gate-3 is not asked.
		{v1beta1.ConfirmPromotionHook, "/gate-1,/gate-2-no", false, true},
		{v1beta1.RolloutHook, "/load,/smoke", true, true},
		// Post-rollout hooks are all called, failures or not.
		{v1beta1.PostRolloutHook, "/post-1-no,/post-2", false, true},
		// The first rollback request decides: rb-3 is not asked.
		{v1beta1.RollbackHook, "/rb-1-no,/rb-2", false, true},
	}
	c := newCaller(t)
	for _, tt := range tests {
		t.Run(string(tt.typ), func(t *testing.T) {
			before, _, _ := rec.snapshot()
			outs := c.CallInOrder(context.Background(), Hooks(canary, tt.typ), NewPayload(canary, v1beta1.PhaseProgressing))
			_, paths, _ := rec.snapshot()
			if got := strings.Join(paths[len(before):], ","); got != tt.wantPaths {
				t.Errorf("called %s, want %s", got, tt.wantPaths)
			}
			if len(outs) != strings.Count(tt.wantPaths, "/") {
				t.Errorf("%d outcomes for calls %s", len(outs), tt.wantPaths)
			}
			if AllOK(outs) != tt.allOK || AnyOK(outs) != tt.anyOK {
				t.Errorf("AllOK=%v AnyOK=%v, want %v %v", AllOK(outs), AnyOK(outs), tt.allOK, tt.anyOK)
			}
		})
	}
	if !AllOK(nil) || AnyOK(nil) {
		t.Error("no hooks: want AllOK true (nothing to wait for) and AnyOK false (no rollback)")
	}
}

func TestDisableTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(&recorder{})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := newCaller(t)
	t.Cleanup(func() {
		if c.insecure != nil {
			c.insecure.CloseIdleConnections()
		}
	})
	out := c.Call(context.Background(), v1beta1.CanaryWebhook{Name: "tls", URL: srv.URL}, Payload{})
	if out.OK || !strings.Contains(out.Message, "certificate") {
		t.Errorf("self-signed certificate accepted without disableTLS: %q", out.Message)
	}
	out = c.Call(context.Background(), v1beta1.CanaryWebhook{Name: "tls", URL: srv.URL, DisableTLS: true}, Payload{})
	if !out.OK {
		t.Errorf("disableTLS call failed: %q", out.Message)
	}
	// The shared client still verifies.
	out = c.Call(context.Background(), v1beta1.CanaryWebhook{Name: "tls", URL: srv.URL}, Payload{})
	if out.OK {
		t.Error("disableTLS leaked into the verifying client")
	}
}

func TestBackoff(t *testing.T) {
	c := &Caller{Backoff: time.Second, MaxBackoff: 5 * time.Second}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := c.backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	var zero Caller
	if zero.backoff(1) != DefaultBackoff || zero.backoff(100) != DefaultMaxBackoff {
		t.Errorf("defaults: %s, %s", zero.backoff(1), zero.backoff(100))
	}
}

func TestPayloadJSONRoundTrip(t *testing.T) {
	// A Flagger load tester decodes the payload with these field names.
	var got map[string]any
	b, _ := json.Marshal(NewPayload(testCanary(), v1beta1.PhaseProgressing))
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "namespace", "phase", "checksum"} {
		if _, ok := got[k]; !ok {
			t.Errorf("payload lacks %q: %s", k, b)
		}
	}
}
