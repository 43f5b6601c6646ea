package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/proxy/iptables"
)

// initEnvPrefix prefixes the environment variables that set init's flags:
// --proxy-uid is SLUICE_INIT_PROXY_UID, and so on. A flag given on the command
// line wins over its variable.
const initEnvPrefix = "SLUICE_INIT_"

// runInit is `sluice-proxy init`: it writes the iptables rules that redirect
// the pod's TCP traffic through the proxy, in the current network namespace
// (an init container with NET_ADMIN and NET_RAW), or removes them with
// --cleanup. It returns the exit code.
func runInit(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice-proxy init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := iptables.DefaultConfig()
	proxyUID := fs.Int("proxy-uid", def.ProxyUID, "UID the proxy runs as; its own traffic is never redirected")
	inboundPort := fs.Int("inbound-port", def.InboundPort, "proxy port inbound TCP is redirected to")
	outboundPort := fs.Int("outbound-port", def.OutboundPort, "proxy port outbound TCP is redirected to")
	adminPort := fs.Int("admin-port", def.AdminPort, "proxy admin port, never redirected inbound")
	inboundIgnore := fs.String("inbound-ports-to-ignore", "", "inbound destination ports that go straight to the application (e.g. 4190,9000-9010)")
	outboundIgnore := fs.String("outbound-ports-to-ignore", "", "outbound destination ports that bypass the proxy (e.g. 443,6443)")
	subnetsIgnore := fs.String("subnets-to-ignore", "", "CIDRs that bypass the proxy: outbound to them, inbound from them")
	mode := fs.String("iptables-mode", "", "nft or legacy; default nft when iptables-nft is installed, else the plain iptables command")
	ipv6 := fs.Bool("ipv6", false, "also write the rules with ip6tables")
	dryRun := fs.Bool("dry-run", false, "print the commands instead of running them")
	cleanup := fs.Bool("cleanup", false, "remove Sluice's chains and the rules that jump to them")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice-proxy init [flags]\n\n"+
			"Writes the nat rules that send the pod's TCP traffic through sluice-proxy.\n"+
			"Every flag can also be set with %s<FLAG> (upper case, - as _), e.g. %sPROXY_UID.\n\n", initEnvPrefix, initEnvPrefix)
		fs.PrintDefaults()
	}

	// Environment first, so that the command line wins.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := initEnvPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintf(stderr, "sluice-proxy init: %v\n", envErr)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sluice-proxy init: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "sluice-proxy init: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}

	cfg := def
	cfg.ProxyUID, cfg.InboundPort, cfg.OutboundPort, cfg.AdminPort = *proxyUID, *inboundPort, *outboundPort, *adminPort
	cfg.IPv6 = *ipv6
	var problems []string
	var err error
	if cfg.InboundPortsToIgnore, err = iptables.ParsePortRanges(*inboundIgnore); err != nil {
		problems = append(problems, "--inbound-ports-to-ignore: "+err.Error())
	}
	if cfg.OutboundPortsToIgnore, err = iptables.ParsePortRanges(*outboundIgnore); err != nil {
		problems = append(problems, "--outbound-ports-to-ignore: "+err.Error())
	}
	if cfg.SubnetsToIgnore, err = iptables.ParseSubnets(*subnetsIgnore); err != nil {
		problems = append(problems, "--subnets-to-ignore: "+err.Error())
	}
	if *mode == "" {
		cfg.Mode = iptables.DetectMode()
	} else if cfg.Mode, err = iptables.ParseMode(*mode); err != nil {
		problems = append(problems, "--iptables-mode: "+err.Error())
	}
	if len(problems) == 0 {
		if err := cfg.Validate(); err != nil {
			problems = append(problems, strings.Split(err.Error(), "\n")...)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintf(stderr, "sluice-proxy init: %s\n", p)
		}
		return 2
	}

	if *dryRun {
		if *cleanup {
			fmt.Fprintln(stdout, "# --cleanup deletes every rule jumping to these chains, then flushes and deletes them:")
			fmt.Fprintf(stdout, "# %s %s\n", iptables.InboundChain, iptables.OutboundChain)
			return 0
		}
		for _, argv := range iptables.Rules(cfg) {
			fmt.Fprintln(stdout, iptables.ShellQuote(argv))
		}
		return 0
	}

	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	what, do := "writing the iptables rules", iptables.Apply
	if *cleanup {
		what, do = "removing the iptables rules", iptables.Cleanup
	}
	if err := do(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "sluice-proxy init: %s: %v\n", what, err)
		return 1
	}
	cfg.Log.Info("done", "action", what, "mode", modeName(cfg.Mode), "ipv6", cfg.IPv6)
	return 0
}

func modeName(m iptables.Mode) string {
	if m == iptables.ModePlain {
		return "plain"
	}
	return string(m)
}
