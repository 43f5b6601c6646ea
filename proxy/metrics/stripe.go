package metrics

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Hot counters are striped: each one is a small array of cache-line-sized cells,
// a goroutine adds to the cell picked by a hash of its stack address, and a scrape
// sums the cells. Goroutines running on different cores then rarely write the
// same cache line, without a lock or per-call allocation.

// cacheLine is the padding unit. 64 bytes is the line size of every amd64 and
// most arm64 cores.
const cacheLine = 64

// maxStripes bounds memory per counter on machines with many cores.
const maxStripes = 16

// numStripes is a power of two: twice GOMAXPROCS at start, at least 2, at most
// maxStripes. It is fixed for the process so every striped value has the same size.
var numStripes, stripeMask = func() (int, uint32) {
	n := 2
	for n < 2*runtime.GOMAXPROCS(0) && n < maxStripes {
		n <<= 1
	}
	return n, uint32(n - 1)
}()

// stripe returns the cell index for the calling goroutine. Goroutine stacks live
// at distinct addresses, so hashing the address of a local variable spreads
// concurrent goroutines over the cells and keeps one goroutine on one cell (for
// a given call depth). It costs a multiply and does not allocate.
func stripe() uint32 {
	var marker byte
	p := uint64(uintptr(unsafe.Pointer(&marker)))
	// Stacks are at least 2 KiB apart; drop the bits that only encode the call depth.
	return uint32((p>>11)*0x9E3779B97F4A7C15>>40) & stripeMask
}

// cell is one padded counter cell.
type cell struct {
	n atomic.Uint64
	_ [cacheLine - 8]byte
}

// striped is a monotonic uint64 counter spread over cells.
type striped struct {
	cells []cell
}

func newStriped() striped { return striped{cells: make([]cell, numStripes)} }

// add adds n to the cell at index i (from stripe()).
func (s *striped) add(i uint32, n uint64) { s.cells[i&stripeMask].n.Add(n) }

// load sums the cells. Concurrent adds may or may not be included.
func (s *striped) load() uint64 {
	var t uint64
	for i := range s.cells {
		t += s.cells[i].n.Load()
	}
	return t
}
