// Package iptables writes the nat rules that make a pod's TCP traffic pass
// through its sidecar, as `sluice-proxy init` does in an init container: inbound
// connections are redirected to the proxy's inbound port, outbound ones to its
// outbound port, except the proxy's own traffic (by UID), loopback, and the
// ports and subnets the user skips. The proxy recovers each connection's
// original destination with SO_ORIGINAL_DST.
//
// It runs the iptables binaries (iptables-nft, iptables-legacy or plain
// iptables, and the ip6tables counterparts) in the current network namespace;
// only the standard library is used. Rules computes the commands without
// running anything; Apply and Cleanup are idempotent.
//
// The rules, for IPv4 with the defaults (each also carries
// -m comment --comment sluice-proxy/NAME):
//
//	-t nat -N SLUICE_PROXY_INBOUND
//	-t nat -A SLUICE_PROXY_INBOUND -p tcp --dport 4191 -j RETURN              (admin port)
//	-t nat -A SLUICE_PROXY_INBOUND -p tcp -m multiport --dports P,... -j RETURN (skipped inbound ports)
//	-t nat -A SLUICE_PROXY_INBOUND -s CIDR -j RETURN                          (skipped subnets)
//	-t nat -A SLUICE_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143
//	-t nat -A PREROUTING -p tcp -j SLUICE_PROXY_INBOUND
//	-t nat -N SLUICE_PROXY_OUTBOUND
//	-t nat -A SLUICE_PROXY_OUTBOUND -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 2102 -j SLUICE_PROXY_INBOUND
//	                                                      (the proxy to its own pod: inbound, as any client)
//	-t nat -A SLUICE_PROXY_OUTBOUND -m owner --uid-owner 2102 -j RETURN       (the proxy itself)
//	-t nat -A SLUICE_PROXY_OUTBOUND -o lo ! -d 127.0.0.1/32 -j RETURN         (the pod's own IP)
//	-t nat -A SLUICE_PROXY_OUTBOUND -d 127.0.0.0/8 -j RETURN                  (loopback)
//	-t nat -A SLUICE_PROXY_OUTBOUND -p tcp -m multiport --dports P,... -j RETURN (skipped outbound ports)
//	-t nat -A SLUICE_PROXY_OUTBOUND -d CIDR -j RETURN                         (skipped subnets)
//	-t nat -A SLUICE_PROXY_OUTBOUND -p tcp -j REDIRECT --to-ports 4140
//	-t nat -A OUTPUT -p tcp -j SLUICE_PROXY_OUTBOUND
//
// As in Linkerd, a connection from the application to its own pod IP leaves
// through lo and reaches the application directly: locally generated packets
// are NATed once, in OUTPUT, so PREROUTING never redirects them inbound. The
// proxy's own connections to its pod IP are sent to the inbound side, which
// forwards to 127.0.0.1 (or ::1) and so never loops.
package iptables

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
)

// The chains this package owns in the nat table.
const (
	InboundChain  = "SLUICE_PROXY_INBOUND"
	OutboundChain = "SLUICE_PROXY_OUTBOUND"
)

// Defaults, matching DESIGN.md's ports and UID.
const (
	DefaultProxyUID     = 2102
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
	DefaultAdminPort    = 4191
)

// commentPrefix starts every rule's comment, so rules are recognisable in
// iptables-save output.
const commentPrefix = "sluice-proxy/"

// multiportLimit is how many ports one -m multiport rule may name (a range
// counts as two).
const multiportLimit = 15

// Mode selects the iptables backend.
type Mode string

const (
	// ModePlain runs the iptables and ip6tables commands, whichever backend
	// they are linked to on this system.
	ModePlain Mode = ""
	// ModeNFT runs iptables-nft and ip6tables-nft (the nf_tables backend).
	ModeNFT Mode = "nft"
	// ModeLegacy runs iptables-legacy and ip6tables-legacy (x_tables).
	ModeLegacy Mode = "legacy"
)

// DetectMode returns ModeNFT when iptables-nft is on PATH, else ModePlain.
func DetectMode() Mode {
	if _, err := exec.LookPath("iptables-nft"); err == nil {
		return ModeNFT
	}
	return ModePlain
}

// ParseMode reads a mode name: "nft", "legacy", or "" / "plain" for the plain
// iptables commands.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "nft":
		return ModeNFT, nil
	case "legacy":
		return ModeLegacy, nil
	case "", "plain":
		return ModePlain, nil
	}
	return "", fmt.Errorf("iptables mode %q: want nft or legacy", s)
}

// binaries returns the IPv4 and IPv6 commands of a mode.
func (m Mode) binaries() (v4, v6 string) {
	switch m {
	case ModeNFT:
		return "iptables-nft", "ip6tables-nft"
	case ModeLegacy:
		return "iptables-legacy", "ip6tables-legacy"
	}
	return "iptables", "ip6tables"
}

// PortRange is an inclusive range of TCP ports; a single port has First == Last.
type PortRange struct {
	First, Last uint16
}

// String formats the range as "8080" or "9000-9010".
func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// multiport formats the range for -m multiport: "8080" or "9000:9010".
func (r PortRange) multiport() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d:%d", r.First, r.Last)
}

// ParsePortRanges reads a comma-separated list of ports and ranges, such as
// "4190,4191,9000-9010". Spaces around items are ignored; an empty string is
// an empty list.
func ParsePortRanges(s string) ([]PortRange, error) {
	var out []PortRange
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		first, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", item, err)
		}
		last := first
		if isRange {
			if last, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("port range %q: %w", item, err)
			}
			if last < first {
				return nil, fmt.Errorf("port range %q: %d is below %d", item, last, first)
			}
		}
		out = append(out, PortRange{First: first, Last: last})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("want a number from 1 to 65535")
	}
	return uint16(n), nil
}

// ParseSubnets reads a comma-separated list of CIDRs ("10.0.0.0/8,fd00::/8").
// An empty string is an empty list.
func ParseSubnets(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("subnet %q: want a CIDR such as 10.0.0.0/8", item)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Config says which traffic to redirect where. The zero value is not valid;
// start from DefaultConfig.
type Config struct {
	// ProxyUID is the UID the proxy runs as; its own connections are never
	// redirected (that would loop). Must be positive.
	ProxyUID int
	// InboundPort and OutboundPort are the proxy's listeners that inbound and
	// outbound connections are redirected to.
	InboundPort, OutboundPort int
	// AdminPort is the proxy's admin port; inbound connections to it are never
	// redirected, so probes and scrapers reach the proxy itself.
	AdminPort int
	// InboundPortsToIgnore are destination ports of inbound connections that
	// go straight to the application.
	InboundPortsToIgnore []PortRange
	// OutboundPortsToIgnore are destination ports of outbound connections that
	// bypass the proxy.
	OutboundPortsToIgnore []PortRange
	// SubnetsToIgnore bypass the proxy: outbound connections to them and
	// inbound connections from them. IPv6 subnets need IPv6.
	SubnetsToIgnore []netip.Prefix
	// Mode selects the iptables commands.
	Mode Mode
	// IPv6 also writes the rules with ip6tables.
	IPv6 bool

	// Run runs one command for Apply and Cleanup; nil runs it with os/exec.
	// Rules ignores it.
	Run Runner
	// Log, when set, records every command Apply and Cleanup run.
	Log *slog.Logger
}

// DefaultConfig is the configuration for DESIGN.md's ports and UID, with the
// plain iptables commands and IPv4 only.
func DefaultConfig() Config {
	return Config{
		ProxyUID:     DefaultProxyUID,
		InboundPort:  DefaultInboundPort,
		OutboundPort: DefaultOutboundPort,
		AdminPort:    DefaultAdminPort,
	}
}

// Validate reports every problem of the configuration, one per line.
func (c Config) Validate() error {
	var errs []error
	if c.ProxyUID <= 0 {
		errs = append(errs, fmt.Errorf("proxy UID %d: want a positive UID (0 would exempt every root process)", c.ProxyUID))
	}
	for _, p := range []struct {
		name string
		port int
	}{{"inbound port", c.InboundPort}, {"outbound port", c.OutboundPort}, {"admin port", c.AdminPort}} {
		if p.port < 1 || p.port > 65535 {
			errs = append(errs, fmt.Errorf("%s %d: want 1 to 65535", p.name, p.port))
		}
	}
	if c.InboundPort == c.OutboundPort {
		errs = append(errs, fmt.Errorf("inbound and outbound ports are both %d", c.InboundPort))
	}
	if c.AdminPort == c.InboundPort || c.AdminPort == c.OutboundPort {
		errs = append(errs, fmt.Errorf("admin port %d is also a redirect target", c.AdminPort))
	}
	for _, list := range [][]PortRange{c.InboundPortsToIgnore, c.OutboundPortsToIgnore} {
		for _, r := range list {
			if r.First == 0 || r.Last < r.First {
				errs = append(errs, fmt.Errorf("port range %d-%d: want 1 <= first <= last", r.First, r.Last))
			}
		}
	}
	for _, s := range c.SubnetsToIgnore {
		if !s.IsValid() {
			errs = append(errs, errors.New("an ignored subnet is not a valid CIDR"))
			continue
		}
		if s.Addr().Is6() && !s.Addr().Is4In6() && !c.IPv6 {
			errs = append(errs, fmt.Errorf("subnet %s is IPv6: enable IPv6 to ignore it", s))
		}
	}
	switch c.Mode {
	case ModePlain, ModeNFT, ModeLegacy:
	default:
		errs = append(errs, fmt.Errorf("iptables mode %q: want nft or legacy", c.Mode))
	}
	return errors.Join(errs...)
}

// stepKind says how Apply treats a command.
type stepKind int

const (
	// newChain creates a chain, or flushes it when it exists.
	newChain stepKind = iota
	// appendRule appends a rule to one of our (just flushed) chains.
	appendRule
	// jump appends a rule to a built-in chain unless an identical one exists.
	jump
)

// step is one command of the plan for one iptables binary.
type step struct {
	kind  stepKind
	chain string
	argv  []string // complete, binary first, with -N or -A
}

// family is one IP version's binary and loopback addresses.
type family struct {
	bin       string
	v6        bool
	localhost string // the address the pod's loopback services listen on
	loopback  string // the whole loopback range
}

func (c Config) families() []family {
	v4, v6 := c.Mode.binaries()
	fams := []family{{bin: v4, localhost: "127.0.0.1/32", loopback: "127.0.0.0/8"}}
	if c.IPv6 {
		fams = append(fams, family{bin: v6, v6: true, localhost: "::1/128", loopback: "::1/128"})
	}
	return fams
}

// plan computes the steps for one family, in order.
func (c Config) plan(f family) []step {
	var steps []step
	nat := func(args ...string) []string { return append([]string{f.bin, "-w", "-t", "nat"}, args...) }
	chain := func(name string) {
		steps = append(steps, step{kind: newChain, chain: name, argv: nat("-N", name)})
	}
	rule := func(chainName, comment string, args ...string) {
		argv := nat(append(append([]string{"-A", chainName}, args...), "-m", "comment", "--comment", commentPrefix+comment)...)
		steps = append(steps, step{kind: appendRule, chain: chainName, argv: argv})
	}
	jumpTo := func(builtin, target, comment string) {
		argv := nat("-A", builtin, "-p", "tcp", "-j", target, "-m", "comment", "--comment", commentPrefix+comment)
		steps = append(steps, step{kind: jump, chain: builtin, argv: argv})
	}
	var subnets []string
	for _, s := range c.SubnetsToIgnore {
		if is6 := s.Addr().Is6() && !s.Addr().Is4In6(); is6 == f.v6 {
			subnets = append(subnets, s.String())
		}
	}

	chain(InboundChain)
	rule(InboundChain, "ignore-admin-port", "-p", "tcp", "--dport", strconv.Itoa(c.AdminPort), "-j", "RETURN")
	for _, ports := range multiportBatches(c.InboundPortsToIgnore) {
		rule(InboundChain, "ignore-inbound-ports", "-p", "tcp", "-m", "multiport", "--dports", ports, "-j", "RETURN")
	}
	for _, s := range subnets {
		rule(InboundChain, "ignore-subnet", "-s", s, "-j", "RETURN")
	}
	rule(InboundChain, "redirect-inbound", "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(c.InboundPort))
	jumpTo("PREROUTING", InboundChain, "inbound")

	chain(OutboundChain)
	// The proxy's own connections to its pod's address (an outbound request
	// whose endpoint is this very pod) go to the inbound side, as any
	// client's would. The inbound side forwards to loopback, so it never
	// matches this rule itself.
	rule(OutboundChain, "proxy-to-own-pod", "-o", "lo", "!", "-d", f.localhost, "-m", "owner", "--uid-owner", strconv.Itoa(c.ProxyUID), "-j", InboundChain)
	rule(OutboundChain, "ignore-proxy-uid", "-m", "owner", "--uid-owner", strconv.Itoa(c.ProxyUID), "-j", "RETURN")
	rule(OutboundChain, "ignore-pod-ip", "-o", "lo", "!", "-d", f.localhost, "-j", "RETURN")
	rule(OutboundChain, "ignore-loopback", "-d", f.loopback, "-j", "RETURN")
	for _, ports := range multiportBatches(c.OutboundPortsToIgnore) {
		rule(OutboundChain, "ignore-outbound-ports", "-p", "tcp", "-m", "multiport", "--dports", ports, "-j", "RETURN")
	}
	for _, s := range subnets {
		rule(OutboundChain, "ignore-subnet", "-d", s, "-j", "RETURN")
	}
	rule(OutboundChain, "redirect-outbound", "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(c.OutboundPort))
	jumpTo("OUTPUT", OutboundChain, "outbound")
	return steps
}

// multiportBatches groups port ranges into -m multiport --dports values of at
// most multiportLimit ports each (a range counts as two).
func multiportBatches(ranges []PortRange) []string {
	var out, cur []string
	n := 0
	for _, r := range ranges {
		cost := 1
		if r.First != r.Last {
			cost = 2
		}
		if n+cost > multiportLimit {
			out = append(out, strings.Join(cur, ","))
			cur, n = nil, 0
		}
		cur = append(cur, r.multiport())
		n += cost
	}
	if len(cur) > 0 {
		out = append(out, strings.Join(cur, ","))
	}
	return out
}

// Rules returns the commands that install cfg's rules in a network namespace
// that has none yet, binary first, in order: IPv4, then IPv6 when enabled. It
// runs nothing. (Apply runs the same commands, except that it flushes a chain
// that already exists instead of creating it, and skips a jump rule that is
// already there.) Call cfg.Validate first; Rules does not check.
func Rules(cfg Config) [][]string {
	var out [][]string
	for _, f := range cfg.families() {
		for _, s := range cfg.plan(f) {
			out = append(out, s.argv)
		}
	}
	return out
}

// ShellQuote formats a command line for a shell: arguments with characters
// other than letters, digits and -_./:=,+@% are single-quoted.
func ShellQuote(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		parts[i] = quoteArg(a)
	}
	return strings.Join(parts, " ")
}

func quoteArg(s string) string {
	if s == "" {
		return "''"
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
