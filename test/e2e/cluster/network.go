package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// run runs a host command and returns an error quoting its output.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func linkExists(ctx context.Context, name string) bool {
	return exec.CommandContext(ctx, "ip", "link", "show", "dev", name).Run() == nil
}

// createNodeBridge creates NodeBridge carrying NodeIP/32. A bridge rather
// than a dummy link because the dummy module may be missing; a non-loopback
// address because Endpoints refuse 127.0.0.0/8.
func createNodeBridge(ctx context.Context, c Config) error {
	if linkExists(ctx, c.NodeBridge) {
		return fmt.Errorf("interface %s already exists: another cluster is up or a run was killed; run Down (e2e-cluster down) first", c.NodeBridge)
	}
	if err := run(ctx, "ip", "link", "add", c.NodeBridge, "type", "bridge"); err != nil {
		return err
	}
	if err := run(ctx, "ip", "addr", "add", c.NodeIP.String()+"/32", "dev", c.NodeBridge); err != nil {
		return err
	}
	return run(ctx, "ip", "link", "set", c.NodeBridge, "up")
}

// deleteLinks deletes the veths attached to CNIBridge, then both bridges.
func deleteLinks(ctx context.Context, c Config) error {
	var errs []error
	if out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show", "master", c.CNIBridge).Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				if err := run(ctx, "ip", "link", "del", name); err != nil && linkExists(ctx, name) {
					errs = append(errs, err)
				}
			}
		}
	}
	for _, l := range []string{c.CNIBridge, c.NodeBridge} {
		if linkExists(ctx, l) {
			if err := run(ctx, "ip", "link", "del", l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// guardRules keep cluster traffic on the machine: nothing from ClusterCIDR
// is forwarded out of Uplink and nothing from Uplink is forwarded to it (the
// CNI bridge enables IP forwarding), and the host sends nothing for a pod
// or a ClusterIP out of Uplink (as it would to a ClusterIP kube-proxy has
// not programmed yet: the default route leads there).
func guardRules(c Config) [][]string {
	cidr, svc := c.ClusterCIDR.String(), c.ServiceCIDR.String()
	comment := []string{"-m", "comment", "--comment", "sluice-e2e: cluster traffic stays local"}
	rule := func(r ...string) []string {
		return append(append(r[:len(r)-2:len(r)-2], comment...), r[len(r)-2:]...)
	}
	return [][]string{
		rule("FORWARD", "-s", cidr, "-o", c.Uplink, "-j", "DROP"),
		rule("FORWARD", "-d", cidr, "-i", c.Uplink, "-j", "DROP"),
		rule("OUTPUT", "-d", cidr, "-o", c.Uplink, "-j", "REJECT"),
		rule("OUTPUT", "-d", svc, "-o", c.Uplink, "-j", "REJECT"),
	}
}

// addGuardRules inserts the guard rules unless present.
func addGuardRules(ctx context.Context, c Config) error {
	for _, r := range guardRules(c) {
		if exec.CommandContext(ctx, "iptables", append([]string{"-w", "-C"}, r...)...).Run() == nil {
			continue
		}
		if err := run(ctx, "iptables", append([]string{"-w", "-I"}, r...)...); err != nil {
			return err
		}
	}
	return nil
}

// removeIptables deletes the guard rules, then every KUBE-* and CNI-*
// chain (and the jumps to them) that was not there before Up, in the
// nf_tables and legacy front ends, IPv4 and IPv6.
func removeIptables(ctx context.Context, c Config, before []string) error {
	var errs []error
	for _, r := range guardRules(c) {
		for exec.CommandContext(ctx, "iptables", append([]string{"-w", "-C"}, r...)...).Run() == nil {
			if err := run(ctx, "iptables", append([]string{"-w", "-D"}, r...)...); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	ours := func(tool, table, chain string) bool {
		return (strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-")) &&
			!slices.Contains(before, fmt.Sprintf("%s %s %s", tool, table, chain))
	}
	for _, tool := range iptablesTools {
		if _, err := exec.LookPath(tool + "-save"); err != nil {
			continue
		}
		out, err := exec.CommandContext(ctx, tool+"-save").Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s-save: %w", tool, err))
			continue
		}
		type rule struct{ table, spec string }
		var jumps []rule
		chains := map[string][]string{}
		table := ""
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "*"):
				table = line[1:]
			case strings.HasPrefix(line, ":"):
				ch := strings.Fields(line[1:])[0]
				if ours(tool, table, ch) {
					chains[table] = append(chains[table], ch)
				}
			case strings.HasPrefix(line, "-A "):
				f := strings.Fields(line)
				// A jump from a chain that stays (a built-in one) into one
				// of ours: delete it by its spec.
				if len(f) > 1 && !ours(tool, table, f[1]) {
					for i := range f {
						if (f[i] == "-j" || f[i] == "-g") && i+1 < len(f) && ours(tool, table, f[i+1]) {
							jumps = append(jumps, rule{table, line[len("-A "):]})
							break
						}
					}
				}
			}
		}
		for _, j := range jumps {
			args, err := splitRule(j.spec)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := run(ctx, tool, append([]string{"-w", "-t", j.table, "-D"}, args...)...); err != nil {
				errs = append(errs, err)
			}
		}
		for t, chs := range chains {
			for _, ch := range chs {
				if err := run(ctx, tool, "-w", "-t", t, "-F", ch); err != nil {
					errs = append(errs, err)
				}
			}
			for _, ch := range chs {
				if err := run(ctx, tool, "-w", "-t", t, "-X", ch); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits an iptables-save rule into arguments, honouring the
// double quotes iptables-save puts around comments.
func splitRule(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && inQuote && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case ch == '"':
			inQuote = !inQuote
			have = true
		case ch == ' ' && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(ch)
			have = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote in iptables rule %q", s)
	}
	if have {
		args = append(args, cur.String())
	}
	return args, nil
}

// removeNewNFTables deletes the nf_tables tables that appeared since
// before and hold no rule: iptables-nft creates a table the first time a
// rule goes into it and leaves it, empty, when the rule goes.
func removeNewNFTables(ctx context.Context, before []string) error {
	var errs []error
	for _, t := range nftTables(ctx) {
		if slices.Contains(before, t) || !nftTableEmpty(ctx, t) {
			continue
		}
		f := strings.Fields(t)
		if err := run(ctx, "nft", "delete", "table", f[0], f[1]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
