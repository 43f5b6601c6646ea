package loadtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis/loadtest"
)

// post sends body to url and returns the status and the answer.
func post(t *testing.T, c *http.Client, url, body string) (int, string) {
	t.Helper()
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHandler drives the HTTP API as a Canary's webhooks would.
func TestHandler(t *testing.T) {
	tg := newTarget(t, 0)
	lt := newTester(t, loadtest.Options{})
	api := httptest.NewServer(lt.Handler(loadtest.HandlerOptions{Namespaces: regexp.MustCompile(`^(test|prod)$`)}))
	t.Cleanup(api.Close)
	c := &http.Client{Transport: &http.Transport{}, Timeout: guard}
	t.Cleanup(c.CloseIdleConnections)

	// Flagger's rollout webhook with a hey command, every tick.
	hey := fmt.Sprintf(`{"name":"podinfo","namespace":"test","phase":"Progressing","checksum":"abc",
		"metadata":{"type":"cmd","cmd":"hey -z 1m -q 10 -c 2 %s/hey","logCmdOutput":"true"}}`, tg.srv.URL)
	code, body := post(t, c, api.URL+"/", hey)
	var reply loadtest.TaskReply
	if err := json.Unmarshal([]byte(body), &reply); err != nil || code != http.StatusAccepted {
		t.Fatalf("POST / = %d %s", code, body)
	}
	if reply.Key != "test/podinfo" || reply.Outcome != "started" || reply.Spec == nil || reply.Spec.Rate != 20 || reply.Spec.Duration != time.Minute {
		t.Errorf("reply %+v", reply)
	}
	code, body = post(t, c, api.URL+"/", hey)
	if code != http.StatusAccepted || !strings.Contains(body, `"outcome": "running"`) {
		t.Errorf("second tick: %d %s", code, body)
	}

	// The typed form, with string values as a Canary's metadata has them.
	typed := fmt.Sprintf(`{"name":"web","namespace":"prod","metadata":{"kind":"http","url":"%s/typed","rate":"50",
		"concurrency":"2","requests":"12","headers":"X-A: 1\nX-B: 2","method":"PUT","body":"{}"}}`, tg.srv.URL)
	if code, body := post(t, c, api.URL+"/", typed); code != http.StatusAccepted || !strings.Contains(body, `"outcome": "started"`) {
		t.Fatalf("typed: %d %s", code, body)
	}
	st := wait(t, lt, "prod/web")
	if st.Requests != 12 || tg.count("/typed") != 12 {
		t.Errorf("typed load: %d requests (server %d), want 12", st.Requests, tg.count("/typed"))
	}
	tg.mu.Lock()
	if r := tg.last["/typed"]; r.Method != "PUT" || r.Header.Get("X-B") != "2" || tg.body["/typed"] != "{}" {
		t.Errorf("typed request %s %v", r.Method, r.Header)
	}
	tg.mu.Unlock()

	// Native JSON values work too.
	native := fmt.Sprintf(`{"name":"api","namespace":"prod","metadata":{"kind":"http","url":"%s/native","rate":100,
		"requests":3,"headers":{"X-C":"3"},"disableKeepAlives":true}}`, tg.srv.URL)
	if code, body := post(t, c, api.URL+"/", native); code != http.StatusAccepted {
		t.Fatalf("native: %d %s", code, body)
	}
	if st := wait(t, lt, "prod/api"); st.Requests != 3 || st.Spec.Headers["X-C"] != "3" || !st.Spec.DisableKeepAlives {
		t.Errorf("native load: %+v", st)
	}

	// Status: every load, or one.
	code, body = get(t, c, api.URL+"/status")
	var all []loadtest.Status
	if err := json.Unmarshal([]byte(body), &all); err != nil || code != http.StatusOK || len(all) != 3 {
		t.Fatalf("GET /status = %d %s (%v)", code, body, err)
	}
	if all[0].Key != "prod/api" || all[2].Key != "test/podinfo" || all[2].State != loadtest.Running || all[2].Spec.URL != tg.srv.URL+"/hey" {
		t.Errorf("statuses %+v", all)
	}
	code, body = get(t, c, api.URL+"/status?namespace=prod&name=web")
	var one loadtest.Status
	if err := json.Unmarshal([]byte(body), &one); err != nil || code != http.StatusOK || one.Requests != 12 || one.State != loadtest.Finished {
		t.Errorf("GET /status?one = %d %s", code, body)
	}
	if code, _ := get(t, c, api.URL+"/status?namespace=prod&name=nope"); code != http.StatusNotFound {
		t.Errorf("unknown status: %d", code)
	}

	// The canary leaves Progressing: a post-rollout call stops its load.
	code, body = post(t, c, api.URL+"/", `{"name":"podinfo","namespace":"test","phase":"Succeeded","metadata":{"cmd":"hey http://x/"}}`)
	if code != http.StatusOK || !strings.Contains(body, `"outcome": "stopped"`) {
		t.Errorf("Succeeded: %d %s", code, body)
	}
	if st, _ := lt.Status("test/podinfo"); st.State != loadtest.Stopped {
		t.Errorf("after Succeeded: %s", st.State)
	}
	code, body = post(t, c, api.URL+"/stop", `{"name":"podinfo","namespace":"test"}`)
	if code != http.StatusOK || !strings.Contains(body, `"outcome": "not-running"`) {
		t.Errorf("POST /stop of a stopped load: %d %s", code, body)
	}
	// A new tick starts it again, and /stop stops it.
	if code, body := post(t, c, api.URL+"/", hey); code != http.StatusAccepted || !strings.Contains(body, `"outcome": "started"`) {
		t.Errorf("restart: %d %s", code, body)
	}
	if code, body := post(t, c, api.URL+"/stop", `{"name":"podinfo","namespace":"test"}`); code != http.StatusOK || !strings.Contains(body, `"outcome": "stopped"`) {
		t.Errorf("POST /stop: %d %s", code, body)
	}

	if code, body := get(t, c, api.URL+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthz %d %q", code, body)
	}

	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"no metadata", `{"name":"a","namespace":"test"}`, 400, "metadata not found in payload"},
		{"no name", `{"namespace":"test","metadata":{}}`, 400, "name and namespace are required"},
		{"not JSON", `hey`, 400, "bad payload"},
		{"namespace refused", `{"name":"a","namespace":"kube-system","metadata":{"cmd":"hey http://x/"}}`, 403, `namespace "kube-system" is not allowed`},
		{"no cmd", `{"name":"a","namespace":"test","metadata":{"type":"cmd"}}`, 400, "cmd not found in metadata"},
		{"bash task", `{"name":"a","namespace":"test","metadata":{"type":"bash","cmd":"curl x"}}`, 400, `task type "bash" is not supported`},
		{"not hey", `{"name":"a","namespace":"test","metadata":{"cmd":"wrk -d 1m http://x/"}}`, 400, "wrk is not supported"},
		{"bad typed key", `{"name":"a","namespace":"test","metadata":{"kind":"http","url":"http://x/","rps":"10"}}`, 400, `metadata rps "10": unknown key`},
		{"bad typed value", `{"name":"a","namespace":"test","metadata":{"kind":"http","url":"http://x/","duration":"soon"}}`, 400, `metadata duration "soon"`},
		{"bad spec", `{"name":"a","namespace":"test","metadata":{"kind":"grpc","url":"x:1"}}`, 400, "method (the gRPC method"},
		{"grpc target down", `{"name":"a","namespace":"test","metadata":{"kind":"grpc","url":"127.0.0.1:1","method":"no.such.Svc/M","requests":"1"}}`, 502, "resolving it through server reflection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, c, api.URL+"/", tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("%d %q, want %d ...%s...", code, body, tc.code, tc.want)
			}
		})
	}
	if _, ok := lt.Status("test/a"); ok {
		t.Error("a refused task left a load")
	}
}
