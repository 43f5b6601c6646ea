package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/proxy/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const wrkClean = `Running 10s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   741.53us  310.20us  12.01ms   90.18%
    Req/Sec    47.11k     2.15k   50.45k    70.00%
  Latency Distribution
     50%  705.00us
     75%  801.00us
     90%    1.02ms
     99%    3.20ms
  470123 requests in 10.00s, 60.00MB read
Requests/sec:  47012.30
Transfer/sec:      6.00MB
`

const wrkErrors = `Running 2s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Latency Distribution
     50%    4.15ms
     75%   10.56ms
     90%   26.20ms
     99%    1.10s
  22357 requests in 2.11s, 3.86MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 12
Requests/sec:  10609.20
Transfer/sec:      1.83MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    wrkResult
		wantErr bool
	}{
		{"clean", wrkClean, wrkResult{RPS: 47012.30, Requests: 470123, P50: 705 * time.Microsecond, P99: 3200 * time.Microsecond}, false},
		{"errors", wrkErrors, wrkResult{RPS: 10609.20, Requests: 22357, P50: 4150 * time.Microsecond, P99: 1100 * time.Millisecond, Non2xx: 12, SocketErrors: 10}, false},
		{"not wrk output", "unable to connect to 127.0.0.1:1 Connection refused\n", wrkResult{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			// Float parsing of "3.20ms" may be off by a nanosecond.
			near := func(a, b time.Duration) bool { return (a - b).Abs() <= time.Microsecond }
			if got.RPS != tc.want.RPS || got.Requests != tc.want.Requests || !near(got.P50, tc.want.P50) ||
				!near(got.P99, tc.want.P99) || got.Non2xx != tc.want.Non2xx || got.SocketErrors != tc.want.SocketErrors {
				t.Errorf("parseWrk = %+v, want %+v", got, tc.want)
			}
			if got.Errors() != tc.want.Non2xx+tc.want.SocketErrors {
				t.Errorf("Errors() = %d", got.Errors())
			}
		})
	}
}

const fortioJSON = `{"RunType":"HTTP","ActualQPS":1999.6,"RetCodes":{"200":29990,"503":7,"-1":3},
"DurationHistogram":{"Count":30000,"Min":5.5e-05,"Max":0.0287,"Avg":0.00045,
"Percentiles":[{"Percentile":50,"Value":0.00054},{"Percentile":99,"Value":0.00185},{"Percentile":99.9,"Value":0.014}]}}`

func TestParseFortio(t *testing.T) {
	got, err := parseFortio([]byte(fortioJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := fortioResult{QPS: 1999.6, Count: 30000, P50: 540 * time.Microsecond, P99: 1850 * time.Microsecond, P999: 14 * time.Millisecond, Errors: 10}
	if got != want {
		t.Errorf("parseFortio = %+v, want %+v", got, want)
	}
	for name, bad := range map[string]string{
		"not json":       "fortio: error",
		"no requests":    `{"DurationHistogram":{"Count":0}}`,
		"no percentiles": `{"DurationHistogram":{"Count":5,"Percentiles":[{"Percentile":50,"Value":0.001}]}}`,
	} {
		if _, err := parseFortio([]byte(bad)); err == nil {
			t.Errorf("%s: parseFortio succeeded", name)
		}
	}
}

const ghzJSON = `{"count":4866,"rps":2416.78,"average":4755204,
"statusCodeDistribution":{"OK":4859,"Unavailable":6,"Internal":1},
"errorDistribution":{"rpc error: code = Unavailable desc = transport is closing":6,"rpc error: code = Internal desc = boom":1},
"latencyDistribution":[{"percentage":10,"latency":2552200},{"percentage":50,"latency":4755204},{"percentage":99,"latency":68015437}]}`

func TestParseGhz(t *testing.T) {
	got, err := parseGhz([]byte(ghzJSON))
	if err != nil {
		t.Fatal(err)
	}
	if got.RPS != 2416.78 || got.Count != 4866 || got.Errors != 7 || got.P50 != 4755204 || got.P99 != 68015437 || len(got.ErrorKinds) != 2 {
		t.Errorf("parseGhz = %+v", got)
	}
	if _, err := parseGhz([]byte(`{"count":0}`)); err == nil {
		t.Error("parseGhz of an empty run succeeded")
	}
}

func TestParseProc(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t  20000 kB\nVmRSS:\t    6512 kB\nRssAnon:\t 1000 kB\n"
	if kb, err := parseVmRSS([]byte(status)); err != nil || kb != 6512 {
		t.Errorf("parseVmRSS = %d, %v; want 6512", kb, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("parseVmRSS without VmRSS succeeded")
	}
	// Field 2 may contain spaces and parentheses.
	stat := "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 100 1000 200"
	if ticks, err := parseStatCPU([]byte(stat)); err != nil || ticks != 325 {
		t.Errorf("parseStatCPU = %d, %v; want 325", ticks, err)
	}
}

func TestTreeRSSOfThisProcess(t *testing.T) {
	rss, err := treeRSS(os.Getpid())
	if err != nil || rss <= 0 {
		t.Errorf("treeRSS(self) = %d, %v", rss, err)
	}
	if _, err := treeRSS(1 << 30); err == nil {
		t.Error("treeRSS of a missing pid succeeded")
	}
}

func TestRSSAndCPUIncludeChildren(t *testing.T) {
	// A child shell running sleep: the tree has at least two processes.
	dir := t.TempDir()
	p, err := startProc("sleeper", dir, "", nil, "sh", "-c", "sleep 30 & wait")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(5 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(processTree(p.pid())) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("child process never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	own, err := treeRSS(p.pid())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.pid()) + "/status")
	parent, _ := parseVmRSS(b)
	if own <= parent*1024 {
		t.Errorf("tree RSS %d not above the parent's own %d", own, parent*1024)
	}
	p.stop(5 * time.Second)
	if !p.exited() {
		t.Error("stop returned before the process exited")
	}
}

func TestSluiceConfigIsValid(t *testing.T) {
	a := proxyAddrs{HTTP: "127.0.0.1:10001", GRPC: "127.0.0.1:10002", Admin: "127.0.0.1:10003", Backend: "127.0.0.1:10004", App: "127.0.0.1:10005"}
	cfg, err := config.Parse(sluiceConfig(a))
	if err != nil {
		t.Fatalf("generated sluice-proxy config does not parse:\n%s\n%v", sluiceConfig(a), err)
	}
	if cfg.Admin != a.Admin || cfg.Inbound.Enabled() || cfg.Outbound.Enabled() {
		t.Errorf("admin %q, inbound %v, outbound %v; want admin %s and no inbound or outbound listener", cfg.Admin, cfg.Inbound.Enabled(), cfg.Outbound.Enabled(), a.Admin)
	}
	if len(cfg.Listeners) != 2 || cfg.Listeners[0].Listen != a.HTTP || cfg.Listeners[1].Listen != a.GRPC {
		t.Errorf("listeners = %+v", cfg.Listeners)
	}
	eps := map[string]string{}
	for _, s := range cfg.Table.Services {
		for _, e := range s.Endpoints {
			eps[s.Name] = e.Address
		}
	}
	if eps["backend"] != a.Backend || eps["app"] != a.App {
		t.Errorf("endpoints = %v", eps)
	}
}

func TestProxyConfigs(t *testing.T) {
	a := proxyAddrs{HTTP: "127.0.0.1:10001", GRPC: "127.0.0.1:10002", Backend: "127.0.0.1:10004", App: "127.0.0.1:10005", Dir: "/tmp/x"}
	tests := []struct {
		name string
		cfg  []byte
		want []string
	}{
		{"haproxy", haproxyConfig(a), []string{
			"nbthread 1", "http-reuse always", "bind 127.0.0.1:10001\n", "server backend 127.0.0.1:10004",
			"bind 127.0.0.1:10002 proto h2", "server app 127.0.0.1:10005 proto h2",
		}},
		{"nginx", nginxConfig(a), []string{
			"worker_processes 1;", "daemon off;", "keepalive 256;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`,
			"listen 127.0.0.1:10001;", "server 127.0.0.1:10004;", "listen 127.0.0.1:10002 http2;", "grpc_pass grpc://app;",
			"pid /tmp/x/nginx.pid;",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, w := range tc.want {
				if !strings.Contains(string(tc.cfg), w) {
					t.Errorf("config lacks %q:\n%s", w, tc.cfg)
				}
			}
		})
	}
	// When the proxies are installed, let them check their own configs.
	dir := t.TempDir()
	a.Dir = dir
	if _, err := exec.LookPath("haproxy"); err == nil {
		path := filepath.Join(dir, "haproxy.cfg")
		os.WriteFile(path, haproxyConfig(a), 0o644)
		if out, err := exec.Command("haproxy", "-c", "-f", path).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c: %v\n%s", err, out)
		}
	}
	if _, err := exec.LookPath("nginx"); err == nil {
		path := filepath.Join(dir, "nginx.conf")
		os.WriteFile(path, nginxConfig(a), 0o644)
		if out, err := exec.Command("nginx", "-t", "-p", dir, "-e", filepath.Join(dir, "err.log"), "-c", path).CombinedOutput(); err != nil {
			t.Errorf("nginx -t: %v\n%s", err, out)
		}
	}
}

func sampleResults() []*result {
	w := func(rps float64, errs int64) wrkResult {
		return wrkResult{RPS: rps, P50: time.Millisecond, P99: 3 * time.Millisecond, Non2xx: errs}
	}
	f := func(p99 time.Duration, errs int64) *fortioResult {
		return &fortioResult{QPS: 2000, Count: 30000, P50: 500 * time.Microsecond, P99: p99, P999: 2 * p99, Errors: errs}
	}
	return []*result{
		{name: "direct", wrk: []wrkResult{w(60000, 0), w(65000, 0)}, fortio: f(1290*time.Microsecond, 0), ghz: &ghzResult{RPS: 5000}},
		{name: "sluice", wrk: []wrkResult{w(30000, 1), w(31000, 0)}, fortio: f(2790*time.Microsecond, 2), ghz: &ghzResult{RPS: 3000, Errors: 3},
			rssIdle: 10 << 20, rssLoad: 15<<20 + 1<<19, cpuShare: 0.2},
		{name: "haproxy", wrk: []wrkResult{w(47000, 0), w(48000, 0)}, fortio: f(1670*time.Microsecond, 0), rssIdle: 15 << 20, rssLoad: 16 << 20},
		{name: "nginx", skipped: "nginx exited"},
	}
}

func TestSummaryLine(t *testing.T) {
	tests := []struct {
		name    string
		results []*result
		want    string
	}{
		{"all measured", sampleResults(), "proxy: rps_ratio_vs_haproxy=0.65 p99_added_ms=1.50 rss_idle_mb=10.0 rss_load_mb=15.5 errors=6"},
		{"no sluice", sampleResults()[2:], "proxy: rps_ratio_vs_haproxy=NA p99_added_ms=NA rss_idle_mb=NA rss_load_mb=NA errors=NA"},
		{"no haproxy", sampleResults()[:2], "proxy: rps_ratio_vs_haproxy=NA p99_added_ms=1.50 rss_idle_mb=10.0 rss_load_mb=15.5 errors=6"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := summaryLine(tc.results); got != tc.want {
				t.Errorf("summaryLine =\n %s\nwant\n %s", got, tc.want)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	var b strings.Builder
	writeTable(&b, sampleResults())
	out := b.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("table has %d lines, want header + 4:\n%s", len(lines), out)
	}
	for _, want := range []string{
		"30000, 31000 (31000)",  // rounds and best
		"0.65",                  // sluice vs haproxy
		"+0.00 / +1.50 / +3.00", // added over direct
		"10.0 / 15.5",           // RSS
		"20%",                   // CPU at the fixed rate
		"not measured",          // nginx
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-targets", "haproxy,direct,haproxy", "-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.targets, ",") != "haproxy,direct" || o.write || o.wrkRounds != 1 {
		t.Errorf("options = %+v", o)
	}
	for _, bad := range [][]string{{"-targets", "envoy"}, {"-wrk-rounds", "0"}, {"stray"}} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) succeeded", bad)
		}
	}
}

func TestWriteResultsNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bench", "results")
	first, err := writeResults(dir, "2026-01-02-abc1234", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := writeResults(dir, "2026-01-02-abc1234", []byte("two"))
	if err != nil {
		t.Fatal(err)
	}
	if first == second {
		t.Fatalf("both runs written to %s", first)
	}
	if b, _ := os.ReadFile(first); string(b) != "one" {
		t.Errorf("first results overwritten: %q", b)
	}
	if filepath.Base(first) != "2026-01-02-abc1234.txt" || filepath.Base(second) != "2026-01-02-abc1234-2.txt" {
		t.Errorf("results written to %s and %s", first, second)
	}
}
