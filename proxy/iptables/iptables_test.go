package iptables

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func mustPorts(t *testing.T, s string) []PortRange {
	t.Helper()
	p, err := ParsePortRanges(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustSubnets(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	p, err := ParseSubnets(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRulesGolden pins the exact commands for representative configurations.
// Run with -update to rewrite testdata/*.golden after an intended change.
func TestRulesGolden(t *testing.T) {
	manyPorts := make([]string, 0, 20)
	for p := 7000; p < 7017; p++ {
		manyPorts = append(manyPorts, fmt.Sprint(p))
	}
	manyPorts = append(manyPorts, "8000-8010", "9000-9001")
	for _, tc := range []struct {
		name string
		cfg  func(c *Config)
	}{
		{"default", func(c *Config) {}},
		{"nft-ignores", func(c *Config) {
			c.Mode = ModeNFT
			c.InboundPortsToIgnore = mustPorts(t, "4190,25")
			c.OutboundPortsToIgnore = mustPorts(t, "443,6443,9000-9100")
			c.SubnetsToIgnore = mustSubnets(t, "10.96.0.0/12,192.168.1.7/32")
		}},
		{"ipv6-legacy", func(c *Config) {
			c.Mode = ModeLegacy
			c.IPv6 = true
			c.ProxyUID = 1337
			c.InboundPort, c.OutboundPort, c.AdminPort = 15006, 15001, 15020
			c.OutboundPortsToIgnore = mustPorts(t, "5432")
			c.SubnetsToIgnore = mustSubnets(t, "10.0.0.0/8,fd00::/8")
		}},
		{"multiport-batches", func(c *Config) {
			c.OutboundPortsToIgnore = mustPorts(t, strings.Join(manyPorts, ","))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.cfg(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			var b strings.Builder
			for _, argv := range Rules(cfg) {
				b.WriteString(ShellQuote(argv))
				b.WriteByte('\n')
			}
			got := b.String()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Rules differ from %s (run with -update if intended):\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}

// TestRulesProperties checks the invariants that keep interception correct,
// independently of the golden files.
func TestRulesProperties(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IPv6 = true
	cfg.OutboundPortsToIgnore = mustPorts(t, "443")
	rules := Rules(cfg)
	for _, bin := range []string{"iptables", "ip6tables"} {
		var mine [][]string
		for _, r := range rules {
			if r[0] == bin {
				mine = append(mine, r)
			}
		}
		if len(mine) == 0 {
			t.Fatalf("no %s rules", bin)
		}
		idx := func(substr string) int {
			for i, r := range mine {
				if strings.Contains(strings.Join(r, " "), substr) {
					return i
				}
			}
			t.Fatalf("%s: no rule contains %q", bin, substr)
			return -1
		}
		// The proxy's own traffic and loopback must return before the redirect,
		// or the proxy would loop onto itself.
		redirectOut := idx("-j REDIRECT --to-ports 4140")
		for _, s := range []string{"--uid-owner 2102 -j RETURN", "-o lo ! -d", "--dports 443 -j RETURN"} {
			if i := idx(s); i > redirectOut {
				t.Errorf("%s: %q comes after the outbound redirect", bin, s)
			}
		}
		if i := idx("--dport 4191 -j RETURN"); i > idx("-j REDIRECT --to-ports 4143") {
			t.Errorf("%s: the admin port is not exempted before the inbound redirect", bin)
		}
		// Jumps come after their chain is filled.
		if idx("-A PREROUTING") < idx("-j REDIRECT --to-ports 4143") || idx("-A OUTPUT") < redirectOut {
			t.Errorf("%s: a jump precedes its chain's rules", bin)
		}
	}
}

func TestParsePortRanges(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []PortRange
		wantErr string
	}{
		{in: "", want: nil},
		{in: " 80 , 443,", want: []PortRange{{80, 80}, {443, 443}}},
		{in: "9000-9010", want: []PortRange{{9000, 9010}}},
		{in: "0", wantErr: `port "0"`},
		{in: "65536", wantErr: `port "65536"`},
		{in: "http", wantErr: `port "http"`},
		{in: "10-5", wantErr: `port range "10-5": 5 is below 10`},
		{in: "10-x", wantErr: `port range "10-x"`},
	} {
		got, err := ParsePortRanges(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParsePortRanges(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParsePortRanges(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSubnets(t *testing.T) {
	got, err := ParseSubnets("10.1.2.3/8, fd00::1/8")
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ParseSubnets = %v, %v; want %v", got, err, want)
	}
	if _, err := ParseSubnets("10.0.0.0"); err == nil || !strings.Contains(err.Error(), `"10.0.0.0"`) {
		t.Errorf("ParseSubnets without a prefix length: error %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(c *Config)
		wantErr []string
	}{
		{"default", func(c *Config) {}, nil},
		{"uid 0", func(c *Config) { c.ProxyUID = 0 }, []string{"proxy UID 0"}},
		{"ports", func(c *Config) { c.InboundPort, c.OutboundPort, c.AdminPort = 0, 70000, 4191 }, []string{"inbound port 0", "outbound port 70000"}},
		{"same ports", func(c *Config) { c.OutboundPort = c.InboundPort }, []string{"both 4143"}},
		{"admin is a target", func(c *Config) { c.AdminPort = c.OutboundPort }, []string{"admin port 4140"}},
		{"ipv6 subnet without ipv6", func(c *Config) { c.SubnetsToIgnore = mustSubnets(t, "fd00::/8") }, []string{"fd00::/8 is IPv6"}},
		{"ipv6 subnet with ipv6", func(c *Config) { c.IPv6 = true; c.SubnetsToIgnore = mustSubnets(t, "fd00::/8") }, nil},
		{"mode", func(c *Config) { c.Mode = "bpf" }, []string{`mode "bpf"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: no error, want %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// fakeNat is one binary's in-memory nat table.
type fakeNat struct {
	chains map[string][]string // chain -> rules (the text after "-A CHAIN ")
	order  []string
}

func newFakeNat() *fakeNat {
	n := &fakeNat{chains: map[string][]string{}}
	for _, c := range []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"} {
		n.chains[c] = nil
		n.order = append(n.order, c)
	}
	return n
}

func builtin(c string) bool {
	return c == "PREROUTING" || c == "INPUT" || c == "OUTPUT" || c == "POSTROUTING"
}

// fakeTables stands in for the iptables binaries through Runner, with one nat
// table per binary: enough to test Apply's and Cleanup's decisions without root.
type fakeTables struct {
	tables map[string]*fakeNat
	ran    [][]string
	failOn string // a command containing this fails with exit status 2
}

func newFakeTables() *fakeTables { return &fakeTables{tables: map[string]*fakeNat{}} }

func (f *fakeTables) table(bin string) *fakeNat {
	if f.tables[bin] == nil {
		f.tables[bin] = newFakeNat()
	}
	return f.tables[bin]
}

func (f *fakeTables) run(_ context.Context, argv []string) ([]byte, error) {
	f.ran = append(f.ran, argv)
	line := strings.Join(argv, " ")
	fail := func(code int, msg string) ([]byte, error) {
		return nil, &CommandError{Args: argv, ExitCode: code, Stderr: msg, Err: fmt.Errorf("exit status %d", code)}
	}
	if f.failOn != "" && strings.Contains(line, f.failOn) {
		return fail(2, "iptables: simulated failure")
	}
	if len(argv) < 5 || argv[1] != "-w" || argv[2] != "-t" || argv[3] != "nat" {
		return fail(2, "unexpected command "+line)
	}
	t := f.table(argv[0])
	if len(argv) == 5 && argv[4] == "-S" {
		var b strings.Builder
		for _, c := range t.order {
			if builtin(c) {
				fmt.Fprintf(&b, "-P %s ACCEPT\n", c)
			} else {
				fmt.Fprintf(&b, "-N %s\n", c)
			}
		}
		for _, c := range t.order {
			for _, r := range t.chains[c] {
				fmt.Fprintf(&b, "-A %s %s\n", c, r)
			}
		}
		return []byte(b.String()), nil
	}
	if len(argv) < 6 {
		return fail(2, "unexpected command "+line)
	}
	op, chain, rest := argv[4], argv[5], strings.Join(argv[6:], " ")
	rules, exists := t.chains[chain]
	switch op {
	case "-N":
		if exists {
			return fail(1, "iptables: Chain already exists.")
		}
		t.chains[chain] = nil
		t.order = append(t.order, chain)
	case "-F":
		if !exists {
			return fail(1, "iptables: No chain/target/match by that name.")
		}
		t.chains[chain] = nil
	case "-X":
		if !exists || len(rules) > 0 || builtin(chain) {
			return fail(1, "iptables: cannot delete chain "+chain)
		}
		for _, rs := range t.chains {
			for _, r := range rs {
				if jumpTarget(r) == chain {
					return fail(1, "iptables: Too many links.")
				}
			}
		}
		delete(t.chains, chain)
		t.order = slices.DeleteFunc(t.order, func(c string) bool { return c == chain })
	case "-A":
		if !exists {
			return fail(1, "iptables: No chain/target/match by that name.")
		}
		t.chains[chain] = append(rules, rest)
	case "-C":
		if !slices.Contains(rules, rest) {
			return fail(1, "iptables: Bad rule (does a matching rule exist in that chain?).")
		}
	case "-D":
		var n int
		if _, err := fmt.Sscan(rest, &n); err != nil || n < 1 || n > len(rules) {
			return fail(1, "iptables: Index of deletion too big.")
		}
		t.chains[chain] = slices.Delete(rules, n-1, n)
	default:
		return fail(2, "unexpected operation "+op)
	}
	return nil, nil
}

func TestApplyIdempotent(t *testing.T) {
	for _, ipv6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", ipv6), func(t *testing.T) {
			ft := newFakeTables()
			cfg := DefaultConfig()
			cfg.IPv6 = ipv6
			cfg.OutboundPortsToIgnore = mustPorts(t, "443")
			cfg.Run = ft.run
			ctx := context.Background()
			for i := range 3 {
				if err := Apply(ctx, cfg); err != nil {
					t.Fatalf("Apply #%d: %v", i+1, err)
				}
			}
			// After three Applies each table holds exactly what Rules says.
			want := map[string]map[string][]string{} // bin -> chain -> rules
			for _, argv := range Rules(cfg) {
				bin := argv[0]
				if want[bin] == nil {
					want[bin] = map[string][]string{}
				}
				if argv[4] == "-A" {
					want[bin][argv[5]] = append(want[bin][argv[5]], strings.Join(argv[6:], " "))
				}
			}
			wantBins := []string{"iptables"}
			if ipv6 {
				wantBins = append(wantBins, "ip6tables")
			}
			for _, bin := range wantBins {
				tbl := ft.tables[bin]
				if tbl == nil {
					t.Fatalf("Apply never ran %s", bin)
				}
				for _, chain := range []string{"PREROUTING", "OUTPUT", InboundChain, OutboundChain} {
					if got := tbl.chains[chain]; !slices.Equal(got, want[bin][chain]) {
						t.Errorf("%s %s after three Applies:\n got %q\nwant %q", bin, chain, got, want[bin][chain])
					}
				}
			}
			if len(ft.tables) != len(wantBins) {
				t.Errorf("Apply touched %d binaries, want %v", len(ft.tables), wantBins)
			}
			// Repeated Applies flushed rather than re-created the chains.
			var flushed int
			for _, argv := range ft.ran {
				if argv[4] == "-F" {
					flushed++
				}
			}
			if want := 2 * 2 * len(wantBins); flushed != want {
				t.Errorf("repeated Applies flushed %d times, want %d", flushed, want)
			}

			for range 2 {
				if err := Cleanup(ctx, cfg); err != nil {
					t.Fatalf("Cleanup: %v", err)
				}
			}
			for bin, tbl := range ft.tables {
				for chain, rules := range tbl.chains {
					if !builtin(chain) {
						t.Errorf("%s: chain %s left after Cleanup", bin, chain)
					}
					if len(rules) != 0 {
						t.Errorf("%s: %s still has rules after Cleanup: %q", bin, chain, rules)
					}
				}
			}
		})
	}
}

func TestCleanupKeepsOtherRules(t *testing.T) {
	ft := newFakeTables()
	nat := ft.table("iptables")
	nat.chains["OUTPUT"] = []string{"-p udp -j ACCEPT"}
	cfg := DefaultConfig()
	cfg.Run = ft.run
	ctx := context.Background()
	if err := Apply(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// A jump to our chain added by someone else, with other options.
	nat.chains["OUTPUT"] = append(nat.chains["OUTPUT"], "-d 10.0.0.1/32 -j "+OutboundChain, "-p icmp -j ACCEPT")
	if err := Cleanup(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	want := []string{"-p udp -j ACCEPT", "-p icmp -j ACCEPT"}
	if got := nat.chains["OUTPUT"]; !slices.Equal(got, want) {
		t.Errorf("OUTPUT after Cleanup = %q, want %q", got, want)
	}
}

func TestApplyErrorNamesCommand(t *testing.T) {
	ft := newFakeTables()
	ft.failOn = "--uid-owner"
	cfg := DefaultConfig()
	cfg.Run = ft.run
	err := Apply(context.Background(), cfg)
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("Apply error = %v, want a *CommandError", err)
	}
	for _, want := range []string{"iptables -w -t nat -A SLUICE_PROXY_OUTBOUND -o lo", "--uid-owner 2102", "simulated failure", "exit status 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestApplyRejectsInvalid(t *testing.T) {
	ft := newFakeTables()
	cfg := DefaultConfig()
	cfg.ProxyUID = 0
	cfg.Run = ft.run
	if err := Apply(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "proxy UID") {
		t.Errorf("Apply = %v, want the validation error", err)
	}
	if len(ft.ran) != 0 {
		t.Errorf("Apply of an invalid configuration ran %q", ft.ran)
	}
}

func TestExecRunner(t *testing.T) {
	out, err := ExecRunner(context.Background(), []string{"sh", "-c", "echo out; echo oops >&2; exit 3"})
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("ExecRunner error = %v, want *CommandError", err)
	}
	if ce.ExitCode != 3 || ce.Stderr != "oops" || string(out) != "out\n" {
		t.Errorf("ExecRunner = %q, %+v", out, ce)
	}
	if !strings.Contains(err.Error(), "sh -c 'echo out; echo oops >&2; exit 3': exit status 3: oops") {
		t.Errorf("error text %q", err)
	}
	if _, err := ExecRunner(context.Background(), []string{"/nonexistent/iptables"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/iptables") {
		t.Errorf("missing binary: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	got := ShellQuote([]string{"iptables", "!", "-d", "127.0.0.1/32", "it's", "", "a b"})
	want := `iptables '!' -d 127.0.0.1/32 'it'\''s' '' 'a b'`
	if got != want {
		t.Errorf("ShellQuote = %s, want %s", got, want)
	}
}
