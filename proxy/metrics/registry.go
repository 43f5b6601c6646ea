// Package metrics is the proxy's Prometheus registry: Linkerd-compatible HTTP and
// TCP series (request_total, response_total, response_latency_ms, tcp_*), generic
// counters, gauges and scrape-time callbacks, written in the Prometheus text
// exposition format 0.0.4.
//
// It is built for the request path: handles are looked up once and cached by the
// caller, and recording on a handle (HTTPStats.Request, HTTPStats.Response,
// TCPStats.AddRead, ...) takes no lock and does not allocate. Counts are striped
// over cache-line-sized cells so that cores do not contend on one word; a scrape
// sums the cells.
//
// Series are never removed: label values should come from bounded sets (the
// mesh's own services and identities, not arbitrary client input).
package metrics

import (
	"fmt"
	"maps"
	"sync"
)

// Type is a metric family's Prometheus type.
type Type string

// The family types the registry writes.
const (
	TypeCounter   Type = "counter"
	TypeGauge     Type = "gauge"
	TypeHistogram Type = "histogram"
)

// Names of the families the HTTP and TCP handles record, as Linkerd's proxy names them.
const (
	RequestTotal       = "request_total"
	ResponseTotal      = "response_total"
	ResponseLatencyMs  = "response_latency_ms"
	TCPOpenTotal       = "tcp_open_total"
	TCPOpenConnections = "tcp_open_connections"
	TCPCloseTotal      = "tcp_close_total"
	TCPReadBytesTotal  = "tcp_read_bytes_total"
	TCPWriteBytesTotal = "tcp_write_bytes_total"
)

// familyMeta is what the registry knows about a family name.
type familyMeta struct {
	typ  Type
	help string
}

// builtinFamilies are declared by every registry.
var builtinFamilies = map[string]familyMeta{
	RequestTotal:       {TypeCounter, "Total count of HTTP requests."},
	ResponseTotal:      {TypeCounter, "Total count of HTTP responses."},
	ResponseLatencyMs:  {TypeHistogram, "Elapsed times between a request's headers being received and its response's headers being sent, in milliseconds."},
	TCPOpenTotal:       {TypeCounter, "Total count of opened connections."},
	TCPOpenConnections: {TypeGauge, "Number of currently open connections."},
	TCPCloseTotal:      {TypeCounter, "Total count of closed connections."},
	TCPReadBytesTotal:  {TypeCounter, "Total count of bytes read from peers."},
	TCPWriteBytesTotal: {TypeCounter, "Total count of bytes written to peers."},
}

// Registry holds every series of one proxy. The zero value is not usable; call
// NewRegistry. All methods are safe for concurrent use.
type Registry struct {
	static Labels

	mu       sync.RWMutex
	meta     map[string]familyMeta
	http     map[string]*HTTPStats
	tcp      map[string]*TCPStats
	counters map[string]*Counter
	gauges   map[string]*Gauge
	funcs    map[funcKey]*funcEntry
}

// funcKey identifies a scrape-time callback.
type funcKey struct{ name, key string }

// funcEntry is one registered scrape-time callback.
type funcEntry struct {
	name string
	fn   func(emit func(labels Labels, value float64))
}

// NewRegistry returns an empty registry. The static labels (namespace, deployment,
// pod, ...) are appended to every series it writes, after the series' own labels.
func NewRegistry(static Labels) *Registry {
	return &Registry{
		static:   append(Labels(nil), static...),
		meta:     maps.Clone(builtinFamilies),
		http:     make(map[string]*HTTPStats),
		tcp:      make(map[string]*TCPStats),
		counters: make(map[string]*Counter),
		gauges:   make(map[string]*Gauge),
		funcs:    make(map[funcKey]*funcEntry),
	}
}

// keyBufSize is the stack buffer for map keys; longer keys spill to the heap.
const keyBufSize = 256

// declareLocked records name as a family of type typ, or checks that it already is
// one. Declaring a name with two types is a programming error and panics: the
// exposition would be invalid. r.mu must be held for writing.
func (r *Registry) declareLocked(name string, typ Type, help string) {
	if m, ok := r.meta[name]; ok {
		if m.typ != typ {
			panic(fmt.Sprintf("metrics: family %q is a %s, cannot use it as a %s", name, m.typ, typ))
		}
		return
	}
	r.meta[name] = familyMeta{typ: typ, help: help}
}

// HTTP returns the stats handle for HTTP traffic in direction ("inbound" or
// "outbound") with the given labels (authority, tls, client_id/server_id, dst_*,
// ...), creating it on first use. The same direction and labels, in the same
// order, always return the same handle. A hit takes a read lock and does not
// allocate when the key is short, but callers should still cache the handle.
//
// Every series of the handle is labelled direction, then labels, then the
// metric's own labels, then the registry's static labels; when a name repeats,
// its first occurrence wins.
func (r *Registry) HTTP(direction string, labels Labels) *HTTPStats {
	var buf [keyBufSize]byte
	k := appendKey(buf[:0], direction, labels)
	r.mu.RLock()
	s := r.http[string(k)]
	r.mu.RUnlock()
	if s != nil {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.http[string(k)]; s != nil {
		return s
	}
	s = newHTTPStats(direction, labels, r.static)
	r.http[string(k)] = s
	return s
}

// TCP returns the stats handle for connections in direction with the given
// labels, creating it on first use, like HTTP.
func (r *Registry) TCP(direction string, labels Labels) *TCPStats {
	var buf [keyBufSize]byte
	k := appendKey(buf[:0], direction, labels)
	r.mu.RLock()
	t := r.tcp[string(k)]
	r.mu.RUnlock()
	if t != nil {
		return t
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.tcp[string(k)]; t != nil {
		return t
	}
	t = newTCPStats(direction, labels, r.static)
	r.tcp[string(k)] = t
	return t
}

// Counter returns the counter series name{labels}, creating it (and its family,
// with help) on first use. The name is sanitized to the Prometheus alphabet. It
// panics if name is already a family of another type.
func (r *Registry) Counter(name, help string, labels Labels) *Counter {
	var buf [keyBufSize]byte
	k := appendKey(buf[:0], name, labels)
	r.mu.RLock()
	c := r.counters[string(k)]
	r.mu.RUnlock()
	if c != nil {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.counters[string(k)]; c != nil {
		return c
	}
	name = sanitizeMetricName(name)
	r.declareLocked(name, TypeCounter, help)
	c = &Counter{name: name, s: newSeries("", labels, r.static), stripe: newStriped()}
	r.counters[string(k)] = c
	return c
}

// Gauge returns the gauge series name{labels}, creating it on first use, like Counter.
func (r *Registry) Gauge(name, help string, labels Labels) *Gauge {
	var buf [keyBufSize]byte
	k := appendKey(buf[:0], name, labels)
	r.mu.RLock()
	g := r.gauges[string(k)]
	r.mu.RUnlock()
	if g != nil {
		return g
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if g := r.gauges[string(k)]; g != nil {
		return g
	}
	name = sanitizeMetricName(name)
	r.declareLocked(name, TypeGauge, help)
	g = &Gauge{name: name, s: newSeries("", labels, r.static)}
	r.gauges[string(k)] = g
	return g
}

// GaugeFunc registers fn to be called at every scrape; each emit call adds one
// sample to the gauge family name (static labels are appended). Registering again
// under the same name replaces the previous callback; use GaugeFuncKey when
// several owners contribute to one family. fn runs without the registry's lock
// held (it may look up other series) and must be safe to call concurrently with
// itself. The returned func unregisters the callback (and does nothing if it
// has since been replaced).
func (r *Registry) GaugeFunc(name, help string, fn func(emit func(labels Labels, value float64))) (unregister func()) {
	return r.registerFunc(name, "", help, TypeGauge, fn)
}

// GaugeFuncKey is GaugeFunc for one of several callbacks feeding the family name:
// a callback replaces only the one registered under the same name and key (for
// example one balancer per key). Samples with identical labels are summed.
func (r *Registry) GaugeFuncKey(name, key, help string, fn func(emit func(labels Labels, value float64))) (unregister func()) {
	return r.registerFunc(name, key, help, TypeGauge, fn)
}

// CounterFunc is GaugeFunc for a counter family whose values are read at scrape
// time from elsewhere (such as process_cpu_seconds_total).
func (r *Registry) CounterFunc(name, help string, fn func(emit func(labels Labels, value float64))) (unregister func()) {
	return r.registerFunc(name, "", help, TypeCounter, fn)
}

// CounterFuncKey is CounterFunc for one of several callbacks feeding the family
// name, as GaugeFuncKey is for gauges.
func (r *Registry) CounterFuncKey(name, key, help string, fn func(emit func(labels Labels, value float64))) (unregister func()) {
	return r.registerFunc(name, key, help, TypeCounter, fn)
}

func (r *Registry) registerFunc(name, key, help string, typ Type, fn func(emit func(Labels, float64))) func() {
	name = sanitizeMetricName(name)
	k := funcKey{name: name, key: key}
	e := &funcEntry{name: name, fn: fn}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.declareLocked(name, typ, help)
	r.funcs[k] = e
	return func() {
		r.mu.Lock()
		if r.funcs[k] == e {
			delete(r.funcs, k)
		}
		r.mu.Unlock()
	}
}
