package admin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"

	"github.com/sluicehq/sluice/proxy/metrics"
)

// userHZ is the kernel's USER_HZ, the unit of CPU times in /proc: 100 on every
// Linux architecture Go supports (sysconf(_SC_CLK_TCK) needs cgo to ask).
const userHZ = 100

// procStat is what the proxy reads from /proc/<pid>/stat.
type procStat struct {
	utime, stime uint64 // clock ticks
	startTime    uint64 // clock ticks after boot
	vsize        uint64 // bytes
	rss          int64  // pages
}

// parseProcStat parses the contents of /proc/<pid>/stat. The command name (field 2)
// is in parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseProcStat(data []byte) (procStat, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return procStat{}, errors.New("parsing /proc stat: no ')' after the command name")
	}
	// After ")": field 3 (state) is index 0, so field n is index n-3.
	f := bytes.Fields(data[end+1:])
	const last = 24 - 3 // rss
	if len(f) <= last {
		return procStat{}, fmt.Errorf("parsing /proc stat: %d fields after the command name, want at least %d", len(f), last+1)
	}
	var st procStat
	var err error
	u := func(n int) uint64 {
		v, e := strconv.ParseUint(string(f[n-3]), 10, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("parsing /proc stat field %d %q: %w", n, f[n-3], e)
		}
		return v
	}
	st.utime, st.stime, st.startTime, st.vsize = u(14), u(15), u(22), u(23)
	rss, e := strconv.ParseInt(string(f[24-3]), 10, 64)
	if e != nil && err == nil {
		err = fmt.Errorf("parsing /proc stat field 24 %q: %w", f[24-3], e)
	}
	st.rss = rss
	return st, err
}

// parseBootTime returns the btime line of /proc/stat: the boot time in seconds
// since the epoch.
func parseBootTime(data []byte) (uint64, error) {
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			bt, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing /proc/stat btime %q: %w", v, err)
			}
			return bt, nil
		}
	}
	return 0, errors.New("parsing /proc/stat: no btime line")
}

// procfs reads one process's figures under a proc root ("/proc" outside tests).
type procfs struct {
	root string
	pid  string // "self" or a number
}

func (p procfs) stat() (procStat, error) {
	data, err := os.ReadFile(filepath.Join(p.root, p.pid, "stat"))
	if err != nil {
		return procStat{}, fmt.Errorf("reading process stat: %w", err)
	}
	return parseProcStat(data)
}

// startTime returns the process start in seconds since the epoch.
func (p procfs) startTime() (float64, error) {
	st, err := p.stat()
	if err != nil {
		return 0, err
	}
	data, err := os.ReadFile(filepath.Join(p.root, "stat"))
	if err != nil {
		return 0, fmt.Errorf("reading boot time: %w", err)
	}
	boot, err := parseBootTime(data)
	if err != nil {
		return 0, err
	}
	return float64(boot) + float64(st.startTime)/userHZ, nil
}

func (p procfs) openFDs() (int, error) {
	d, err := os.Open(filepath.Join(p.root, p.pid, "fd"))
	if err != nil {
		return 0, fmt.Errorf("listing open files: %w", err)
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(512)
		n += len(names)
		if err != nil {
			// io.EOF ends the listing; other errors leave a partial count, still useful.
			return n, nil
		}
	}
}

// RegisterProcessMetrics registers the proxy's process metrics on r, evaluated
// at scrape time: process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_start_time_seconds and process_open_fds
// (read from /proc, so Linux only: elsewhere they are left out), go_goroutines,
// and proxy_build_info{version, go_version} = 1. An empty version means the main
// module's version from the build information. The returned func unregisters
// them all.
func RegisterProcessMetrics(r *metrics.Registry, version string) (unregister func()) {
	return registerProcessMetrics(r, version, procfs{root: "/proc", pid: "self"})
}

func registerProcessMetrics(r *metrics.Registry, version string, p procfs) func() {
	if version == "" {
		version = buildVersion()
	}
	// The start time never changes; read it once. A failure leaves it out.
	start, startErr := p.startTime()
	pageSize := float64(os.Getpagesize())

	unregs := []func(){
		r.CounterFunc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", func(emit func(metrics.Labels, float64)) {
			if st, err := p.stat(); err == nil {
				emit(nil, float64(st.utime+st.stime)/userHZ)
			}
		}),
		r.GaugeFunc("process_resident_memory_bytes", "Resident memory size in bytes.", func(emit func(metrics.Labels, float64)) {
			if st, err := p.stat(); err == nil {
				emit(nil, float64(st.rss)*pageSize)
			}
		}),
		r.GaugeFunc("process_virtual_memory_bytes", "Virtual memory size in bytes.", func(emit func(metrics.Labels, float64)) {
			if st, err := p.stat(); err == nil {
				emit(nil, float64(st.vsize))
			}
		}),
		r.GaugeFunc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", func(emit func(metrics.Labels, float64)) {
			if startErr == nil {
				emit(nil, start)
			}
		}),
		r.GaugeFunc("process_open_fds", "Number of open file descriptors.", func(emit func(metrics.Labels, float64)) {
			if n, err := p.openFDs(); err == nil {
				emit(nil, float64(n))
			}
		}),
		r.GaugeFunc("go_goroutines", "Number of goroutines that currently exist.", func(emit func(metrics.Labels, float64)) {
			emit(nil, float64(runtime.NumGoroutine()))
		}),
		r.GaugeFunc("proxy_build_info", "Proxy build information.", func(emit func(metrics.Labels, float64)) {
			emit(metrics.Labels{{Name: "version", Value: version}, {Name: "go_version", Value: runtime.Version()}}, 1)
		}),
	}
	return func() {
		for _, u := range unregs {
			u()
		}
	}
}

// buildVersion is the main module's version, or "unknown" without build information.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "unknown"
}
