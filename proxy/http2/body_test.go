package http2

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// chunks is a reader returning one chunk per Read.
type chunks struct {
	parts []string
	err   error // returned after the parts (io.EOF when nil)
	reads int
}

func (c *chunks) Read(p []byte) (int, error) {
	c.reads++
	if len(c.parts) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		return 0, io.EOF
	}
	n := copy(p, c.parts[0])
	if n == len(c.parts[0]) {
		c.parts = c.parts[1:]
	} else {
		c.parts[0] = c.parts[0][n:]
	}
	return n, nil
}

func TestReplayBody(t *testing.T) {
	cases := []struct {
		name         string
		parts        []string
		limit        int64
		firstReads   int // bytes the first view reads before the retry decision (-1: all)
		wantReplay   bool
		wantComplete bool
	}{
		{"small body read whole", []string{"hello ", "world"}, 64, -1, true, true},
		{"small body read in part", []string{"hello ", "world"}, 64, 6, true, false},
		{"nothing read yet", []string{"hello"}, 64, 0, true, false},
		{"over the limit", []string{"0123456789", "abcdefghij"}, 15, -1, false, false},
		{"limit 0 untouched", []string{"abc"}, 0, 0, true, false},
		{"limit 0 read", []string{"abc"}, 0, 1, false, false},
		{"exactly the limit", []string{"0123456789"}, 10, -1, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			full := strings.Join(tc.parts, "")
			rb := newReplayBody(&chunks{parts: append([]string(nil), tc.parts...)}, tc.limit)
			v1 := rb.view()
			var got []byte
			if tc.firstReads < 0 {
				b, err := io.ReadAll(v1)
				if err != nil {
					t.Fatalf("first view: %v", err)
				}
				got = b
			} else {
				got = make([]byte, tc.firstReads)
				if _, err := io.ReadFull(v1, got); err != nil {
					t.Fatalf("first view: %v", err)
				}
			}
			if !strings.HasPrefix(full, string(got)) {
				t.Fatalf("first view read %q, not a prefix of %q", got, full)
			}
			if ok := rb.claim([]*bodyView{v1}); ok != tc.wantReplay {
				t.Fatalf("claim = %v, want %v", ok, tc.wantReplay)
			}
			if _, err := v1.Read(make([]byte, 1)); !errors.Is(err, errViewClosed) && tc.wantReplay {
				t.Errorf("claimed view still reads: %v", err)
			}
			_, complete := rb.complete()
			if complete != tc.wantComplete {
				t.Errorf("complete = %v, want %v", complete, tc.wantComplete)
			}
			if !tc.wantReplay {
				if _, err := io.ReadAll(rb.view()); err == nil && len(got) > 0 {
					t.Error("a new view replayed a body that overflowed")
				}
				return
			}
			b, err := io.ReadAll(rb.view())
			if err != nil || string(b) != full {
				t.Fatalf("second view read %q, %v; want %q", b, err, full)
			}
			whole, ok := rb.complete()
			if fits := int64(len(full)) <= tc.limit; ok != fits || (ok && string(whole) != full) {
				t.Errorf("complete() = %q, %v after reading it all; want it whole only if it fits the limit (%v)", whole, ok, fits)
			}
		})
	}
}

// TestReplayBodyReadsNeverCrossTheLimit: while under the limit, a read from the
// client is capped at the room left, so an abandoned view's read in flight can
// never spoil the replay.
func TestReplayBodyReadsNeverCrossTheLimit(t *testing.T) {
	src := &chunks{parts: []string{strings.Repeat("a", 100)}}
	rb := newReplayBody(src, 10)
	v := rb.view()
	n, err := v.Read(make([]byte, 64))
	if err != nil || n != 10 {
		t.Fatalf("read %d, %v; want 10 (capped at the limit)", n, err)
	}
	if !rb.replayable() {
		t.Fatal("not replayable at exactly the limit")
	}
	n, _ = v.Read(make([]byte, 64))
	if n == 0 || rb.replayable() {
		t.Fatalf("read %d past the limit, replayable=%v; want data and not replayable", n, rb.replayable())
	}
}

// blockingReader blocks every Read until release is closed.
type blockingReader struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
	data    string
}

func (b *blockingReader) Read(p []byte) (int, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	if b.data == "" {
		return 0, io.EOF
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

// TestReplayBodyAbandonedRead: a view blocked reading from the client while a
// retry starts; the new view waits for that read, then sees its bytes.
func TestReplayBodyAbandonedRead(t *testing.T) {
	src := &blockingReader{entered: make(chan struct{}), release: make(chan struct{}), data: "late"}
	rb := newReplayBody(src, 64)
	old := rb.view()
	oldDone := make(chan struct{})
	go func() {
		defer close(oldDone)
		_, _ = old.Read(make([]byte, 16))
	}()
	<-src.entered
	if rb.claim([]*bodyView{old}) != true {
		t.Fatal("claim failed under the limit")
	}
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(rb.view())
		got <- string(b)
	}()
	close(src.release)
	select {
	case s := <-got:
		if s != "late" {
			t.Fatalf("new view read %q, want %q", s, "late")
		}
	case <-time.After(guard):
		t.Fatal("new view never finished")
	}
	<-oldDone
}

// TestReplayBodyClientError: a failed client read is the body's failure, and
// nothing can be replayed after it.
func TestReplayBodyClientError(t *testing.T) {
	boom := errors.New("stream reset by client")
	rb := newReplayBody(&chunks{parts: []string{"abc"}, err: boom}, 64)
	if _, err := io.ReadAll(rb.view()); !errors.Is(err, boom) {
		t.Fatalf("read error %v, want %v", err, boom)
	}
	if !rb.failed() || rb.replayable() {
		t.Fatalf("failed=%v replayable=%v, want true, false", rb.failed(), rb.replayable())
	}
}
