package prometheus_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/analysis/prometheus"
	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeAPI is a Prometheus HTTP API that answers /api/v1/query from a map of
// query → JSON body (the whole response), and records the requests.
type fakeAPI struct {
	bodies map[string]string
	status map[string]int

	mu   sync.Mutex
	reqs []*http.Request
	qs   []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.qs = append(f.qs, q)
	f.mu.Unlock()
	if q == "hang" {
		<-r.Context().Done()
		return
	}
	body, ok := f.bodies[q]
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		msg, _ := json.Marshal(fmt.Sprintf("1:1: parse error: unexpected %q", q))
		fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":%s}`, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if code := f.status[q]; code != 0 {
		w.WriteHeader(code)
	}
	_, _ = io.WriteString(w, body)
}

func (f *fakeAPI) last() *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return nil
	}
	return f.reqs[len(f.reqs)-1]
}

const one = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"1"]}]}}`

func vector(values ...string) string {
	var parts []string
	for i, v := range values {
		parts = append(parts, fmt.Sprintf(`{"metric":{"pod":"p%d"},"value":[1700000000,%q]}`, i, v))
	}
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(parts, ",") + `]}}`
}

func newAPI() *fakeAPI {
	return &fakeAPI{bodies: map[string]string{
		"vector(1)":  one,
		"one":        vector("99.5"),
		"empty":      vector(),
		"nan":        vector("NaN"),
		"inf":        vector("+Inf"),
		"three":      vector("1", "2", "3"),
		"scalar":     `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42.25"]}}`,
		"scalar-nan": `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"NaN"]}}`,
		"matrix":     `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"],[1700000001,"2"]]}]}}`,
		"string":     `{"status":"success","data":{"resultType":"string","result":[1700000000,"hello"]}}`,
		"broken":     `{"status":"success","data":`,
		"teapot":     `I'm a teapot`,
	}, status: map[string]int{"teapot": http.StatusTeapot}}
}

func TestQuery(t *testing.T) {
	api := newAPI()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	p, err := prometheus.New(prometheus.Config{Address: srv.URL, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ctx := context.Background()
	for _, tc := range []struct {
		query   string
		want    float64
		noData  bool
		wantErr string
	}{
		{query: "one", want: 99.5},
		{query: "scalar", want: 42.25},
		{query: "inf", want: math.Inf(1)},
		{query: "empty", noData: true, wantErr: "the query returned an empty vector"},
		{query: "nan", noData: true, wantErr: "the query returned NaN"},
		{query: "scalar-nan", noData: true, wantErr: "the query returned NaN"},
		{query: "three", wantErr: "query returned 3 series, want 1: add sum() or by() to aggregate them"},
		{query: "matrix", wantErr: "query returned a range vector"},
		{query: "string", wantErr: `unexpected value type "string"`},
		{query: "syntax(", wantErr: `prometheus at ` + srv.URL + `: query failed: bad_data: 1:1: parse error: unexpected "syntax("; query: syntax(`},
		{query: "broken", wantErr: "query failed"},
		{query: "teapot", wantErr: "I'm a teapot"},
		{query: "  ", wantErr: "query is empty"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			got, err := p.Query(ctx, tc.query, template.Vars{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("value %v, want %v", got, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("value %v, want an error", got)
			}
			if errors.Is(err, template.ErrNoData) != tc.noData {
				t.Errorf("no data = %v, want %v", !tc.noData, tc.noData)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
			if !tc.noData && tc.query != "  " && !strings.Contains(err.Error(), "prometheus at "+srv.URL) {
				t.Errorf("error %q does not name the provider", err)
			}
			if !tc.noData && tc.query != "  " && !strings.Contains(err.Error(), "query: "+tc.query) {
				t.Errorf("error %q does not name the query", err)
			}
		})
	}
	// Multi-line queries are sent as written and written on one line in errors.
	_, err = p.Value(ctx, "sum(\n  up\n)")
	if err == nil || !strings.Contains(err.Error(), "query: sum( up )") {
		t.Errorf("multi-line query error: %v", err)
	}
	api.mu.Lock()
	if q := api.qs[len(api.qs)-1]; q != "sum(\n  up\n)" {
		t.Errorf("sent %q", q)
	}
	api.mu.Unlock()
}

func TestAuthAndHeaders(t *testing.T) {
	api := newAPI()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	secrets := prometheus.Secrets{
		"test/token": {"token": "s3cret\n"},
		"test/basic": {"username": "alice", "password": "pa:ss"},
		"test/half":  {"username": "alice"},
		"test/both":  {"token": "t", "username": "u", "password": "p"},
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		secret   string
		wantAuth string
		wantErr  string
	}{
		{name: "no secret", wantAuth: ""},
		{name: "bearer", secret: "token", wantAuth: "Bearer s3cret"},
		{name: "basic", secret: "basic", wantAuth: "Basic YWxpY2U6cGE6c3M="},
		{name: "token wins", secret: "both", wantAuth: "Bearer t"},
		{name: "incomplete", secret: "half", wantErr: `secret test/half has neither "token" nor "username" and "password"`},
		{name: "missing secret", secret: "nope", wantErr: `secret test/nope has neither "token"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := v1beta1.MetricTemplateProvider{
				Type:    v1beta1.MetricProviderPrometheus,
				Address: srv.URL,
				Headers: map[string][]string{"X-Scope-OrgID": {"tenant-1"}, "X-Multi": {"a", "b"}},
			}
			if tc.secret != "" {
				spec.SecretRef = &v1beta1.SecretReference{Name: tc.secret}
			}
			q, err := prometheus.Factory(secrets, prometheus.Options{})(ctx, "test", spec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = q.(*prometheus.Provider).Close() })
			v, err := q.Query(ctx, "one", template.Vars{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Query = %v, %v; want error %q", v, err, tc.wantErr)
				}
				return
			}
			if err != nil || v != 99.5 {
				t.Fatalf("Query = %v, %v", v, err)
			}
			r := api.last()
			if got := r.Header.Get("Authorization"); got != tc.wantAuth {
				t.Errorf("Authorization %q, want %q", got, tc.wantAuth)
			}
			if got := r.Header.Get("X-Scope-OrgID"); got != "tenant-1" {
				t.Errorf("X-Scope-OrgID %q", got)
			}
			if got := r.Header.Values("X-Multi"); strings.Join(got, ",") != "a,b" {
				t.Errorf("X-Multi %q", got)
			}
		})
	}
}

// failingSecrets fails every read with something other than ErrNotFound.
type failingSecrets struct{}

func (failingSecrets) Get(ns, name, key string) (string, error) {
	return "", errors.New("apiserver: connection refused")
}

func TestSecretReadFailure(t *testing.T) {
	_, err := prometheus.New(prometheus.Config{Address: "http://127.0.0.1:1", SecretNamespace: "test", SecretName: "s", Secrets: failingSecrets{}})
	if err == nil || !strings.Contains(err.Error(), `reading "ca.crt" of secret test/s: apiserver: connection refused`) {
		t.Errorf("New with a failing secret reader: %v", err)
	}
	_, err = prometheus.New(prometheus.Config{Address: "http://127.0.0.1:1", SecretNamespace: "test", SecretName: "s"})
	if err == nil || !strings.Contains(err.Error(), "no secret reader") {
		t.Errorf("New without a secret reader: %v", err)
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(newAPI())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	secrets := prometheus.Secrets{
		"test/ca":      {"ca.crt": caPEM, "token": "t"},
		"test/garbage": {"ca.crt": "not a certificate", "token": "t"},
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		spec     v1beta1.MetricTemplateProvider
		wantErr  string
		buildErr string
	}{
		{name: "untrusted", spec: v1beta1.MetricTemplateProvider{Address: srv.URL}, wantErr: "certificate"},
		{name: "insecureSkipVerify", spec: v1beta1.MetricTemplateProvider{Address: srv.URL, InsecureSkipVerify: true}},
		{name: "CA from the secret", spec: v1beta1.MetricTemplateProvider{Address: srv.URL, SecretRef: &v1beta1.SecretReference{Name: "ca"}}},
		{name: "bad CA", spec: v1beta1.MetricTemplateProvider{Address: srv.URL, SecretRef: &v1beta1.SecretReference{Name: "garbage"}},
			buildErr: `"ca.crt" of secret test/garbage holds no PEM certificate`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.Type = v1beta1.MetricProviderPrometheus
			q, err := prometheus.Factory(secrets, prometheus.Options{})(ctx, "test", tc.spec)
			if tc.buildErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.buildErr) {
					t.Fatalf("build error %v, want %q", err, tc.buildErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := q.(*prometheus.Provider)
			t.Cleanup(func() { _ = p.Close() })
			err = p.Check(ctx)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "is unreachable") {
				t.Errorf("Check = %v, want an unreachable error mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	// A port nothing listens on: bind one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	p, err := prometheus.New(prometheus.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	err = p.Check(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "prometheus at "+addr+" is unreachable: ") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Check of a closed port: %v", err)
	}

	// A server that refuses the credentials answers, with an error.
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "invalid token", http.StatusUnauthorized)
	}))
	t.Cleanup(deny.Close)
	p2, err := prometheus.New(prometheus.Config{Address: deny.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2.Close() })
	err = p2.Check(ctx)
	if err == nil || !strings.Contains(err.Error(), "prometheus at "+deny.URL+" answered with an error: client_error: client error: 401 (invalid token)") {
		t.Errorf("Check of a server refusing credentials: %v", err)
	}

	// The timeout bounds a server that never answers.
	api := newAPI()
	api.bodies["vector(1)"] = "" // unused: "hang" below
	hang := httptest.NewServer(api)
	t.Cleanup(hang.Close)
	p3, err := prometheus.New(prometheus.Config{Address: hang.URL, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p3.Close() })
	_, err = p3.Value(ctx, "hang")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "query: hang") {
		t.Errorf("hanging query: %v", err)
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		cfg     prometheus.Config
		wantErr string
	}{
		{prometheus.Config{}, "prometheus address is empty"},
		{prometheus.Config{Address: "prometheus:9090"}, "not an absolute http or https URL"},
		{prometheus.Config{Address: "ftp://x"}, "not an absolute http or https URL"},
		{prometheus.Config{Address: "http://x", CAFile: "/nonexistent/ca.pem"}, "reading CA file"},
	} {
		if _, err := prometheus.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.wantErr)
		}
	}
	// A template without an address takes the default.
	cfg := prometheus.ConfigFromSpec("ns", v1beta1.MetricTemplateProvider{Type: "prometheus"}, nil, prometheus.Options{DefaultAddress: "http://prom:9090", Timeout: time.Second})
	if cfg.Address != "http://prom:9090" || cfg.Timeout != time.Second || cfg.SecretName != "" {
		t.Errorf("ConfigFromSpec = %+v", cfg)
	}
}
