// Command proxybench measures sluice-proxy against a direct connection,
// haproxy and nginx on one machine, the way reference B.6b did: each proxy
// pinned to one CPU with one worker thread, the load generators and the
// backends on the other CPU, loopback only.
//
// For each target it measures HTTP/1.1 throughput with wrk (best of N rounds),
// latency at a fixed rate with fortio (reported as added over direct), gRPC
// unary throughput with ghz against the demo app, and the proxy's RSS idle and
// under load. It prints a table and, last, one summary line:
//
//	proxy: rps_ratio_vs_haproxy=R p99_added_ms=X rss_idle_mb=Y rss_load_mb=Z errors=N
//
// and writes everything it printed to bench/results/<date>-<shortsha>.txt.
// Run it from the repository with the tools of `hack/tools.sh bench` on PATH
// (or in $SLUICE_TOOLS/bin), after `make build`:
//
//	go run ./bench/cmd/proxybench [-targets direct,sluice,haproxy,nginx] [-quick]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the harness's flags.
type options struct {
	targets        []string
	proxyBin       string
	wrkDuration    time.Duration
	wrkRounds      int
	wrkConns       int
	warmup         time.Duration
	fortioQPS      int
	fortioConns    int
	fortioDuration time.Duration
	ghzCalls       int
	ghzConc        int
	loadCPU        string
	proxyCPU       string
	write          bool
	keep           bool
}

var allTargets = []string{"direct", "sluice", "haproxy", "nginx"}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("proxybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	targets := fs.String("targets", strings.Join(allTargets, ","), "comma-separated targets: "+strings.Join(allTargets, ", "))
	fs.StringVar(&o.proxyBin, "proxy", "bin/sluice-proxy", "sluice-proxy binary (relative to the repository); built from ./cmd/sluice-proxy if missing")
	fs.DurationVar(&o.wrkDuration, "wrk-duration", 10*time.Second, "duration of each wrk round")
	fs.IntVar(&o.wrkRounds, "wrk-rounds", 2, "wrk rounds per target; the best counts")
	fs.IntVar(&o.wrkConns, "wrk-conns", 50, "wrk connections")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unrecorded wrk warm-up per target (0 for none)")
	fs.IntVar(&o.fortioQPS, "qps", 2000, "fortio's fixed request rate")
	fs.IntVar(&o.fortioConns, "fortio-conns", 16, "fortio connections")
	fs.DurationVar(&o.fortioDuration, "fortio-duration", 15*time.Second, "fortio run length")
	fs.IntVar(&o.ghzCalls, "ghz-calls", 20000, "ghz unary calls per target (0 skips gRPC)")
	fs.IntVar(&o.ghzConc, "ghz-conc", 50, "ghz concurrent workers (over one connection)")
	fs.StringVar(&o.loadCPU, "load-cpu", "0", "CPU list for load generators and backends (taskset -c)")
	fs.StringVar(&o.proxyCPU, "proxy-cpu", "1", "CPU list for the proxy under test")
	fs.BoolVar(&o.write, "write", true, "write the output to bench/results/")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory (configs, logs, raw json)")
	quick := fs.Bool("quick", false, "short runs to check the harness: 2s wrk, 1 round, 3s fortio, 2000 ghz calls, no results file")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *quick {
		o.wrkDuration, o.wrkRounds, o.warmup, o.fortioDuration, o.ghzCalls, o.write = 2*time.Second, 1, time.Second, 3*time.Second, 2000, false
	}
	for _, t := range strings.Split(*targets, ",") {
		t = strings.TrimSpace(t)
		if !contains(allTargets, t) {
			return o, fmt.Errorf("unknown target %q (want some of %s)", t, strings.Join(allTargets, ", "))
		}
		if !contains(o.targets, t) {
			o.targets = append(o.targets, t)
		}
	}
	if o.wrkRounds < 1 || o.wrkDuration < time.Second || o.fortioDuration < time.Second || o.fortioQPS < 1 {
		return o, errors.New("wrk rounds must be >= 1, durations >= 1s and qps >= 1")
	}
	return o, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the benchmark and returns the exit code: 0 when every
// requested target was measured, 1 when one could not be, 2 on bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "proxybench: %v\n", err)
		return 2
	}
	var record bytes.Buffer
	b := &bench{opts: o, out: io.MultiWriter(stdout, &record), stderr: stderr}
	code := b.run(ctx)
	if o.write && b.root != "" {
		path, err := writeResults(filepath.Join(b.root, "bench", "results"), time.Now().Format("2006-01-02")+"-"+b.revision, record.Bytes())
		if err != nil {
			fmt.Fprintf(stderr, "proxybench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "proxybench: results written to %s\n", path)
	}
	return code
}

// bench is one benchmark run.
type bench struct {
	opts   options
	out    io.Writer // stdout and the results file
	stderr io.Writer
	root   string // repository root
	// revision is the short commit measured, with "-dirty" for local changes.
	revision string
	dir      string // scratch directory
	gen      loadgen
	stops    []func()
}

func (b *bench) printf(format string, args ...any) { fmt.Fprintf(b.out, format, args...) }

func (b *bench) run(ctx context.Context) int {
	defer func() {
		for i := len(b.stops) - 1; i >= 0; i-- {
			b.stops[i]()
		}
	}()
	results, err := b.measureAll(ctx)
	if err != nil {
		fmt.Fprintf(b.stderr, "proxybench: %v\n", err)
		b.printf("\nbenchmark failed: %v\n", err)
		return 1
	}
	b.printf("\n")
	writeTable(b.out, results)
	b.printf("\n%s\n", summaryLine(results))
	for _, r := range results {
		if r.skipped != "" {
			return 1
		}
	}
	return 0
}

func (b *bench) measureAll(ctx context.Context) ([]*result, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	b.root = root
	if b.dir, err = os.MkdirTemp("", "proxybench-"); err != nil {
		return nil, fmt.Errorf("creating a scratch directory: %w", err)
	}
	if b.opts.keep {
		defer fmt.Fprintf(b.stderr, "proxybench: scratch directory kept: %s\n", b.dir)
	} else {
		b.stops = append(b.stops, func() { os.RemoveAll(b.dir) })
	}
	addToolsToPath()

	loadCPU, proxyCPU := b.opts.loadCPU, b.opts.proxyCPU
	if runtime.NumCPU() < 2 {
		loadCPU, proxyCPU = "", ""
	}
	b.gen = loadgen{cpu: loadCPU, dir: b.dir}

	if err := b.checkTools(); err != nil {
		return nil, err
	}
	b.header(loadCPU, proxyCPU)

	backendBin, err := b.goBuild(ctx, "backend", "./bench/backend")
	if err != nil {
		return nil, err
	}
	appBin, err := b.goBuild(ctx, "sluice-demo-app", "./examples/app")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	backendAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	appAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	backend, err := b.start(ctx, "backend", loadCPU, []string{"GOMAXPROCS=1"}, backendBin, "--listen", backendAddr)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, backend, "http://"+backendAddr+"/", 15*time.Second); err != nil {
		return nil, err
	}
	app, err := b.start(ctx, "app", loadCPU, []string{"GOMAXPROCS=1"}, appBin, "--listen", appAddr, "--name", "bench-app")
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, app, "http://"+appAddr+"/healthz", 15*time.Second); err != nil {
		return nil, err
	}
	b.printf("backend (64-byte body) on %s, demo app (gRPC) on %s, both on CPU %s with GOMAXPROCS=1\n\n", backendAddr, appAddr, orNone(loadCPU))

	var targets []*target
	for _, name := range b.opts.targets {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t, err := b.startTarget(ctx, name, proxyCPU, backendAddr, appAddr)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			t.skipped = err.Error()
			b.printf("%s: NOT MEASURED: %v\n", name, err)
		}
		targets = append(targets, t)
	}
	b.printf("\n")
	if err := b.measure(ctx, targets); err != nil {
		return nil, err
	}
	var results []*result
	for _, t := range targets {
		if t.skipped == "" && t.proc != nil && t.proc.exited() {
			t.skipped = fmt.Sprintf("%s exited during the run (%v); log:\n%s", t.name, t.proc.err, t.proc.logTail())
			b.printf("%s: NOT MEASURED: %s\n", t.name, t.skipped)
		}
		for _, e := range t.notes {
			b.printf("%s: %s\n", t.name, e)
		}
		results = append(results, t.result)
	}
	return results, nil
}

// target is one thing measured: the backend itself (direct) or a proxy.
type target struct {
	*result
	proc     *proc // nil for direct
	httpURL  string
	grpcAddr string
}

func (t *target) ok() bool { return t.skipped == "" }

// startTarget starts a proxy (nothing for direct) in front of the backend and
// the app, waits until it forwards, and takes its idle RSS.
func (b *bench) startTarget(ctx context.Context, name, proxyCPU, backendAddr, appAddr string) (*target, error) {
	t := &target{result: &result{name: name}, httpURL: "http://" + backendAddr + "/", grpcAddr: appAddr}
	if name == "direct" {
		b.printf("%s: %s (gRPC %s)\n", name, t.httpURL, t.grpcAddr)
		return t, nil
	}
	ports, err := freePorts(3)
	if err != nil {
		return t, err
	}
	addrs := proxyAddrs{
		HTTP:    fmt.Sprintf("127.0.0.1:%d", ports[0]),
		GRPC:    fmt.Sprintf("127.0.0.1:%d", ports[1]),
		Admin:   fmt.Sprintf("127.0.0.1:%d", ports[2]),
		Backend: backendAddr, App: appAddr,
		Dir: filepath.Join(b.dir, name),
	}
	if err := os.MkdirAll(addrs.Dir, 0o755); err != nil {
		return t, err
	}
	p, err := b.startProxy(ctx, name, proxyCPU, addrs)
	if err != nil {
		return t, err
	}
	t.proc, t.version = p, p.version
	t.httpURL, t.grpcAddr = "http://"+addrs.HTTP+"/", addrs.GRPC
	if err := waitHTTP(ctx, p, t.httpURL, 15*time.Second); err != nil {
		return t, err
	}
	if b.opts.ghzCalls > 0 {
		if err := waitTCP(ctx, p, t.grpcAddr, 15*time.Second); err != nil {
			return t, err
		}
	}
	// Let the process settle after start before taking the idle RSS.
	time.Sleep(time.Second)
	if t.rssIdle, err = treeRSS(p.pid()); err != nil {
		return t, err
	}
	b.printf("%s: %s (gRPC %s), %s, idle RSS %s MB\n", name, t.httpURL, t.grpcAddr, p.version, mb(t.rssIdle))
	return t, nil
}

// measure runs the load generators against every started target. Targets
// take turns within each phase and each wrk round, so that noise from other
// work on the machine spreads over all of them rather than hitting one.
func (b *bench) measure(ctx context.Context, targets []*target) error {
	fail := func(t *target, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		t.skipped = err.Error()
		b.printf("%s: NOT MEASURED: %v\n", t.name, err)
		return nil
	}
	if b.opts.warmup > 0 {
		for _, t := range targets {
			if !t.ok() {
				continue
			}
			if _, err := b.gen.wrk(ctx, t.httpURL, b.opts.wrkConns, b.opts.warmup); err != nil {
				if err := fail(t, fmt.Errorf("warm-up: %w", err)); err != nil {
					return err
				}
			}
		}
	}
	for round := range b.opts.wrkRounds {
		for _, t := range targets {
			if !t.ok() {
				continue
			}
			var sampler *rssSampler
			if t.proc != nil {
				sampler = sampleRSS(t.proc.pid(), 100*time.Millisecond)
			}
			w, err := b.gen.wrk(ctx, t.httpURL, b.opts.wrkConns, b.opts.wrkDuration)
			if sampler != nil {
				t.rssLoad = max(t.rssLoad, sampler.stop())
			}
			if err != nil {
				if err := fail(t, err); err != nil {
					return err
				}
				continue
			}
			t.wrk = append(t.wrk, w)
			b.printf("%-8s wrk round %d: %6.0f req/s, p50 %s p99 %s ms, errors %d\n", t.name, round+1, w.RPS, ms(w.P50), ms(w.P99), w.Errors())
		}
	}
	for _, t := range targets {
		if !t.ok() {
			continue
		}
		var cpu0 time.Duration
		if t.proc != nil {
			cpu0 = treeCPU(t.proc.pid())
		}
		start := time.Now()
		f, err := b.gen.fortio(ctx, t.name, t.httpURL, b.opts.fortioQPS, b.opts.fortioConns, b.opts.fortioDuration)
		if err != nil {
			if err := fail(t, err); err != nil {
				return err
			}
			continue
		}
		if t.proc != nil {
			t.cpuShare = float64(treeCPU(t.proc.pid())-cpu0) / float64(time.Since(start))
		}
		t.fortio = &f
		b.printf("%-8s fortio %d qps: got %.0f, p50 %s p99 %s p99.9 %s ms, errors %d\n", t.name, b.opts.fortioQPS, f.QPS, ms(f.P50), ms(f.P99), ms(f.P999), f.Errors)
	}
	if b.opts.ghzCalls == 0 {
		return nil
	}
	for _, t := range targets {
		if !t.ok() {
			continue
		}
		g, err := b.gen.ghz(ctx, t.name, t.grpcAddr, b.opts.ghzCalls, b.opts.ghzConc)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t.notes = append(t.notes, fmt.Sprintf("gRPC not measured: %v", err))
			continue
		}
		t.ghz = &g
		b.printf("%-8s ghz %d calls: %.0f calls/s, p50 %s p99 %s ms, errors %d %v\n", t.name, b.opts.ghzCalls, g.RPS, ms(g.P50), ms(g.P99), g.Errors, g.ErrorKinds)
	}
	return nil
}

// startProxy writes the target's configuration and starts it on proxyCPU.
func (b *bench) startProxy(ctx context.Context, name, cpu string, a proxyAddrs) (*proc, error) {
	var (
		cfgPath string
		cfg     []byte
		argv    []string
		env     []string
	)
	switch name {
	case "haproxy":
		cfgPath, cfg = filepath.Join(a.Dir, "haproxy.cfg"), haproxyConfig(a)
		argv = []string{"haproxy", "-db", "-f", cfgPath}
	case "nginx":
		cfgPath, cfg = filepath.Join(a.Dir, "nginx.conf"), nginxConfig(a)
		argv = []string{"nginx", "-p", a.Dir, "-e", filepath.Join(a.Dir, "nginx-error.log"), "-c", cfgPath}
	case "sluice":
		bin, err := b.sluiceBinary(ctx)
		if err != nil {
			return nil, err
		}
		cfgPath, cfg = filepath.Join(a.Dir, "sluice-proxy.yaml"), sluiceConfig(a)
		argv = []string{bin, "--config", cfgPath}
		env = []string{"GOMAXPROCS=1"}
	default:
		return nil, fmt.Errorf("unknown proxy %q", name)
	}
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		return nil, fmt.Errorf("writing %s config: %w", name, err)
	}
	p, err := b.start(ctx, name, cpu, env, argv...)
	if err != nil {
		return nil, err
	}
	p.version = toolVersion(argv[0])
	return p, nil
}

// sluiceBinary returns the sluice-proxy to measure: opts.proxyBin, or one
// built from ./cmd/sluice-proxy when that is missing.
func (b *bench) sluiceBinary(ctx context.Context) (string, error) {
	bin := b.opts.proxyBin
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(b.root, bin)
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if _, err := os.Stat(filepath.Join(b.root, "cmd", "sluice-proxy")); err != nil {
		return "", fmt.Errorf("%s not found and there is no ./cmd/sluice-proxy to build (run make build)", bin)
	}
	b.printf("%s not found; building ./cmd/sluice-proxy\n", bin)
	return b.goBuild(ctx, "sluice-proxy", "./cmd/sluice-proxy")
}

// start starts a process and registers it to be stopped at the end.
func (b *bench) start(_ context.Context, name, cpu string, env []string, argv ...string) (*proc, error) {
	p, err := startProc(name, b.dir, cpu, env, argv...)
	if err != nil {
		return nil, err
	}
	b.stops = append(b.stops, func() { p.stop(10 * time.Second) })
	return p, nil
}

// goBuild builds pkg from the repository into the scratch directory.
func (b *bench) goBuild(ctx context.Context, name, pkg string) (string, error) {
	out := filepath.Join(b.dir, name)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = b.root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
	}
	fmt.Fprintf(b.stderr, "proxybench: built %s in %.1fs\n", pkg, time.Since(start).Seconds())
	return out, nil
}

// checkTools fails early, naming what is missing, when a needed tool is not
// on PATH.
func (b *bench) checkTools() error {
	need := []string{"wrk", "fortio"}
	if b.opts.ghzCalls > 0 {
		need = append(need, "ghz")
	}
	if b.gen.cpu != "" {
		need = append(need, "taskset")
	}
	for _, t := range b.opts.targets {
		if t == "haproxy" || t == "nginx" {
			need = append(need, t)
		}
	}
	var missing []string
	for _, t := range need {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools: %s (run hack/tools.sh bench)", strings.Join(missing, ", "))
	}
	return nil
}

// header prints what the run was and where.
func (b *bench) header(loadCPU, proxyCPU string) {
	sha, dirty := gitRevision(b.root)
	b.revision = sha + dirty
	b.printf("sluice proxy benchmark, %s\n", time.Now().UTC().Format(time.RFC3339))
	b.printf("commit %s, %s, %s/%s, kernel %s\n", b.revision, runtime.Version(), runtime.GOOS, runtime.GOARCH, readTrim("/proc/sys/kernel/osrelease"))
	b.printf("cpu: %d x %s; load generators and backends on CPU %s, proxy on CPU %s\n", runtime.NumCPU(), cpuModel(), orNone(loadCPU), orNone(proxyCPU))
	load := loadAverage()
	b.printf("load average before the run: %.2f\n", load)
	if load > 1 {
		b.printf("WARNING: the machine is busy (load %.2f): other processes share the CPUs, expect noisy numbers\n", load)
	}
	o := b.opts
	grpc := "gRPC skipped"
	if o.ghzCalls > 0 {
		grpc = fmt.Sprintf("ghz %d UnaryCall x%d workers, 1 connection", o.ghzCalls, o.ghzConc)
	}
	b.printf("wrk -t1 -c%d -d%v x%d (best counts, after %v warm-up); fortio -qps %d -c %d -t %v; %s\n",
		o.wrkConns, o.wrkDuration, o.wrkRounds, o.warmup, o.fortioQPS, o.fortioConns, o.fortioDuration, grpc)
	for _, t := range []string{"wrk", "fortio", "ghz", "haproxy", "nginx"} {
		if _, err := exec.LookPath(t); err == nil {
			b.printf("  %-8s %s\n", t, toolVersion(t))
		}
	}
	if loadCPU == "" {
		b.printf("WARNING: fewer than 2 CPUs: nothing is pinned, numbers are not comparable\n")
	}
}

// toolVersion returns the first line a tool prints about its version.
func toolVersion(tool string) string {
	args := map[string][]string{
		"wrk": {"-v"}, "fortio": {"version"}, "ghz": {"--version"}, "haproxy": {"-v"}, "nginx": {"-v"},
	}[filepath.Base(tool)]
	if args == nil {
		args = []string{"--version"}
	}
	out, _ := exec.Command(tool, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// repoRoot finds the directory of the sluice go.mod at or above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/sluicehq/sluice\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%s is not inside the sluice repository", dir)
		}
	}
}

// addToolsToPath puts $SLUICE_TOOLS/bin (default ~/.cache/sluice/tools/bin),
// where hack/tools.sh installs Go tools, on PATH.
func addToolsToPath() {
	dir := os.Getenv("SLUICE_TOOLS")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return
		}
		dir = filepath.Join(home, ".cache", "sluice", "tools")
	}
	bin := filepath.Join(dir, "bin")
	if !contains(filepath.SplitList(os.Getenv("PATH")), bin) {
		os.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
}

// gitRevision returns the short commit and "-dirty" when the tree has changes.
func gitRevision(root string) (sha, dirty string) {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "nogit", ""
	}
	sha = strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		dirty = "-dirty"
	}
	return sha, dirty
}

// writeResults writes the run's output to dir/base.txt (base is
// <date>-<sha>[-dirty]), adding -2, -3, ... rather than overwriting an
// earlier run.
func writeResults(dir, base string, data []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	for i := 1; ; i++ {
		name := base + ".txt"
		if i > 1 {
			name = base + "-" + strconv.Itoa(i) + ".txt"
		}
		path := filepath.Join(dir, name)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("writing results: %w", err)
		}
		_, werr := f.Write(data)
		if err := errors.Join(werr, f.Close()); err != nil {
			return "", fmt.Errorf("writing %s: %w", path, err)
		}
		return path, nil
	}
}

// loadAverage is the one-minute load average, 0 if unknown.
func loadAverage() float64 {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	for _, line := range strings.Split(readTrim("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown cpu"
}

func orNone(cpu string) string {
	if cpu == "" {
		return "(any)"
	}
	return cpu
}
