package mesh

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/destination"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/localstore"
	"github.com/sluicehq/sluice/proxy"
	"github.com/sluicehq/sluice/proxy/config"
	"github.com/sluicehq/sluice/proxy/metrics"
)

func TestMain(m *testing.M) {
	// The control plane's servers log every certificate through the default
	// logger; keep the test output to failures.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	goleak.VerifyTestMain(m)
}

// deadline guards every wait; nothing here should take nearly as long.
const deadline = 30 * time.Second

// namespace is where every test workload lives.
const namespace = "shop"

// eventually polls cond until it holds, failing the test after deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logger is what proxies and servers log to: t.Log at warn and above, so a
// failing test shows what went wrong.
func logger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { // runs after everything registered later
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

// controlPlane is the identity and destination services (and optionally a
// scripted inbound policy service) on one gRPC server over a local store.
type controlPlane struct {
	t        *testing.T
	ca       *identity.CA
	tokens   *identity.StaticTokens
	store    *localstore.Store
	lifetime time.Duration
	policies policyFactory
	anchors  string // PEM file of the trust anchors
	dir      string

	mu      sync.Mutex
	addr    string
	srv     *grpc.Server
	dest    *destination.Server
	policy  meshv1.InboundPoliciesServer
	done    chan struct{}
	running bool
}

// policyFactory makes the inbound policy service of a control plane (over
// its store) each time the control plane starts; nil serves none.
type policyFactory func(*localstore.Store) meshv1.InboundPoliciesServer

// scripted serves the same scripted policy service at every start.
func scripted(s meshv1.InboundPoliciesServer) policyFactory {
	return func(*localstore.Store) meshv1.InboundPoliciesServer { return s }
}

// newControlPlane starts a control plane on a new port; leaf certificates
// live for lifetime (0: the default 24 h). policies, when set, makes the
// inbound policy service.
func newControlPlane(t *testing.T, lifetime time.Duration, policies policyFactory) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	ca, err := identity.LoadOrCreate(filepath.Join(dir, "ca"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	anchors := filepath.Join(dir, "anchors.pem")
	if err := os.WriteFile(anchors, ca.TrustAnchorPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := &controlPlane{
		t: t, ca: ca, tokens: &identity.StaticTokens{}, store: localstore.New(),
		lifetime: lifetime, policies: policies, anchors: anchors, dir: dir,
	}
	cp.start()
	t.Cleanup(cp.kill)
	return cp
}

// controlPlaneName is the identity the control plane's TLS certificate
// names, as `sluice up`'s.
var controlPlaneName = identity.ControlPlaneName("sluice-up", "", "")

// start serves on the control plane's address (a new port the first time,
// the same one after kill).
func (cp *controlPlane) start() {
	cp.t.Helper()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.running {
		return
	}
	addr := cp.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	eventually(cp.t, "binding the control plane to "+addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	cp.addr = ln.Addr().String()
	self, err := identity.NewSelfCertificate(cp.ca, controlPlaneName, 0)
	if err != nil {
		cp.t.Fatal(err)
	}
	cp.srv = grpc.NewServer(cptls.ServerOptions(cp.ca.TrustAnchors(), self.GetCertificate, cptls.MeshOnlyServices...)...)
	cp.dest = destination.NewServer(cp.store, logger(cp.t))
	meshv1.RegisterDestinationServer(cp.srv, cp.dest)
	meshv1.RegisterIdentityServer(cp.srv, identity.NewServer(cp.ca, cp.tokens, cp.lifetime))
	if cp.policies != nil {
		cp.policy = cp.policies(cp.store)
		meshv1.RegisterInboundPoliciesServer(cp.srv, cp.policy)
	}
	cp.done = make(chan struct{})
	srv, done := cp.srv, cp.done
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	cp.running = true
}

// kill stops the control plane at once: every stream and connection ends.
func (cp *controlPlane) kill() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if !cp.running {
		return
	}
	cp.dest.Close()
	if c, ok := cp.policy.(interface{ Close() }); ok {
		c.Close() // its streams wait for changes: end them
	}
	cp.srv.Stop()
	<-cp.done
	cp.running = false
}

// applyService stores a Service of namespace shop selecting app=selector,
// with one port per entry of ports (port -> appProtocol).
func (cp *controlPlane) applyService(name, selector string, ports map[int]string) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": selector}},
	}
	for _, port := range slices.Sorted(maps.Keys(ports)) {
		sp := corev1.ServicePort{Name: fmt.Sprintf("p%d", port), Port: int32(port)}
		if ap := ports[port]; ap != "" {
			sp.AppProtocol = &ap
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	cp.store.ApplyService(svc)
}

// applySplit stores the HTTPRoute web splitting web.shop:80 between
// web-v1 and web-v2.
func (cp *controlPlane) applySplit(t *testing.T, v1, v2 int) {
	t.Helper()
	var r gatewayv1.HTTPRoute
	doc := fmt.Sprintf(`
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 80}]
  rules:
  - backendRefs:
    - {name: web-v1, port: 80, weight: %d}
    - {name: web-v2, port: 80, weight: %d}
`, v1, v2)
	if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
		t.Fatal(err)
	}
	cp.store.ApplyHTTPRoute(&r)
}

// setSplit changes the weights of the web route in place, as the canary
// engine does.
func (cp *controlPlane) setSplit(t *testing.T, v1, v2 int32) {
	t.Helper()
	err := cp.store.UpdateHTTPRoute(namespace, "web", func(r *gatewayv1.HTTPRoute) error {
		refs := r.Spec.Rules[0].BackendRefs
		refs[0].Weight, refs[1].Weight = &v1, &v2
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// app is a workload's application: an HTTP/1 server answering with its name
// and recording what reached it.
type app struct {
	name string
	addr string

	mu        sync.Mutex
	protos    map[string]int
	clientIDs map[string]int // joined values of sluice-client-id, "" for none
	origProto int            // requests that still carried sluice-orig-proto
	hits      atomic.Int64
}

func startApp(t *testing.T, name string) *app {
	t.Helper()
	a := &app{name: name, protos: map[string]int{}, clientIDs: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		a.mu.Lock()
		a.protos[r.Proto]++
		a.clientIDs[strings.Join(r.Header.Values("Sluice-Client-Id"), ",")]++
		if r.Header.Get("Sluice-Orig-Proto") != "" {
			a.origProto++
		}
		a.mu.Unlock()
		a.hits.Add(1)
		w.Header().Set("X-Served-By", a.name)
		io.WriteString(w, a.name)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return a
}

// seen returns copies of what the app recorded.
func (a *app) seen() (protos, clientIDs map[string]int, origProto int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.protos), maps.Clone(a.clientIDs), a.origProto
}

// workload is an application with its sidecar proxy, registered in the
// store as a ready replica unless told otherwise.
type workload struct {
	name     string
	identity string
	app      *app
	proxy    *proxy.Proxy
}

type workloadOpts struct {
	name string
	// selector is the replica's app label (default: name).
	selector string
	// listeners are the services the application reaches through explicit
	// listeners of its proxy.
	listeners []string
	// defaultPolicy is the proxy's inbound.defaultPolicy.
	defaultPolicy string
	// advertised, when set, is the identity the store announces for the
	// replica instead of the one its proxy really has.
	advertised string
	// noReplica keeps the workload out of the store.
	noReplica bool
}

// startWorkload runs an application and its proxy in the mesh, waits until
// the proxy is ready, then registers the replica.
func (cp *controlPlane) startWorkload(t *testing.T, o workloadOpts) *workload {
	t.Helper()
	a := startApp(t, o.name)
	id := identity.Name(o.name, namespace, "", "")
	token, err := cp.tokens.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(cp.dir, o.name+".token")
	if err := os.WriteFile(tokenFile, token, 0o600); err != nil {
		t.Fatal(err)
	}
	pod := o.name + "-0"
	cfg := &config.Config{
		Admin:    "127.0.0.1:0",
		Inbound:  config.Inbound{Listen: "127.0.0.1:0", App: a.addr, DefaultPolicy: o.defaultPolicy},
		Outbound: config.Outbound{Listen: config.Off},
		ControlPlane: &config.ControlPlane{
			Address:         cp.addr,
			DestinationName: controlPlaneName,
			Identity:        id,
			TokenFile:       tokenFile,
			TrustAnchors:    cp.anchors,
			Namespace:       namespace,
			Workload:        namespace + "/" + pod,
		},
		ShutdownGrace: routetable.Duration(5 * time.Second),
		Labels:        map[string]string{"namespace": namespace, "deployment": o.name, "pod": pod},
	}
	for _, svc := range o.listeners {
		cfg.Listeners = append(cfg.Listeners, config.Listener{Listen: "127.0.0.1:0", Service: svc})
	}
	cfg.ApplyDefaults()
	p, err := proxy.New(cfg, logger(t))
	if err != nil {
		t.Fatalf("proxy %s: %v", o.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy %s: %v", o.name, err)
		}
	})
	select {
	case <-p.Bound():
	case err := <-done:
		t.Fatalf("proxy %s stopped: %v", o.name, err)
	case <-time.After(deadline):
		t.Fatalf("proxy %s did not bind its listeners", o.name)
	}
	eventually(t, "proxy "+o.name+" to be ready", func() bool { ok, _ := p.Ready(); return ok })
	w := &workload{name: o.name, identity: id, app: a, proxy: p}
	if !o.noReplica {
		sel := o.selector
		if sel == "" {
			sel = o.name
		}
		advertised := id
		if o.advertised != "" {
			advertised = o.advertised
		}
		cp.store.SetReplica(localstore.Replica{
			Namespace: namespace, Workload: o.name, Pod: pod, Revision: "1",
			Labels:   map[string]string{"app": sel},
			Address:  p.Addr("inbound"),
			Identity: advertised,
			Ready:    true,
		})
	}
	return w
}

// url is the address of w's listener for service, as an http:// URL.
func (w *workload) url(t *testing.T, service, path string) string {
	t.Helper()
	addr := w.proxy.ListenerAddr(service)
	if addr == "" {
		t.Fatalf("%s has no listener for %s", w.name, service)
	}
	return "http://" + addr + path
}

// metric sums the samples of a family whose labels include every pair of match.
func metric(p *proxy.Proxy, name string, match map[string]string) float64 {
	var sum float64
	for _, f := range p.Metrics().Gather() {
		for _, s := range f.Samples {
			if s.Name != name || !hasLabels(s.Labels, match) {
				continue
			}
			sum += s.Value
		}
	}
	return sum
}

func hasLabels(ls metrics.Labels, match map[string]string) bool {
	for k, v := range match {
		if got, ok := ls.Get(k); !ok || got != v {
			return false
		}
	}
	return true
}

// newClient is an HTTP/1 client that applications use; closed at the end.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// response is what a test request got.
type response struct {
	status int
	body   string
	header http.Header
}

// get sends GET url with extra headers and reads the whole response.
func get(c *http.Client, url string, header map[string]string) (response, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, body: string(body), header: resp.Header}, nil
}

// mustGet is get that fails the test unless the answer is 200.
func mustGet(t *testing.T, c *http.Client, url string, header map[string]string) response {
	t.Helper()
	r, err := get(c, url, header)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if r.status != 200 {
		t.Fatalf("GET %s: %d %s (%s)", url, r.status, strings.TrimSpace(r.body), r.header.Get("Sluice-Proxy-Error"))
	}
	return r
}

// opaqueGet sends one HTTP/1.0 request over a new TCP connection to addr (a
// listener of an opaque service: the bytes travel untouched) and returns the
// response body.
func opaqueGet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /tcp HTTP/1.0\r\nHost: web\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
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
}

// load sends requests from a few workers until stopped or until max
// requests, counting successes and failures.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

// startLoad runs workers calling fn until stop or max calls in total.
func startLoad(workers int, max int64, fn func() error) *load {
	l := &load{stop: make(chan struct{})}
	var sent atomic.Int64
	for range workers {
		l.wg.Go(func() {
			for sent.Add(1) <= max {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := fn(); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, err.Error())
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

// finish stops the workers and waits for them.
func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// check fails the test if any request failed.
func (l *load) check(t *testing.T, what string) {
	t.Helper()
	if n := l.failed.Load(); n > 0 {
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Errorf("%s: %d of %d requests failed; first errors:\n%s", what, n, n+l.ok.Load(), strings.Join(l.errs, "\n"))
	}
}

// waitOK waits until the load has had at least n more successes.
func (l *load) waitOK(t *testing.T, what string, n int64) {
	t.Helper()
	target := l.ok.Load() + n
	eventually(t, what, func() bool { return l.ok.Load() >= target || l.failed.Load() > 10 })
}

// expectBody checks a response body, as load functions do.
func expectBody(r response, err error, want string) error {
	if err != nil {
		return err
	}
	if r.status != 200 || r.body != want {
		return fmt.Errorf("got %d %q (%s), want 200 %q", r.status, r.body, r.header.Get("Sluice-Proxy-Error"), want)
	}
	return nil
}
