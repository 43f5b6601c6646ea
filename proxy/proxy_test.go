package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"sigs.k8s.io/gateway-api/conformance/utils/weight"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/config"
)

// backend is a test HTTP server that answers with its pod name.
type backend struct {
	name string
	addr string
	hits atomic.Int64
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		w.Header().Set("x-pod", b.name)
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, b.name)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

func u32(v uint32) *uint32 { return &v }

// splitConfig is an apex service split over the given backends with weights.
func splitConfig(backends []*backend, weights []uint32) *config.Config {
	cfg := &config.Config{
		Admin:     "127.0.0.1:0",
		Inbound:   config.Inbound{Listen: config.Off},
		Outbound:  config.Outbound{Listen: config.Off},
		Listeners: []config.Listener{{Listen: "127.0.0.1:0", Service: "web.default:80"}},
	}
	apex := routetable.Service{Name: "web", Namespace: "default", Port: 80}
	rule := routetable.Rule{Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/"}}
	for i, b := range backends {
		name := fmt.Sprintf("web-%d", i)
		rule.Backends = append(rule.Backends, routetable.Backend{Service: routetable.ServiceKey(name, "default", 80), Weight: u32(weights[i])})
		cfg.Table.Services = append(cfg.Table.Services, routetable.Service{
			Name: name, Namespace: "default", Port: 80,
			Endpoints: []routetable.Endpoint{{Address: b.addr, Labels: map[string]string{"deployment": name}}},
		})
	}
	apex.Rules = []routetable.Rule{rule}
	cfg.Table.Services = append(cfg.Table.Services, apex)
	return cfg
}

// startProxy runs a proxy until the test ends and returns it once ready.
func startProxy(t *testing.T, cfg *config.Config) *Proxy {
	t.Helper()
	data, err := yamlOf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := config.Parse(data)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, data)
	}
	p, err := New(parsed, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy run: %v", err)
		}
	})
	select {
	case <-p.ready:
	case err := <-done:
		t.Fatalf("proxy stopped before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy not ready after 10s")
	}
	return p
}

// listenerAddr is the bound address of the proxy's only explicit listener.
func listenerAddr(t *testing.T, p *Proxy) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.listeners {
		if l.kind == "service" {
			return l.ln.Addr().String()
		}
	}
	t.Fatal("no service listener")
	return ""
}

func TestWeightedSplitsHTTP1(t *testing.T) {
	cases := []struct {
		name    string
		weights []uint32
	}{
		{"90/10", []uint32{90, 10}},
		{"50/50", []uint32{50, 50}},
		{"1/99", []uint32{1, 99}},
		{"0/100", []uint32{0, 100}},
		{"three-way 70/20/10", []uint32{70, 20, 10}},
		{"three-way 70/30/0", []uint32{70, 30, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var bs []*backend
			expected := map[string]float64{}
			var sum uint32
			for _, w := range tc.weights {
				sum += w
			}
			for i, w := range tc.weights {
				// Pod names follow the conformance suite's {backend}-{hash}-{hash} pattern.
				b := startBackend(t, fmt.Sprintf("web-%d-5d8f-x%d", i, i))
				bs = append(bs, b)
				expected[fmt.Sprintf("web-%d", i)] = float64(w) / float64(sum)
			}
			p := startProxy(t, splitConfig(bs, tc.weights))
			addr := listenerAddr(t, p)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			sender := weight.NewFunctionBasedSender(func() (string, error) {
				resp, err := client.Get("http://" + addr + "/")
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					return "", err
				}
				if resp.StatusCode != 200 {
					return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
				}
				return string(body), nil
			})
			var err error
			for try := 0; try < weight.MaxTestRetries; try++ {
				if err = weight.TestWeightedDistribution(sender, expected); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range tc.weights {
				if w == 0 && bs[i].hits.Load() != 0 {
					t.Errorf("backend %d has weight 0 but served %d requests", i, bs[i].hits.Load())
				}
			}
		})
	}
}

func TestWeightedSplitHTTP2(t *testing.T) {
	// h2c backends: the proxy balances each stream of one client connection.
	var bs []*backend
	for i := 0; i < 2; i++ {
		bs = append(bs, startH2Backend(t, fmt.Sprintf("web-%d-5d8f-x%d", i, i)))
	}
	p := startProxy(t, splitConfig(bs, []uint32{90, 10}))
	addr := listenerAddr(t, p)
	client := &http.Client{Transport: h2cTransport(addr), Timeout: 10 * time.Second}
	sender := weight.NewFunctionBasedSender(func() (string, error) {
		resp, err := client.Get("http://web.default:80/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return string(body), nil
	})
	var err error
	for try := 0; try < weight.MaxTestRetries; try++ {
		if err = weight.TestWeightedDistribution(sender, map[string]float64{"web-0": 0.9, "web-1": 0.1}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// h2cTransport is an HTTP/2 prior-knowledge client that always dials addr.
func h2cTransport(addr string) *http2.Transport {
	return &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
}

func startH2Backend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		fmt.Fprint(w, b.name)
	})
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return b
}

// TestReloadMovesSplitWithoutErrors changes weights under steady load: no request
// fails, and requests sent after the reload follow the new weights.
func TestReloadMovesSplitWithoutErrors(t *testing.T) {
	a := startBackend(t, "web-0-5d8f-x0")
	b := startBackend(t, "web-1-5d8f-x1")
	cfg := splitConfig([]*backend{a, b}, []uint32{100, 0})
	p := startProxy(t, cfg)
	addr := listenerAddr(t, p)

	ctx, cancel := context.WithCancel(context.Background())
	var failures atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			defer client.CloseIdleConnections()
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				resp, err := client.Get("http://" + addr + "/")
				if err != nil {
					failures.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
				}
			}
		}()
	}
	waitFor(t, func() bool { return a.hits.Load() > 200 })
	// The same listener address and service: the bound listener stays.
	next := reparse(t, withListener(splitConfig([]*backend{a, b}, []uint32{0, 100}), addr))
	if err := p.Reload(next); err != nil {
		t.Fatal(err)
	}
	before := a.hits.Load()
	waitFor(t, func() bool { return b.hits.Load() > 200 })
	cancel()
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d requests failed across the reload", failures.Load())
	}
	// After the swap, backend a may only finish what was in flight (at most one per worker).
	if after := a.hits.Load(); after-before > 4 {
		t.Fatalf("backend a served %d requests after its weight went to 0", after-before)
	}
}

func withListener(c *config.Config, addr string) *config.Config {
	c.Listeners = []config.Listener{{Listen: addr, Service: "web.default:80"}}
	return c
}

func reparse(t *testing.T, c *config.Config) *config.Config {
	t.Helper()
	data, err := yamlOf(c)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBadConfigKeepsLastGood writes garbage over the watched file: the proxy keeps
// routing with the previous configuration.
func TestInvalidReloadKeepsServing(t *testing.T) {
	a := startBackend(t, "web-0-5d8f-x0")
	p := startProxy(t, splitConfig([]*backend{a}, []uint32{1}))
	addr := listenerAddr(t, p)
	bad := splitConfig([]*backend{a}, []uint32{1})
	bad.Table.Services[1].Rules[0].Backends[0].Service = "missing.default:80"
	if err := p.Reload(bad); err == nil {
		t.Fatal("reload with a rule naming an unknown service succeeded")
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != a.name {
		t.Fatalf("after a rejected reload got %q, want %q", body, a.name)
	}
}

// TestDetectionOnInbound serves HTTP/1, HTTP/2 and opaque TCP on one inbound port.
func TestInboundDetectsProtocols(t *testing.T) {
	// The app speaks HTTP/1, h2c and, for raw TCP, echoes a line.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "proto=%s", r.Proto) })
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	cfg := &config.Config{
		Admin:    "127.0.0.1:0",
		Inbound:  config.Inbound{Listen: "127.0.0.1:0", App: ln.Addr().String()},
		Outbound: config.Outbound{Listen: config.Off},
	}
	p := startProxy(t, reparse(t, cfg))
	in := p.Addr("inbound")

	resp, err := http.Get("http://" + in + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "proto=HTTP/1.1" {
		t.Fatalf("HTTP/1 through inbound: %q", body)
	}
	c2 := &http.Client{Transport: h2cTransport(in)}
	resp, err = c2.Get("http://app/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "proto=HTTP/2.0" {
		t.Fatalf("HTTP/2 through inbound: %q", body)
	}

	// Metrics show inbound requests.
	mresp, err := http.Get("http://" + p.Addr("admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(mbody), `request_total{direction="inbound"`) {
		t.Fatalf("no inbound request_total in metrics:\n%s", mbody)
	}
}

// TestOpaqueTCPAfterDetectTimeout forwards a server-speaks-first protocol.
func TestOpaqueServerSpeaksFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprint(c, "220 hello\r\n")
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "echo %s", line)
			}()
		}
	}()
	cfg := &config.Config{
		Admin:         "127.0.0.1:0",
		Inbound:       config.Inbound{Listen: "127.0.0.1:0", App: ln.Addr().String()},
		Outbound:      config.Outbound{Listen: config.Off},
		DetectTimeout: routetable.Duration(200 * time.Millisecond),
	}
	p := startProxy(t, reparse(t, cfg))
	c, err := net.Dial("tcp", p.Addr("inbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	greeting, err := r.ReadString('\n')
	if err != nil || greeting != "220 hello\r\n" {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	fmt.Fprint(c, "EHLO x\r\n")
	echo, err := r.ReadString('\n')
	if err != nil || echo != "echo EHLO x\r\n" {
		t.Fatalf("echo %q, %v", echo, err)
	}
}

// TestConfigFileReload drives the real file watcher through the command's path.
func TestConfigFileWatch(t *testing.T) {
	a := startBackend(t, "web-0-5d8f-x0")
	b := startBackend(t, "web-1-5d8f-x1")
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	write := func(c *config.Config) {
		data, err := yamlOf(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	write(withListener(splitConfig([]*backend{a, b}, []uint32{1, 0}), addr))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 10)
	go func() {
		_ = config.Watch(ctx, path, func(c *config.Config) { _ = p.Reload(c) }, func(err error) {
			select {
			case errs <- err:
			default:
			}
		})
	}()
	get := func() string {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if got := get(); got != a.name {
		t.Fatalf("got %q, want %q", got, a.name)
	}
	write(withListener(splitConfig([]*backend{a, b}, []uint32{0, 1}), addr))
	waitFor(t, func() bool { return get() == b.name })
	if err := os.WriteFile(path, []byte("table: [this is not: valid"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error does not name the file: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no error reported for a garbage config file")
	}
	if got := get(); got != b.name {
		t.Fatalf("after a garbage config got %q, want the last good routing (%q)", got, b.name)
	}
}

// yamlOf renders a configuration the way a user would write it.
func yamlOf(c *config.Config) ([]byte, error) { return yaml.Marshal(c) }
