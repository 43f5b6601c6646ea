package http2

import (
	"errors"
	"io"
	"sync"
)

// Request bodies and retries.
//
// A request body is streamed upstream as the client sends it: nothing waits for a
// whole body, so client-streaming and bidirectional gRPC calls flow. To allow a
// retry anyway, the body is read through a replayBody that remembers the bytes
// read so far, up to a limit (retry.MaxBufferedBody when the route retries or
// mirrors, otherwise 0). Each attempt reads through its own view: a view first
// replays the remembered bytes, then continues from the client. As long as no
// more than the limit has been read from the client, the body is replayable,
// whatever its length or framing: a unary gRPC call whose message fits, a small
// body of known length, and any body the upstream refused before reading more
// than the limit. Once more than the limit was read the remembered bytes are
// dropped and the body is no longer replayable. A body whose declared length is
// above the limit is not remembered at all.

var (
	// errBodyNotReplayable is returned by a view that needs bytes no longer kept.
	errBodyNotReplayable = errors.New("request body is no longer replayable: more than the retry buffer was sent")
	// errViewClosed is returned by a view read after the attempt ended.
	errViewClosed = errors.New("request body: attempt ended")
)

// replayBody is the shared state of one request body read by successive attempts.
type replayBody struct {
	mu    sync.Mutex
	cond  sync.Cond
	src   io.Reader
	limit int64

	buf      []byte // the first bytes read from src, while !overflow
	n        int64  // bytes read from src so far
	reading  bool   // a view is inside src.Read
	eof      bool
	err      error // a read error other than io.EOF
	overflow bool  // more than limit was read: buf is dropped
}

func newReplayBody(src io.Reader, limit int64) *replayBody {
	rb := &replayBody{src: src, limit: limit}
	rb.cond.L = &rb.mu
	return rb
}

// replayable reports whether a new view could replay everything read so far.
func (rb *replayBody) replayable() bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.replayableLocked()
}

func (rb *replayBody) replayableLocked() bool {
	// A read in flight at the limit will overflow as soon as it returns data.
	return !rb.overflow && rb.err == nil && !(rb.reading && rb.n >= rb.limit)
}

// claim atomically checks that the body can still be replayed and, if so,
// detaches the given views of the attempt being abandoned, so that nothing they
// read afterwards can make it unreplayable. It reports whether the body is replayable.
func (rb *replayBody) claim(views []*bodyView) bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if !rb.replayableLocked() {
		return false
	}
	for _, v := range views {
		v.closed = true
	}
	rb.cond.Broadcast()
	return true
}

// failed reports whether reading the client's body failed (a reset stream, a
// body longer or shorter than its declared length): the client's fault.
func (rb *replayBody) failed() bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.err != nil
}

// complete returns the whole body when it was read to its end within the limit.
func (rb *replayBody) complete() ([]byte, bool) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if !rb.eof || rb.overflow || rb.err != nil {
		return nil, false
	}
	return rb.buf, true
}

// view returns a reader from the start of the body.
func (rb *replayBody) view() *bodyView { return &bodyView{rb: rb} }

// bodyView is one attempt's reader of a replayBody. Close detaches it without
// touching the client's stream, so that another attempt can go on reading.
type bodyView struct {
	rb     *replayBody
	pos    int64
	closed bool // guarded by rb.mu
}

// Read replays remembered bytes, then reads from the client.
func (v *bodyView) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	rb := v.rb
	rb.mu.Lock()
	for {
		switch {
		case v.closed:
			rb.mu.Unlock()
			return 0, errViewClosed
		case v.pos < rb.n:
			if rb.overflow {
				rb.mu.Unlock()
				return 0, errBodyNotReplayable
			}
			n := copy(p, rb.buf[v.pos:])
			v.pos += int64(n)
			rb.mu.Unlock()
			return n, nil
		case rb.eof:
			rb.mu.Unlock()
			return 0, io.EOF
		case rb.err != nil:
			err := rb.err
			rb.mu.Unlock()
			return 0, err
		case !rb.reading:
			rb.reading = true
			if room := rb.limit - rb.n; !rb.overflow && room > 0 && int64(len(p)) > room {
				// Never cross the limit in one read: a read in flight for a view that
				// is being abandoned then cannot spoil the replay (see claim).
				p = p[:room]
			}
			rb.mu.Unlock()
			n, err := rb.src.Read(p)
			rb.mu.Lock()
			rb.reading = false
			if n > 0 {
				if !rb.overflow && rb.n+int64(n) <= rb.limit {
					rb.buf = append(rb.buf, p[:n]...)
				} else if !rb.overflow {
					rb.overflow = true
					rb.buf = nil
				}
				rb.n += int64(n)
				v.pos += int64(n)
			}
			switch {
			case err == io.EOF:
				rb.eof = true
			case err != nil:
				rb.err = err
			}
			rb.cond.Broadcast()
			rb.mu.Unlock()
			return n, err
		default:
			rb.cond.Wait()
		}
	}
}

// Close detaches the view; a Read blocked waiting for another view returns.
func (v *bodyView) Close() error {
	v.rb.mu.Lock()
	v.closed = true
	v.rb.cond.Broadcast()
	v.rb.mu.Unlock()
	return nil
}
