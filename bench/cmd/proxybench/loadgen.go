package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	RPS      float64
	Requests int64
	P50, P99 time.Duration
	// Non2xx counts "Non-2xx or 3xx responses"; SocketErrors sums connect,
	// read, write and timeout errors.
	Non2xx       int64
	SocketErrors int64
}

// Errors is every failed request wrk saw.
func (r wrkResult) Errors() int64 { return r.Non2xx + r.SocketErrors }

var (
	wrkRPS     = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkReqs    = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErr = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads the output of wrk --latency.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec line in wrk output:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkReqs.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		d, err := wrkDuration(m[2], m[3])
		if err != nil {
			return r, err
		}
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSockErr.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.SocketErrors += n
		}
	}
	return r, nil
}

func wrkDuration(num, unit string) (time.Duration, error) {
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("wrk latency %s%s: %w", num, unit, err)
	}
	scale := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute}[unit]
	return time.Duration(v * float64(scale)), nil
}

// fortioResult is what one fortio load run reports.
type fortioResult struct {
	QPS            float64
	Count          int64
	P50, P99, P999 time.Duration
	// Errors counts requests answered other than 200 (socket errors are -1).
	Errors int64
}

// parseFortio reads fortio's -json output.
func parseFortio(b []byte) (fortioResult, error) {
	var raw struct {
		ActualQPS         float64
		RetCodes          map[string]int64
		DurationHistogram struct {
			Count       int64
			Percentiles []struct {
				Percentile float64
				Value      float64 // seconds
			}
		}
	}
	var r fortioResult
	if err := json.Unmarshal(b, &raw); err != nil {
		return r, fmt.Errorf("decoding fortio json: %w", err)
	}
	if raw.DurationHistogram.Count == 0 {
		return r, fmt.Errorf("fortio json has no requests")
	}
	r.QPS, r.Count = raw.ActualQPS, raw.DurationHistogram.Count
	for code, n := range raw.RetCodes {
		if code != "200" {
			r.Errors += n
		}
	}
	sec := func(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
	for _, p := range raw.DurationHistogram.Percentiles {
		switch p.Percentile {
		case 50:
			r.P50 = sec(p.Value)
		case 99:
			r.P99 = sec(p.Value)
		case 99.9:
			r.P999 = sec(p.Value)
		}
	}
	if r.P50 == 0 || r.P99 == 0 || r.P999 == 0 {
		return r, fmt.Errorf("fortio json lacks the 50/99/99.9 percentiles (run it with -p 50,99,99.9)")
	}
	return r, nil
}

// ghzResult is what one ghz run reports.
type ghzResult struct {
	RPS      float64
	Count    int64
	P50, P99 time.Duration
	// Errors counts calls that did not end OK.
	Errors int64
	// ErrorKinds is ghz's errorDistribution.
	ErrorKinds map[string]int64
}

// parseGhz reads ghz's -O json output.
func parseGhz(b []byte) (ghzResult, error) {
	var raw struct {
		Count                  int64
		RPS                    float64
		StatusCodeDistribution map[string]int64
		ErrorDistribution      map[string]int64
		LatencyDistribution    []struct {
			Percentage int
			Latency    int64 // nanoseconds
		}
	}
	var r ghzResult
	if err := json.Unmarshal(b, &raw); err != nil {
		return r, fmt.Errorf("decoding ghz json: %w", err)
	}
	if raw.Count == 0 {
		return r, fmt.Errorf("ghz json has no calls")
	}
	r.RPS, r.Count, r.ErrorKinds = raw.RPS, raw.Count, raw.ErrorDistribution
	for code, n := range raw.StatusCodeDistribution {
		if code != "OK" {
			r.Errors += n
		}
	}
	for _, l := range raw.LatencyDistribution {
		switch l.Percentage {
		case 50:
			r.P50 = time.Duration(l.Latency)
		case 99:
			r.P99 = time.Duration(l.Latency)
		}
	}
	return r, nil
}

// loadgen runs the load generators pinned to the load CPU.
type loadgen struct {
	cpu string // "" for no pinning
	dir string // scratch directory for json outputs
	log func(format string, args ...any)
}

func (g loadgen) command(ctx context.Context, argv ...string) *exec.Cmd {
	if g.cpu != "" {
		argv = append([]string{"taskset", "-c", g.cpu}, argv...)
	}
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// wrk runs wrk -t1 -cN -dD --latency against url.
func (g loadgen) wrk(ctx context.Context, url string, conns int, d time.Duration) (wrkResult, error) {
	cmd := g.command(ctx, "wrk", "-t1", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(d.Seconds())), "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return parseWrk(string(out))
}

// fortio runs fortio load at a fixed qps against url.
func (g loadgen) fortio(ctx context.Context, name, url string, qps, conns int, d time.Duration) (fortioResult, error) {
	jsonPath := filepath.Join(g.dir, "fortio-"+name+".json")
	cmd := g.command(ctx, "fortio", "load", "-qps", strconv.Itoa(qps), "-c", strconv.Itoa(conns),
		"-t", d.String(), "-r", "0.0001", "-p", "50,99,99.9", "-json", jsonPath, url)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fortioResult{}, fmt.Errorf("fortio %s: %w\n%s", url, err, tail(string(out), 15))
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return fortioResult{}, fmt.Errorf("fortio %s: %w", url, err)
	}
	return parseFortio(b)
}

// ghz runs n unary calls of grpc.testing.TestService/UnaryCall (found by
// server reflection) against addr. A fixed count rather than a duration
// avoids counting the calls ghz cancels when a duration ends.
func (g loadgen) ghz(ctx context.Context, name, addr string, n, conc int) (ghzResult, error) {
	jsonPath := filepath.Join(g.dir, "ghz-"+name+".json")
	cmd := g.command(ctx, "ghz", "--insecure", "--cpus", "1",
		"--call", "grpc.testing.TestService.UnaryCall", "-d", `{"response_size":64}`,
		"-n", strconv.Itoa(n), "-c", strconv.Itoa(conc), "--connections", "1", "-t", "10s",
		"-O", "json", "-o", jsonPath, addr)
	if out, err := cmd.CombinedOutput(); err != nil {
		// ghz exits non-zero when calls failed; its json still tells how many.
		if _, statErr := os.Stat(jsonPath); statErr != nil {
			return ghzResult{}, fmt.Errorf("ghz %s: %w\n%s", addr, err, tail(string(out), 15))
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return ghzResult{}, fmt.Errorf("ghz %s: %w", addr, err)
	}
	return parseGhz(b)
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
