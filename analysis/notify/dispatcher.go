package notify

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Defaults of a Dispatcher.
const (
	// DefaultQueueSize is how many events wait for one provider.
	DefaultQueueSize = 64
	// DefaultMaxProviders is how many providers a Dispatcher delivers to
	// at once.
	DefaultMaxProviders = 128
)

// DispatcherOptions configure a Dispatcher.
type DispatcherOptions struct {
	// QueueSize is how many events may wait for one provider
	// (DefaultQueueSize when 0); more are dropped.
	QueueSize int
	// MaxProviders bounds the providers with a queue, and so the
	// goroutines (DefaultMaxProviders when 0); events for more are dropped.
	MaxProviders int
	// Logger reports failed and dropped notifications; slog.Default() when
	// nil.
	Logger *slog.Logger
}

// Stats counts what a Dispatcher did with the events it was given.
type Stats struct {
	// Enqueued events were accepted into a queue.
	Enqueued int64
	// Sent events were posted and answered 2xx.
	Sent int64
	// Failed events were posted and failed (no answer in time, a non-2xx,
	// no address, ...).
	Failed int64
	// Dropped events were not queued (a full queue, too many providers, a
	// closed dispatcher) or were still queued when it stopped.
	Dropped int64
	// Filtered events were not for the target (severity, weight steps).
	Filtered int64
	// TemplateErrors counts messages sent with the default text because
	// their template failed (the Sender's count).
	TemplateErrors int64
}

// Dispatcher delivers events in the background so that the caller never
// waits for a receiver. Each provider has its own queue and goroutine,
// created on first use: events to one provider arrive in order, and a
// provider that hangs (until the Sender's timeout) or fails delays only its
// own events. Enqueue never blocks; what does not fit is dropped, logged
// and counted.
//
// The goroutines stop when the context given to NewDispatcher is cancelled
// or Close is called; events still queued then are dropped.
type Dispatcher struct {
	sender *Sender
	opts   DispatcherOptions
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	lanes  map[string]chan delivery
	closed bool

	enqueued, sent, failed, dropped, filtered atomic.Int64
}

type delivery struct {
	target Target
	event  Event
}

// NewDispatcher returns a Dispatcher that sends through sender until ctx is
// cancelled or Close is called.
func NewDispatcher(ctx context.Context, sender *Sender, opts DispatcherOptions) *Dispatcher {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.MaxProviders <= 0 {
		opts.MaxProviders = DefaultMaxProviders
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	return &Dispatcher{sender: sender, opts: opts, ctx: ctx, cancel: cancel, lanes: map[string]chan delivery{}}
}

// Enqueue queues ev for t and returns at once. It reports whether the event
// was queued: false if the target does not want it (counted as Filtered) or
// if it was dropped (counted as Dropped and logged).
func (d *Dispatcher) Enqueue(t Target, ev Event) bool {
	if !t.Wants(ev) {
		d.filtered.Add(1)
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.ctx.Err() != nil {
		d.drop(t, ev, "the dispatcher is stopped")
		return false
	}
	key := laneKey(t)
	lane, ok := d.lanes[key]
	if !ok {
		if len(d.lanes) >= d.opts.MaxProviders {
			d.drop(t, ev, "too many alert providers")
			return false
		}
		lane = make(chan delivery, d.opts.QueueSize)
		d.lanes[key] = lane
		d.wg.Add(1)
		go d.run(lane)
	}
	select {
	case lane <- delivery{t, ev}:
		d.enqueued.Add(1)
		return true
	default:
		d.drop(t, ev, "the provider's queue is full")
		return false
	}
}

// Stats returns the counts so far.
func (d *Dispatcher) Stats() Stats {
	return Stats{
		Enqueued:       d.enqueued.Load(),
		Sent:           d.sent.Load(),
		Failed:         d.failed.Load(),
		Dropped:        d.dropped.Load(),
		Filtered:       d.filtered.Load(),
		TemplateErrors: d.sender.TemplateErrors(),
	}
}

// Close stops the dispatcher: a post in flight is cancelled, queued events
// are dropped, and Close returns when every goroutine has exited. Enqueue
// after Close drops. Close may be called more than once.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// run delivers one provider's events until the dispatcher stops.
func (d *Dispatcher) run(lane chan delivery) {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			// Enqueue sends only under d.mu while not closed: after this,
			// nothing more arrives, and abandon counts what is left.
			d.mu.Lock()
			d.closed = true
			d.mu.Unlock()
			d.abandon(lane)
			return
		case it := <-lane:
			if d.ctx.Err() != nil {
				d.drop(it.target, it.event, "the dispatcher stopped")
				continue // the Done case runs next
			}
			d.deliver(it)
		}
	}
}

func (d *Dispatcher) deliver(it delivery) {
	if err := d.sender.Send(d.ctx, it.target, it.event); err != nil {
		d.failed.Add(1)
		d.opts.Logger.Error("alert not delivered", "provider", it.target.String(),
			"canary", it.event.Namespace+"/"+it.event.Canary, "kind", it.event.Kind, "error", err)
		return
	}
	d.sent.Add(1)
}

// abandon counts the events left in a stopped lane as dropped.
func (d *Dispatcher) abandon(lane chan delivery) {
	for {
		select {
		case it := <-lane:
			d.drop(it.target, it.event, "the dispatcher stopped")
		default:
			return
		}
	}
}

func (d *Dispatcher) drop(t Target, ev Event, why string) {
	d.dropped.Add(1)
	d.opts.Logger.Error("alert dropped: "+why, "provider", t.String(),
		"canary", ev.Namespace+"/"+ev.Canary, "kind", ev.Kind)
}

// laneKey names a provider's queue: the AlertProvider, or for one without
// a name, its type and address.
func laneKey(t Target) string {
	if t.Name != "" {
		return t.Namespace + "/" + t.Name
	}
	return string(t.Spec.Type) + " " + t.Spec.Address
}
