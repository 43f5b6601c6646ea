package detect

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// DefaultOpaquePorts are the ports where detection is skipped and connections are
// forwarded as opaque TCP, as Linkerd does by default: SMTP (25, 587), MySQL
// (3306, 4444 for Galera), PostgreSQL (5432), Redis (6379), Elasticsearch
// transport (9300) and memcached (11211). Most of them are server-speaks-first,
// where detection would only add its timeout.
var DefaultOpaquePorts = []int{25, 587, 3306, 4444, 5432, 6379, 9300, 11211}

// PortSet is an immutable set of TCP ports (1-65535) with a constant-time,
// allocation-free Has. The zero value is the empty set. Copies share storage,
// which is safe because a PortSet never changes after it is made.
type PortSet struct {
	bits *[65536 / 64]uint64
}

// NewPortSet returns the set of the given ports; values outside 1-65535 are ignored.
func NewPortSet(ports ...int) PortSet {
	var p PortSet
	for _, port := range ports {
		if port >= 1 && port <= 65535 {
			p.add(port)
		}
	}
	return p
}

func (p *PortSet) add(port int) {
	if p.bits == nil {
		p.bits = new([65536 / 64]uint64)
	}
	p.bits[port/64] |= 1 << (uint(port) % 64)
}

// ParsePorts parses a comma-separated list of ports and inclusive ranges, such
// as "25,587,8000-8010" (the format of Linkerd's opaque-ports annotation).
// Spaces around items are ignored and an empty string is the empty set.
func ParsePorts(s string) (PortSet, error) {
	var p PortSet
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		from, err := parsePort(strings.TrimSpace(lo))
		if err != nil {
			return PortSet{}, fmt.Errorf("ports %q: %w", s, err)
		}
		to := from
		if isRange {
			if to, err = parsePort(strings.TrimSpace(hi)); err != nil {
				return PortSet{}, fmt.Errorf("ports %q: %w", s, err)
			}
			if to < from {
				return PortSet{}, fmt.Errorf("ports %q: range %q ends before it starts", s, item)
			}
		}
		for port := from; port <= to; port++ {
			p.add(port)
		}
	}
	return p, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q: must be a number from 1 to 65535", s)
	}
	return n, nil
}

// Has reports whether port is in the set.
func (p PortSet) Has(port int) bool {
	if p.bits == nil || port < 0 || port > 65535 {
		return false
	}
	return p.bits[port/64]&(1<<(uint(port)%64)) != 0
}

// Len returns the number of ports in the set.
func (p PortSet) Len() int {
	if p.bits == nil {
		return 0
	}
	n := 0
	for _, w := range p.bits {
		n += bits.OnesCount64(w)
	}
	return n
}

// Ports returns the ports in the set in ascending order.
func (p PortSet) Ports() []int {
	if p.bits == nil {
		return nil
	}
	var out []int
	for i, w := range p.bits {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			out = append(out, i*64+b)
			w &^= 1 << uint(b)
		}
	}
	return out
}

// String formats the set in the form ParsePorts reads, with ranges collapsed.
func (p PortSet) String() string {
	ports := p.Ports()
	var sb strings.Builder
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if sb.Len() > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strconv.Itoa(ports[i]))
		if j > i {
			sb.WriteByte('-')
			sb.WriteString(strconv.Itoa(ports[j]))
		}
		i = j + 1
	}
	return sb.String()
}
