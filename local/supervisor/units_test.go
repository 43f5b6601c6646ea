package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	s := time.Second
	tests := []struct {
		name string
		b    Backoff
		ran  []time.Duration
		want []time.Duration
	}{
		{
			name: "defaults double to 30s",
			ran:  []time.Duration{0, 0, 0, 0, 0, 0, 0},
			want: []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s},
		},
		{
			name: "a long run starts again",
			ran:  []time.Duration{0, 0, 0, 31 * s, 0},
			want: []time.Duration{1 * s, 2 * s, 4 * s, 1 * s, 2 * s},
		},
		{
			name: "custom bounds",
			b:    Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond},
			ran:  []time.Duration{0, 0, 0, 0},
			want: []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b
			var got []time.Duration
			for _, r := range tt.ran {
				got = append(got, b.Next(r))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("delays = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	tests := map[string]string{
		"backend":        "BACKEND",
		"my-api":         "MY_API",
		"web-v2-primary": "WEB_V2_PRIMARY",
		"grpc.port":      "GRPC_PORT",
	}
	for in, want := range tests {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestServiceEnv(t *testing.T) {
	ports := []ServicePort{
		{Namespace: "shop", Name: "web", Port: 80},
		{Namespace: "shop", Name: "my-api", PortName: "grpc", Port: 9090, Index: 1},
		{Namespace: "shop", Name: "my-api", PortName: "http", Port: 80, Index: 0},
		{Namespace: "shop", Name: "nolistener", Port: 80},
	}
	listeners := map[string]int{"web.shop:80": 40001, "my-api.shop:80": 40002, "my-api.shop:9090": 40003}
	got := ServiceEnv(ports, listeners)
	want := []string{
		"MY_API_SERVICE_HOST=127.0.0.1",
		"MY_API_SERVICE_PORT=40002",
		"MY_API_SERVICE_PORT_GRPC=40003",
		"MY_API_SERVICE_PORT_HTTP=40002",
		"WEB_SERVICE_HOST=127.0.0.1",
		"WEB_SERVICE_PORT=40001",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ServiceEnv =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	tests := map[string]string{
		"plain":          "plain",
		"$(A)":           "1",
		"x$(A)y$(B)z":    "x1ytwoz",
		"$(MISSING)":     "$(MISSING)",
		"$$(A)":          "$(A)",
		"$$":             "$",
		"$A":             "$A",
		"$(A":            "$(A",
		"$(EMPTY)-":      "-",
		"a$":             "a$",
		"$()":            "$()",
		"--port=$(PORT)": "--port=$(PORT)",
	}
	for in, want := range tests {
		if got := Expand(in, lookup); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildEnv(t *testing.T) {
	base := []string{"PATH=/bin", "HOME=/root", "PORT=1"}
	svc := []string{"BACKEND_SERVICE_HOST=127.0.0.1", "BACKEND_SERVICE_PORT=40001"}
	env := []EnvVar{
		{Name: "URL", Value: "http://$(BACKEND_SERVICE_HOST):$(BACKEND_SERVICE_PORT)/"},
		{Name: "ME", FieldPath: "metadata.name"},
		{Name: "IP", FieldPath: "status.podIP"},
		{Name: "HOMEDIR", Value: "$(HOME)"}, // the supervisor's own environment is not visible to $(VAR)
		{Name: "PORT", Value: "8080"},       // overridden
		{Name: "SELF", Value: "$(POD_NAME)-$(URL)"},
	}
	got, lookup, err := buildEnv(base, svc, "web-1", "shop", "uid-1", 45000, env)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PATH":     "/bin",
		"HOME":     "/root",
		"PORT":     "45000",
		"URL":      "http://127.0.0.1:40001/",
		"ME":       "web-1",
		"IP":       "127.0.0.1",
		"HOMEDIR":  "$(HOME)",
		"SELF":     "web-1-http://127.0.0.1:40001/",
		"POD_NAME": "web-1", "POD_NAMESPACE": "shop",
		"BACKEND_SERVICE_PORT": "40001",
	}
	for k, v := range want {
		if g := envValue(got, k); g != v {
			t.Errorf("%s = %q, want %q", k, g, v)
		}
	}
	seen := map[string]bool{}
	for _, kv := range got {
		k, _, _ := strings.Cut(kv, "=")
		if seen[k] {
			t.Errorf("%s appears twice in %v", k, got)
		}
		seen[k] = true
	}
	if v, ok := lookup("PORT"); !ok || v != "45000" {
		t.Errorf("lookup(PORT) = %q, %v", v, ok)
	}
	if _, _, err := buildEnv(nil, nil, "p", "ns", "u", 1, []EnvVar{{Name: "X", FieldPath: "spec.priority"}}); err == nil {
		t.Error("unsupported field path: no error")
	}
}

func TestPortsPreferred(t *testing.T) {
	taken := map[int]bool{8081: true, 8083: true}
	p := &Ports{Bindable: func(port int) bool { return !taken[port] }}
	type step struct {
		want        int
		got         int
		skipped     []int
		release     int
		description string
	}
	steps := []step{
		{want: 8080, got: 8080, description: "free"},
		{want: 8081, got: 8082, skipped: []int{8081}, description: "taken by another program"},
		{want: 8080, got: 8084, skipped: []int{8080, 8081, 8082, 8083}, description: "handed out already and taken"},
		{release: 8080},
		{want: 8080, got: 8080, description: "released"},
	}
	for _, s := range steps {
		if s.release != 0 {
			p.Release(s.release)
			continue
		}
		got, skipped, err := p.Preferred(s.want)
		if err != nil {
			t.Fatalf("%s: %v", s.description, err)
		}
		if got != s.got || !slices.Equal(skipped, s.skipped) {
			t.Errorf("%s: Preferred(%d) = %d, skipped %v; want %d, skipped %v", s.description, s.want, got, skipped, s.got, s.skipped)
		}
	}
}

func TestPortsFallBackToAnyFree(t *testing.T) {
	p := &Ports{Bindable: func(port int) bool { return port < 20000 || port > 20200 }}
	got, skipped, err := p.Preferred(20000)
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != maxScan {
		t.Errorf("skipped %d ports, want %d", len(skipped), maxScan)
	}
	if got >= 20000 && got < 20000+maxScan {
		t.Errorf("got %d, which was reported taken", got)
	}
	// Free never hands out the same port twice while it is reserved.
	seen := map[int]bool{got: true}
	for range 20 {
		port, err := p.Free()
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
	}
}

func TestPortsReal(t *testing.T) {
	var p Ports
	port, err := p.Free()
	if err != nil {
		t.Fatal(err)
	}
	p.Release(port)
	// Preferred on a port held by a listener skips it.
	ln, err := netListen(port)
	if err != nil {
		t.Skipf("port %d was taken meanwhile: %v", port, err)
	}
	defer ln.Close()
	got, skipped, err := p.Preferred(port)
	if err != nil {
		t.Fatal(err)
	}
	if got == port || len(skipped) == 0 || skipped[0] != port {
		t.Errorf("Preferred(%d) with the port held = %d, skipped %v", port, got, skipped)
	}
	if err := CheckListen("the API address", fmt.Sprintf("127.0.0.1:%d", port)); err == nil || !strings.Contains(err.Error(), "cannot be used") {
		t.Errorf("CheckListen on a held port = %v", err)
	}
}

func TestTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	var b strings.Builder
	for i := range 30 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Tail(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"line 27", "line 28", "line 29"}; !slices.Equal(got, want) {
		t.Errorf("Tail = %q, want %q", got, want)
	}
	// A long file: only the end is read, and the first partial line dropped.
	long := strings.Repeat("x", tailBytes) + "\nlast\n"
	if err := os.WriteFile(path, []byte(long), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = Tail(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"last"}) {
		t.Errorf("Tail of a long file = %q", got)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := "/nonexistent:" + bin
	if got := lookPath("tool", path, ""); got != filepath.Join(bin, "tool") {
		t.Errorf("lookPath(tool) = %q", got)
	}
	if got := lookPath("data", path, ""); got != "data" {
		t.Errorf("lookPath of a non-executable = %q", got)
	}
	if got := lookPath("./tool", path, ""); got != "./tool" {
		t.Errorf("lookPath(./tool) = %q", got)
	}
	if got := lookPath("tool", "bin", dir); got != filepath.Join(bin, "tool") {
		t.Errorf("lookPath with a relative PATH entry = %q", got)
	}
}
