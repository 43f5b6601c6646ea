package kubernetes

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/sluicehq/sluice/test/envtest"
)

func TestRunAsLeaderRejects(t *testing.T) {
	client := k8sfake.NewClientset()
	tests := []struct {
		name string
		le   LeaderElection
		want string
	}{
		{"no client", LeaderElection{Namespace: "sluice", Identity: "pod-1"}, "no Kubernetes client"},
		{"no namespace", LeaderElection{Client: client, Identity: "pod-1"}, `Lease "sluice-destination-status" has no namespace`},
		{"no identity", LeaderElection{Client: client, Namespace: "sluice"}, "Lease sluice/sluice-destination-status: this replica has no identity"},
		{"renew deadline beyond the lease", LeaderElection{Client: client, Namespace: "sluice", Identity: "pod-1",
			LeaseDuration: time.Second, RenewDeadline: 2 * time.Second}, "leaseDuration must be greater than renewDeadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := RunAsLeader(context.Background(), tt.le, func(context.Context) error {
				t.Error("work ran")
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RunAsLeader: %v; want an error saying %q", err, tt.want)
			}
		})
	}
}

// electedWriter is one replica's StatusWriter run by RunAsLeader, its
// HTTPRoute status writes counted.
type electedWriter struct {
	name    string
	src     *Source
	gw      gatewayclient.Interface
	leading atomic.Bool
	writes  atomic.Int64

	mu sync.Mutex
	// outOfTerm lists the status writes made while not leading.
	outOfTerm []string

	cancel context.CancelFunc
	done   chan error
}

// newElectedWriter makes a replica named name: its own Source on cfg and
// a Gateway API client whose status writes it counts.
func newElectedWriter(t *testing.T, cfg *rest.Config, name string) *electedWriter {
	t.Helper()
	w := &electedWriter{name: name}
	wcfg := rest.CopyConfig(cfg)
	wcfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/httproutes/") && strings.HasSuffix(req.URL.Path, "/status") {
				w.writes.Add(1)
				if !w.leading.Load() {
					w.mu.Lock()
					w.outOfTerm = append(w.outOfTerm, req.URL.Path)
					w.mu.Unlock()
				}
			}
			return rt.RoundTrip(req)
		})
	})
	gw, err := gatewayclient.NewForConfig(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewSourceForConfig(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	runSource(t, src)
	w.src, w.gw = src, gw
	return w
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// start runs the replica's elected writer until stop or the test's end.
func (w *electedWriter) start(t *testing.T, kube clientset.Interface) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan error, 1)
	le := LeaderElection{
		Client: kube, Namespace: "sluice", Identity: w.name,
		// Short, so that a lost Lease is seen quickly; generous enough for
		// a loaded machine to renew.
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 200 * time.Millisecond,
		OnLeading: w.leading.Store,
	}
	done := w.done
	go func() { done <- RunAsLeader(ctx, le, NewStatusWriter(w.src, w.gw, nil).Run) }()
	t.Cleanup(func() { w.stop(t) })
}

// stop cancels the replica's context and waits for RunAsLeader to return.
func (w *electedWriter) stop(t *testing.T) {
	t.Helper()
	if w.done == nil {
		return
	}
	w.cancel()
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("RunAsLeader of %s: %v", w.name, err)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("RunAsLeader of %s did not return after its context ended", w.name)
	}
	w.done = nil
	if w.leading.Load() {
		t.Errorf("%s still reports leading after RunAsLeader returned", w.name)
	}
}

// checkInTerm fails the test if the replica wrote status while not leading.
func (w *electedWriter) checkInTerm(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.outOfTerm) > 0 {
		t.Errorf("%s wrote status while not leading: %q", w.name, w.outOfTerm)
	}
}

// TestStatusLeaderElection runs two replicas' status writers against a real
// API server: only the leader writes; when the leader stops, the other takes
// over and writes, and the statuses are right; a new leader catches up on
// every route changed while nobody led; a leader whose Lease another
// replica took stops writing.
func TestStatusLeaderElection(t *testing.T) {
	cfg, c := envtest.Start(t)
	kube, err := clientset.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &apiServer{kube: kube, gw: gw, c: c}
	s.namespace(t, "sluice")
	s.namespace(t, "shop")
	s.service(t, "shop", "web")
	s.service(t, "shop", "web-primary")
	holder := func() string {
		l, err := kube.CoordinationV1().Leases("sluice").Get(context.Background(), StatusLeaseName, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return fmt.Sprint(err)
		}
		return *l.Spec.HolderIdentity
	}
	route := func(name string, parents ...string) {
		t.Helper()
		doc := fmt.Sprintf("metadata: {name: %s, namespace: shop}\nspec:\n  parentRefs:\n", name)
		for _, p := range parents {
			doc += fmt.Sprintf("  - {group: \"\", kind: Service, name: %s, port: 80}\n", p)
		}
		doc += "  rules:\n  - backendRefs:\n    - {name: web-primary, port: 80}\n"
		s.create(t, decode[gatewayv1.HTTPRoute](t, doc))
	}
	wantStatus := func(name, want string) {
		t.Helper()
		poll(t, "the status of route "+name, func() (bool, string) {
			got := s.routeStatus(t, "shop", name)
			return got == want, got
		})
	}

	a, b := newElectedWriter(t, cfg, "replica-a"), newElectedWriter(t, cfg, "replica-b")
	a.start(t, kube)
	poll(t, "replica-a to lead", func() (bool, string) { return a.leading.Load() && holder() == "replica-a", holder() })
	b.start(t, kube)

	// Only the leader writes.
	route("one", "web")
	route("two", "web", "missing")
	wantStatus("one", "web True/Accepted True/ResolvedRefs")
	wantStatus("two", "web True/Accepted True/ResolvedRefs; missing False/NoMatchingParent True/ResolvedRefs")
	if a.writes.Load() == 0 {
		t.Errorf("the leader replica-a wrote no status (holder %s)", holder())
	}
	if holder() == "replica-a" && b.writes.Load() != 0 {
		t.Errorf("replica-b wrote %d statuses while replica-a led", b.writes.Load())
	}

	// The leader stops: it writes nothing more; replica-b takes over and
	// writes what changes.
	a.stop(t)
	stoppedWrites := a.writes.Load()
	s.service(t, "shop", "missing")
	poll(t, "replica-b to lead", func() (bool, string) { return b.leading.Load() && holder() == "replica-b", holder() })
	wantStatus("two", "web True/Accepted True/ResolvedRefs; missing True/Accepted True/ResolvedRefs")
	route("three", "web", "later")
	wantStatus("three", "web True/Accepted True/ResolvedRefs; later False/NoMatchingParent True/ResolvedRefs")
	wantStatus("one", "web True/Accepted True/ResolvedRefs")
	if n := a.writes.Load(); n != stoppedWrites {
		t.Errorf("replica-a wrote %d statuses after it stopped", n-stoppedWrites)
	}

	// replica-b stops too: nobody leads while Service later appears. A new
	// leader catches up on acquiring the Lease, with no change to wake it.
	b.stop(t)
	s.service(t, "shop", "later")
	eventually(t, a.src, "replica-a's source to see Service later", func() (bool, string) {
		return a.src.service("shop", "later") != nil, "no Service shop/later"
	})
	if got := s.routeStatus(t, "shop", "three"); !strings.Contains(got, "later False/NoMatchingParent") {
		t.Fatalf("route three's status changed while nobody led: %s", got)
	}
	a.start(t, kube)
	wantStatus("three", "web True/Accepted True/ResolvedRefs; later True/Accepted True/ResolvedRefs")
	if h := holder(); h != "replica-a" {
		t.Errorf("the Lease is held by %s, want replica-a", h)
	}

	// Another replica takes the Lease over (as after replica-a could not
	// renew it): replica-a stops writing, and does not take it back.
	l, err := kube.CoordinationV1().Leases("sluice").Get(context.Background(), StatusLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	intruder, minute := "replica-c", int32(60)
	now := metav1.NewMicroTime(time.Now())
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime, l.Spec.AcquireTime = &intruder, &minute, &now, &now
	if _, err := kube.CoordinationV1().Leases("sluice").Update(context.Background(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// OnLeading(false) comes once the writer has returned.
	poll(t, "replica-a to stop leading after losing the Lease", func() (bool, string) { return !a.leading.Load(), "leading" })
	lostWrites := a.writes.Load()
	route("four", "web")
	eventually(t, a.src, "replica-a's source to see route four", func() (bool, string) {
		return len(a.src.routes.GetIndexer().List()) == 4, "fewer than 4 routes"
	})
	if got := s.routeStatus(t, "shop", "four"); got != "" {
		t.Errorf("route four got a status while replica-c (which writes nothing) holds the Lease: %s", got)
	}
	if n := a.writes.Load(); n != lostWrites {
		t.Errorf("replica-a wrote %d statuses after losing the Lease", n-lostWrites)
	}
	if h := holder(); h != intruder {
		t.Errorf("the Lease is held by %s; replica-a must not take back a Lease another holds", h)
	}
	a.checkInTerm(t)
	b.checkInTerm(t)
}

// fastElection is a LeaderElection on a fake API with short timings.
func fastElection(client clientset.Interface, onLeading func(bool)) LeaderElection {
	return LeaderElection{
		Client: client, Namespace: "sluice", Identity: "replica-a",
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 50 * time.Millisecond,
		OnLeading: onLeading,
	}
}

// TestRunAsLeaderStop: stopping a leader stops its work first, then
// reports it no longer leads, then releases the Lease.
func TestRunAsLeaderStop(t *testing.T) {
	client := k8sfake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	working := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- RunAsLeader(ctx, fastElection(client, func(leading bool) { record(fmt.Sprint("leading=", leading)) }),
			func(wctx context.Context) error {
				record("work started")
				close(working)
				<-wctx.Done()
				record("work stopped")
				return nil
			})
	}()
	select {
	case <-working:
	case <-time.After(waitTimeout):
		t.Fatal("the work never started")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunAsLeader: %v", err)
	}
	want := []string{"leading=true", "work started", "work stopped", "leading=false"}
	if fmt.Sprint(events) != fmt.Sprint(want) {
		t.Errorf("events %q, want %q", events, want)
	}
	l, err := client.CoordinationV1().Leases("sluice").Get(context.Background(), StatusLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := l.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("the Lease is still held by %q after a clean stop", *h)
	}
}

// TestRunAsLeaderWorkFails: a work that fails gives the Lease up and runs
// again once this replica leads again.
func TestRunAsLeaderWorkFails(t *testing.T) {
	client := k8sfake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs atomic.Int32
	again := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- RunAsLeader(ctx, fastElection(client, nil), func(wctx context.Context) error {
			if runs.Add(1) == 2 {
				close(again)
				<-wctx.Done()
				return nil
			}
			return fmt.Errorf("broken")
		})
	}()
	select {
	case <-again:
	case <-time.After(waitTimeout):
		t.Fatalf("the work ran %d times, want it run again after failing", runs.Load())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunAsLeader: %v", err)
	}
}
