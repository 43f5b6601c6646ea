package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// result is what was measured for one target.
type result struct {
	name    string
	version string
	// skipped says why the target could not be measured ("" when it was).
	skipped string
	// notes are problems that did not stop the measurement.
	notes  []string
	wrk    []wrkResult
	fortio *fortioResult
	ghz    *ghzResult
	// rssIdle and rssLoad are bytes; 0 means not measured (direct).
	rssIdle, rssLoad int64
	// cpuShare is the proxy's CPU time during the fortio run divided by its
	// wall time: 0.25 is a quarter of a core.
	cpuShare float64
}

// bestRPS is the best wrk round's throughput, 0 when none ran.
func (r *result) bestRPS() float64 {
	var best float64
	for _, w := range r.wrk {
		best = max(best, w.RPS)
	}
	return best
}

// errors counts failed requests and calls seen by wrk, fortio and ghz.
func (r *result) errors() int64 {
	var n int64
	for _, w := range r.wrk {
		n += w.Errors()
	}
	if r.fortio != nil {
		n += r.fortio.Errors
	}
	if r.ghz != nil {
		n += r.ghz.Errors
	}
	return n
}

func (r *result) measured() bool { return r != nil && r.skipped == "" && len(r.wrk) > 0 }

func find(results []*result, name string) *result {
	for _, r := range results {
		if r.name == name {
			return r
		}
	}
	return nil
}

// ms formats a duration in milliseconds with two decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// signedMS formats a difference in milliseconds with its sign.
func signedMS(d time.Duration) string {
	return fmt.Sprintf("%+.2f", float64(d)/float64(time.Millisecond))
}

func mb(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// writeTable prints one row per target.
func writeTable(w io.Writer, results []*result) {
	direct := find(results, "direct")
	haproxy := find(results, "haproxy")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\twrk req/s\tvs haproxy\twrk p50/p99 ms\tfortio p50/p99/p99.9 ms\tadded over direct ms\tcpu@qps\tgrpc calls/s\tgrpc p50/p99 ms\tRSS idle/load MB\terrors\t")
	for _, r := range results {
		if !r.measured() {
			fmt.Fprintf(tw, "%s\tnot measured\t\t\t\t\t\t\t\t\t\t\n", r.name)
			continue
		}
		best := r.bestRPS()
		var rounds []string
		var bestW wrkResult
		for _, x := range r.wrk {
			rounds = append(rounds, fmt.Sprintf("%.0f", x.RPS))
			if x.RPS == best {
				bestW = x
			}
		}
		ratio := "-"
		if haproxy.measured() && r != haproxy {
			ratio = fmt.Sprintf("%.2f", best/haproxy.bestRPS())
		}
		lat, added, cpu := "-", "-", "-"
		if f := r.fortio; f != nil {
			lat = ms(f.P50) + " / " + ms(f.P99) + " / " + ms(f.P999)
			if direct.measured() && direct.fortio != nil && r != direct {
				d := direct.fortio
				added = signedMS(f.P50-d.P50) + " / " + signedMS(f.P99-d.P99) + " / " + signedMS(f.P999-d.P999)
			}
		}
		if r.rssIdle > 0 {
			cpu = fmt.Sprintf("%.0f%%", 100*r.cpuShare)
		}
		grpcRPS, grpcLat := "-", "-"
		if g := r.ghz; g != nil {
			grpcRPS = fmt.Sprintf("%.0f", g.RPS)
			grpcLat = ms(g.P50) + " / " + ms(g.P99)
		}
		rss := "-"
		if r.rssIdle > 0 {
			rss = mb(r.rssIdle) + " / " + mb(r.rssLoad)
		}
		fmt.Fprintf(tw, "%s\t%s (%s)\t%s\t%s / %s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n",
			r.name, strings.Join(rounds, ", "), fmt.Sprintf("%.0f", best), ratio, ms(bestW.P50), ms(bestW.P99),
			lat, added, cpu, grpcRPS, grpcLat, rss, r.errors())
	}
	tw.Flush()
}

// summaryLine is the last line of the output, for scripts and commit
// messages. Values that could not be measured are NA.
func summaryLine(results []*result) string {
	s, h, d := find(results, "sluice"), find(results, "haproxy"), find(results, "direct")
	ratio, p99, idle, load, errs := "NA", "NA", "NA", "NA", "NA"
	if s.measured() {
		if h.measured() {
			ratio = fmt.Sprintf("%.2f", s.bestRPS()/h.bestRPS())
		}
		if d.measured() && s.fortio != nil && d.fortio != nil {
			p99 = fmt.Sprintf("%.2f", float64(s.fortio.P99-d.fortio.P99)/float64(time.Millisecond))
		}
		idle, load = mb(s.rssIdle), mb(s.rssLoad)
		errs = fmt.Sprint(s.errors())
	}
	return fmt.Sprintf("proxy: rps_ratio_vs_haproxy=%s p99_added_ms=%s rss_idle_mb=%s rss_load_mb=%s errors=%s", ratio, p99, idle, load, errs)
}
