package netns

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/proxy/iptables"
)

// TestInitIdempotent runs `sluice-proxy init` twice and `--cleanup` twice in
// a fresh namespace, for each iptables backend and both IP versions: the rules
// are those Rules computes, each once; a second init changes nothing; cleanup
// restores the namespace exactly, keeping rules that are not Sluice's.
func TestInitIdempotent(t *testing.T) {
	for _, mode := range []iptables.Mode{iptables.ModeNFT, iptables.ModeLegacy} {
		t.Run(string(mode), func(t *testing.T) {
			v4, v6 := "iptables-"+string(mode), "ip6tables-"+string(mode)
			requireNetns(t, v4, v6)
			bins := buildBinaries(t)
			ns := newNetns(t, "init-"+string(mode))

			// Someone else's rules, which cleanup must keep.
			for _, bin := range []string{v4, v6} {
				ns.run(t, bin, "-w", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT")
			}
			save := func() string {
				t.Helper()
				return ns.run(t, v4, "-w", "-t", "nat", "-S") + "--- ipv6\n" + ns.run(t, v6, "-w", "-t", "nat", "-S")
			}
			pristine := save()

			args := []string{"init", "--iptables-mode", string(mode), "--ipv6",
				"--inbound-ports-to-ignore", "25,4190", "--outbound-ports-to-ignore", "443,9000-9010",
				"--subnets-to-ignore", "10.96.0.0/12,fd00::/8"}
			cfg := iptables.DefaultConfig()
			cfg.Mode, cfg.IPv6 = mode, true
			cfg.InboundPortsToIgnore = []iptables.PortRange{{First: 25, Last: 25}, {First: 4190, Last: 4190}}
			cfg.OutboundPortsToIgnore = []iptables.PortRange{{First: 443, Last: 443}, {First: 9000, Last: 9010}}
			var err error
			if cfg.SubnetsToIgnore, err = iptables.ParseSubnets("10.96.0.0/12,fd00::/8"); err != nil {
				t.Fatal(err)
			}

			ns.run(t, bins.proxy, args...)
			first := save()
			checkInstalled(t, first, cfg)
			ns.run(t, bins.proxy, args...)
			if second := save(); second != first {
				t.Errorf("a second init changed the rules:\n--- after the first\n%s--- after the second\n%s", first, second)
			}

			for i := range 2 {
				ns.run(t, bins.proxy, "init", "--cleanup", "--iptables-mode", string(mode), "--ipv6")
				if after := save(); after != pristine {
					t.Errorf("after cleanup #%d the nat tables differ from before init:\n--- before\n%s--- after\n%s", i+1, pristine, after)
				}
			}
		})
	}
}

// checkInstalled compares iptables -S output (IPv4, then IPv6 after a
// "--- ipv6" line) with what Rules says: each family has one jump from
// PREROUTING and one from OUTPUT, and each of Sluice's chains holds exactly
// the rules Rules appends to it, in order (compared by their comments).
func checkInstalled(t *testing.T, saved string, cfg iptables.Config) {
	t.Helper()
	v4, v6, _ := strings.Cut(saved, "--- ipv6\n")
	want := map[string][]string{} // binary -> "CHAIN comment" in order
	for _, argv := range iptables.Rules(cfg) {
		if argv[4] != "-A" {
			continue
		}
		want[argv[0]] = append(want[argv[0]], argv[5]+" "+argv[len(argv)-1])
	}
	for _, fam := range []struct {
		bin, listing string
	}{{"iptables-" + string(cfg.Mode), v4}, {"ip6tables-" + string(cfg.Mode), v6}} {
		var got []string
		for line := range strings.Lines(fam.listing) {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "-A" {
				continue
			}
			comment := ""
			for i := 0; i+1 < len(f); i++ {
				if f[i] == "--comment" {
					comment = strings.Trim(f[i+1], `"`)
				}
			}
			if strings.HasPrefix(comment, "sluice-proxy/") {
				got = append(got, f[1]+" "+comment)
			}
		}
		// iptables -S lists chains in its own order; compare per chain.
		for _, chain := range []string{"PREROUTING", "OUTPUT", iptables.InboundChain, iptables.OutboundChain} {
			g, w := onlyChain(got, chain), onlyChain(want[fam.bin], chain)
			if strings.Join(g, "\n") != strings.Join(w, "\n") {
				t.Errorf("%s %s: got rules\n  %s\nwant\n  %s\nfull listing:\n%s", fam.bin, chain,
					strings.Join(g, "\n  "), strings.Join(w, "\n  "), fam.listing)
			}
		}
	}
}

func onlyChain(rules []string, chain string) []string {
	var out []string
	for _, r := range rules {
		if strings.HasPrefix(r, chain+" ") {
			out = append(out, r)
		}
	}
	return out
}

// TestInitErrorNamesCommand runs init where the iptables binary cannot be
// found: it fails, naming the command it tried.
func TestInitErrorNamesCommand(t *testing.T) {
	requireNetns(t, "iptables")
	bins := buildBinaries(t)
	ns := newNetns(t, "init-err")
	cmd := ns.command(bins.proxy, "init", "--iptables-mode", "nft")
	cmd.Env = []string{"PATH=/nonexistent"}
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Fatalf("init without iptables: %v, want exit status 1\n%s", err, out)
	}
	for _, want := range []string{"iptables-nft -w -t nat -S", "executable file not found"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("init's error output lacks %q:\n%s", want, out)
		}
	}
}
