package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// hangingReceiver accepts a request, reports it on arrived, and answers
// only when release is closed or the request is cancelled.
type hangingReceiver struct {
	*httptest.Server
	arrived chan struct{}
	release chan struct{}
}

func newHangingReceiver(t *testing.T) *hangingReceiver {
	t.Helper()
	h := &hangingReceiver{arrived: make(chan struct{}, 256), release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h.arrived <- struct{}{}
		select {
		case <-h.release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(h.release)
		h.Close()
	})
	return h
}

func (h *hangingReceiver) waitArrival(t *testing.T) {
	t.Helper()
	select {
	case <-h.arrived:
	case <-time.After(guard):
		t.Fatal("no request reached the hanging receiver")
	}
}

func event(i int) Event {
	return Event{Kind: KindNewRevision, Canary: "podinfo", Namespace: "test", Revision: fmt.Sprintf("r%d", i), Severity: SeverityInfo, Time: t0}
}

func revisionOf(t *testing.T, body string) string {
	t.Helper()
	var m GenericMessage
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	return m.Revision
}

// waitStats polls until cond holds, failing after the guard.
func waitStats(t *testing.T, d *Dispatcher, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(guard)
	for {
		st := d.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never reached the expected state: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHangingReceiverDoesNotDelayOthers: a provider that never answers
// holds neither the caller nor the other providers.
func TestHangingReceiverDoesNotDelayOthers(t *testing.T) {
	hang := newHangingReceiver(t)
	good := newReceiver(t, 0, "")
	s := newSender(t, Options{Timeout: time.Hour}) // the hang lasts the whole test
	d := NewDispatcher(context.Background(), s, DispatcherOptions{QueueSize: 4, Logger: quietLogger()})
	defer d.Close()

	slow := Target{Name: "slow", Namespace: "test", Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: hang.URL}}
	fast := Target{Name: "fast", Namespace: "test", Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: good.URL}}

	if !d.Enqueue(slow, event(0)) || !d.Enqueue(fast, event(0)) {
		t.Fatal("first events not queued")
	}
	hang.waitArrival(t) // the slow provider's goroutine is now stuck in a post
	if got := revisionOf(t, good.next(t).body); got != "r0" {
		t.Fatalf("fast provider got %s first", got)
	}

	const more = 20
	queued := 0
	for i := 1; i <= more; i++ {
		if d.Enqueue(slow, event(i)) { // returns although the receiver hangs
			queued++
		}
		if !d.Enqueue(fast, event(i)) {
			t.Fatalf("event %d for the fast provider not queued", i)
		}
		// Delivered while the slow receiver still holds its first request.
		if got := revisionOf(t, good.next(t).body); got != fmt.Sprintf("r%d", i) {
			t.Fatalf("fast provider got %s, want r%d (in order)", got, i)
		}
	}
	if queued != 4 {
		t.Errorf("%d events queued for the hanging provider, want its queue size 4", queued)
	}
	st := waitStats(t, d, func(st Stats) bool { return st.Sent == more+1 })
	want := Stats{Enqueued: 1 + 1 + 4 + more, Sent: more + 1, Dropped: more - 4}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	select {
	case <-hang.arrived:
		t.Error("the hanging provider received a second request while its first hangs")
	default:
	}
}

// TestTimeoutThenNext: a post that hangs past the Sender's timeout fails,
// is counted, and the provider's next event is delivered.
func TestTimeoutThenNext(t *testing.T) {
	got := make(chan string, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		// The first event's post hangs until the sender gives up. It is told
		// by its revision, not by arriving first: a post the sender gave up on
		// before it reached the server never arrives.
		var m GenericMessage
		if json.Unmarshal(b, &m) == nil && m.Revision == "r1" {
			<-r.Context().Done()
			return
		}
		got <- string(b)
	}))
	defer srv.Close()

	// The timeout also bounds the second post, which must succeed: 1 s, not
	// the 50 ms that a loaded machine sometimes needed just to deliver it.
	s := newSender(t, Options{Timeout: time.Second})
	d := NewDispatcher(context.Background(), s, DispatcherOptions{Logger: quietLogger()})
	defer d.Close()
	target := Target{Name: "p", Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: srv.URL}}
	d.Enqueue(target, event(1))
	d.Enqueue(target, event(2))
	select {
	case b := <-got:
		if r := revisionOf(t, b); r != "r2" {
			t.Errorf("delivered %s, want r2", r)
		}
	case <-time.After(guard):
		t.Fatal("the event after a timed-out one was not delivered")
	}
	st := waitStats(t, d, func(st Stats) bool { return st.Sent == 1 })
	if st.Failed != 1 || st.Enqueued != 2 {
		t.Errorf("stats %+v, want 1 failed, 1 sent", st)
	}
}

func TestDropsAndClose(t *testing.T) {
	hang := newHangingReceiver(t)
	s := newSender(t, Options{Timeout: time.Hour})
	d := NewDispatcher(context.Background(), s, DispatcherOptions{QueueSize: 2, MaxProviders: 1, Logger: quietLogger()})
	target := Target{Name: "p", Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: hang.URL}}

	d.Enqueue(target, event(0))
	hang.waitArrival(t)
	for i := 1; i <= 5; i++ {
		d.Enqueue(target, event(i)) // 2 queued, 3 dropped
	}
	other := Target{Name: "q", Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: hang.URL}}
	if d.Enqueue(other, event(9)) {
		t.Error("a second provider was accepted beyond MaxProviders 1")
	}
	if d.Enqueue(Target{Name: "p", Severity: SeverityError, Spec: target.Spec}, event(10)) {
		t.Error("an info event was queued for an error-only target")
	}
	if st := d.Stats(); st != (Stats{Enqueued: 3, Dropped: 4, Filtered: 1}) {
		t.Errorf("before Close: %+v", st)
	}

	d.Close() // cancels the hung post and drops the 2 queued events
	if st := d.Stats(); st != (Stats{Enqueued: 3, Failed: 1, Dropped: 6, Filtered: 1}) {
		t.Errorf("after Close: %+v", st)
	}
	if d.Enqueue(target, event(11)) {
		t.Error("Enqueue after Close queued")
	}
	if d.Stats().Dropped != 7 {
		t.Errorf("Enqueue after Close not counted as dropped: %+v", d.Stats())
	}
	d.Close() // idempotent
}

func TestStopsOnContext(t *testing.T) {
	rc := newReceiver(t, 0, "")
	s := newSender(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, s, DispatcherOptions{Logger: quietLogger()})
	for i := range 3 {
		target := Target{Name: fmt.Sprintf("p%d", i), Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: rc.URL}}
		d.Enqueue(target, event(i))
	}
	waitStats(t, d, func(st Stats) bool { return st.Sent == 3 })
	cancel()
	done := make(chan struct{})
	go func() { d.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("the dispatcher's goroutines did not stop on cancellation")
	}
	if d.Enqueue(Target{Name: "p0", Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: rc.URL}}, event(4)) {
		t.Error("Enqueue after cancellation queued")
	}
	// goleak in TestMain checks that no goroutine is left.
}

func TestTemplateErrorsInStats(t *testing.T) {
	rc := newReceiver(t, 0, "")
	s := newSender(t, Options{})
	d := NewDispatcher(context.Background(), s, DispatcherOptions{Logger: quietLogger()})
	defer d.Close()
	d.Enqueue(Target{Name: "p", Template: "{{.Nope}}", Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: rc.URL}}, event(1))
	rc.next(t)
	st := waitStats(t, d, func(st Stats) bool { return st.Sent == 1 })
	if st.TemplateErrors != 1 {
		t.Errorf("stats %+v, want 1 template error", st)
	}
}
