package metrics

// TCPStats records the tcp_* transport series for one direction and label set.
// Get it from Registry.TCP and cache it. Its methods take no lock and do not allocate.
type TCPStats struct {
	s      *series    // direction + labels + static
	closeS [2]*series // plus classification success/failure

	opens  striped
	closes [2]striped
	read   striped
	write  striped
}

func newTCPStats(direction string, labels, static Labels) *TCPStats {
	dir := Labels{{"direction", direction}}
	return &TCPStats{
		s: newSeries("", dir, labels, static),
		closeS: [2]*series{
			newSeries("", dir, labels, Labels{{"classification", "success"}}, static),
			newSeries("", dir, labels, Labels{{"classification", "failure"}}, static),
		},
		opens:  newStriped(),
		closes: [2]striped{newStriped(), newStriped()},
		read:   newStriped(),
		write:  newStriped(),
	}
}

// Open counts an opened connection: tcp_open_total +1 and tcp_open_connections +1.
func (t *TCPStats) Open() { t.opens.add(stripe(), 1) }

// Close counts a connection that closed cleanly: tcp_open_connections -1 and
// tcp_close_total{classification="success"} +1. Call it once per Open.
func (t *TCPStats) Close() { t.closes[0].add(stripe(), 1) }

// CloseWith is Close with the connection's outcome: failure counts it as
// tcp_close_total{classification="failure"} (the connection ended in an error).
func (t *TCPStats) CloseWith(failure bool) {
	f := 0
	if failure {
		f = 1
	}
	t.closes[f].add(stripe(), 1)
}

// AddRead counts n bytes read from the peer (tcp_read_bytes_total).
func (t *TCPStats) AddRead(n int) {
	if n > 0 {
		t.read.add(stripe(), uint64(n))
	}
}

// AddWrite counts n bytes written to the peer (tcp_write_bytes_total).
func (t *TCPStats) AddWrite(n int) {
	if n > 0 {
		t.write.add(stripe(), uint64(n))
	}
}

// OpenConnections returns the number of connections opened and not yet closed.
func (t *TCPStats) OpenConnections() uint64 {
	// Closes are read before opens: every counted close's Open happened before it,
	// so opens read afterwards include it and the difference cannot underflow.
	closed := t.closes[0].load() + t.closes[1].load()
	return openCount(t.opens.load(), closed)
}

// openCount is opens minus closes, floored at zero (a Close without its Open is
// a caller's bug and must not wrap around).
func openCount(opens, closes uint64) uint64 {
	if closes > opens {
		return 0
	}
	return opens - closes
}

func (t *TCPStats) collect(c *collector) {
	succ, fail := t.closes[0].load(), t.closes[1].load()
	opens := t.opens.load()
	c.value(TCPOpenTotal, t.s, float64(opens))
	c.value(TCPOpenConnections, t.s, float64(openCount(opens, succ+fail)))
	c.value(TCPCloseTotal, t.closeS[0], float64(succ))
	if fail > 0 {
		c.value(TCPCloseTotal, t.closeS[1], float64(fail))
	}
	c.value(TCPReadBytesTotal, t.s, float64(t.read.load()))
	c.value(TCPWriteBytesTotal, t.s, float64(t.write.load()))
}
