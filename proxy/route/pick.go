package route

import (
	"math/bits"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// maxRejections bounds the rejection loop of uniform. With a real random source the
// chance of needing more than one retry is below 2^-40, so the bound never changes
// the distribution; it only keeps a degenerate source (a constant) from spinning.
const maxRejections = 16

// PickBackend chooses a backend by weight with a random draw, skipping any for
// which ready(key) is false (its weight counts as 0 for this pick, as Linkerd does).
// ok=false when every weight is 0 or no backend is ready (answer 503). A nil ready
// treats every backend as ready. An invalid backend (Service "") is never skipped:
// it keeps its share and the caller answers 500 when it is picked.
//
// The draw is exact: an integer uniform in [0, sum of weights) by Lemire's
// multiply-shift with rejection, then a walk over cumulative weights.
func (r *Rule) PickBackend(ready func(serviceKey string) bool, rnd func() uint64) (b *routetable.Backend, ok bool) {
	bs := r.Spec.Backends
	if ready == nil {
		if r.total == 0 {
			return nil, false
		}
		if len(bs) == 1 {
			return &bs[0], true
		}
		x := uniform(r.total, rnd)
		for i, c := range r.cum {
			if x < c {
				return &bs[i], true
			}
		}
		return nil, false // unreachable: x < total = cum[last]
	}

	switch len(bs) {
	case 0:
		return nil, false
	case 1:
		if r.total == 0 || !available(&bs[0], ready) {
			return nil, false
		}
		return &bs[0], true
	}

	// Cumulative weights of the available backends; ready is asked once per backend
	// so that a concurrent readiness change cannot make the walk miss.
	var buf [64]uint64
	var cum []uint64
	if len(bs) <= len(buf) {
		cum = buf[:len(bs)]
	} else {
		cum = make([]uint64, len(bs))
	}
	var total uint64
	prev := uint64(0)
	for i := range bs {
		w := r.cum[i] - prev
		prev = r.cum[i]
		if w != 0 && available(&bs[i], ready) {
			total += w
		}
		cum[i] = total
	}
	if total == 0 {
		return nil, false
	}
	x := uniform(total, rnd)
	for i, c := range cum {
		if x < c {
			return &bs[i], true
		}
	}
	return nil, false // unreachable
}

func available(b *routetable.Backend, ready func(string) bool) bool {
	return b.Service == "" || ready(b.Service)
}

// uniform returns an integer uniformly distributed in [0, n), n > 0.
func uniform(n uint64, rnd func() uint64) uint64 {
	hi, lo := bits.Mul64(rnd(), n)
	if lo < n {
		t := -n % n // 2^64 mod n
		for i := 0; lo < t && i < maxRejections; i++ {
			hi, lo = bits.Mul64(rnd(), n)
		}
	}
	return hi
}

// Mirrors returns the mirror targets (Service keys) chosen for this request; each
// mirror fires with Numerator/Denominator probability. It returns nil without
// allocating when the rule has no mirrors, and a shared slice (which the caller
// must not modify) when every mirror fires; it allocates only when several
// mirrors fire with partial probability.
func (r *Rule) Mirrors(rnd func() uint64) []string {
	switch {
	case len(r.mirrors) == 0:
		return nil
	case r.mirrorAlways:
		return r.mirrorKeys
	case len(r.mirrors) == 1:
		if r.mirrors[0].fires(rnd) {
			return r.mirrorKeys
		}
		return nil
	}
	if len(r.mirrors) > 64 {
		var out []string
		for i := range r.mirrors {
			if r.mirrors[i].fires(rnd) {
				out = append(out, r.mirrors[i].backend)
			}
		}
		return out
	}
	var fired [64]bool
	n := 0
	for i := range r.mirrors {
		if r.mirrors[i].fires(rnd) {
			fired[i] = true
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case len(r.mirrors):
		return r.mirrorKeys
	}
	out := make([]string, 0, n)
	for i := range r.mirrors {
		if fired[i] {
			out = append(out, r.mirrors[i].backend)
		}
	}
	return out
}

func (m *mirror) fires(rnd func() uint64) bool {
	return m.always || uniform(m.den, rnd) < m.num
}
