package admin

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sluicehq/sluice/proxy/metrics"
)

// statLine is a /proc/<pid>/stat line whose command name has spaces and
// parentheses: "a) (b c". utime=250 stime=50 starttime=12345 vsize=1048576 rss=300.
const statLine = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 12345 1048576 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{
		{"awkward command name", statLine, procStat{utime: 250, stime: 50, startTime: 12345, vsize: 1 << 20, rss: 300}, false},
		{"no command name", "4242 a S 1", procStat{}, true},
		{"truncated", "4242 (x) S 1 2 3", procStat{}, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 zz 50 0 0 20 0 8 0 1 1 1", procStat{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseBootTime(t *testing.T) {
	bt, err := parseBootTime([]byte("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"))
	if err != nil || bt != 1700000000 {
		t.Errorf("parseBootTime = %d, %v; want 1700000000", bt, err)
	}
	if _, err := parseBootTime([]byte("cpu 1\n")); err == nil {
		t.Error("parseBootTime without btime: no error")
	}
}

// fakeProc builds a proc root with one process for registerProcessMetrics.
func fakeProc(t *testing.T, fds int) procfs {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "4242", "fd"), 0o755))
	must(os.WriteFile(filepath.Join(root, "4242", "stat"), []byte(statLine), 0o644))
	must(os.WriteFile(filepath.Join(root, "stat"), []byte("cpu 1\nbtime 1700000000\n"), 0o644))
	for i := range fds {
		must(os.WriteFile(filepath.Join(root, "4242", "fd", string(rune('0'+i))), nil, 0o644))
	}
	return procfs{root: root, pid: "4242"}
}

func sample(t *testing.T, reg *metrics.Registry, name string) (float64, metrics.Labels) {
	t.Helper()
	for _, f := range reg.Gather() {
		if f.Name == name {
			if len(f.Samples) != 1 {
				t.Fatalf("%s has %d samples, want 1", name, len(f.Samples))
			}
			return f.Samples[0].Value, f.Samples[0].Labels
		}
	}
	t.Fatalf("%s missing", name)
	return 0, nil
}

func TestProcessMetricsFromFakeProc(t *testing.T) {
	reg := metrics.NewRegistry(nil)
	unregister := registerProcessMetrics(reg, "v9.9.9", fakeProc(t, 3))
	tests := []struct {
		name string
		want float64
	}{
		{"process_cpu_seconds_total", 3},
		{"process_resident_memory_bytes", 300 * float64(os.Getpagesize())},
		{"process_virtual_memory_bytes", 1 << 20},
		{"process_start_time_seconds", 1700000000 + 123.45},
		{"process_open_fds", 3},
		{"proxy_build_info", 1},
	}
	for _, tc := range tests {
		if got, _ := sample(t, reg, tc.name); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	_, ls := sample(t, reg, "proxy_build_info")
	if v, _ := ls.Get("version"); v != "v9.9.9" {
		t.Errorf("proxy_build_info version = %q", v)
	}
	if v, _ := ls.Get("go_version"); v != runtime.Version() {
		t.Errorf("proxy_build_info go_version = %q", v)
	}
	unregister()
	if fams := reg.Gather(); len(fams) != 0 {
		t.Errorf("after unregister, %d families remain", len(fams))
	}
}

func TestProcessMetricsWithoutProc(t *testing.T) {
	reg := metrics.NewRegistry(nil)
	defer registerProcessMetrics(reg, "", procfs{root: t.TempDir(), pid: "self"})()
	names := map[string]bool{}
	for _, f := range reg.Gather() {
		names[f.Name] = true
	}
	// Without /proc the process_* figures are left out, the rest still present.
	if names["process_cpu_seconds_total"] || names["process_resident_memory_bytes"] {
		t.Errorf("process figures emitted without a proc filesystem: %v", names)
	}
	if !names["go_goroutines"] || !names["proxy_build_info"] {
		t.Errorf("go_goroutines or proxy_build_info missing: %v", names)
	}
}

func TestProcessMetricsLive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux-only")
	}
	reg := metrics.NewRegistry(nil)
	defer RegisterProcessMetrics(reg, "")()
	if v, _ := sample(t, reg, "process_resident_memory_bytes"); v <= 0 {
		t.Errorf("resident memory = %v, want > 0", v)
	}
	if v, _ := sample(t, reg, "process_cpu_seconds_total"); v < 0 {
		t.Errorf("cpu seconds = %v, want >= 0", v)
	}
	if v, _ := sample(t, reg, "process_open_fds"); v < 3 {
		t.Errorf("open fds = %v, want at least stdin/stdout/stderr", v)
	}
	// Sanity, not timing: the process started after 2020 and not in the future.
	start, _ := sample(t, reg, "process_start_time_seconds")
	if start < 1.5e9 || start > float64(time.Now().Add(time.Hour).Unix()) {
		t.Errorf("start time = %v, implausible", start)
	}
	if v, _ := sample(t, reg, "go_goroutines"); v < 1 {
		t.Errorf("goroutines = %v", v)
	}
}
