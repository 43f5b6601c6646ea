// Command e2e-cluster brings the end-to-end tests' single-node Kubernetes
// cluster up and down (see package test/e2e/cluster). It needs root.
//
//	e2e-cluster up       start the cluster (a no-op when it runs) and print its kubeconfig
//	e2e-cluster down     stop it and give the host back; fails listing what differs from before up
//	e2e-cluster status   say whether it runs and is healthy
//	e2e-cluster diag     print processes, nodes, pods, events and component logs
//	e2e-cluster import TAR...  import OCI image archives into the node's containerd
//
// The binaries come from hack/kube-node.sh and hack/envtest.sh (make e2e-up
// runs them first).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicehq/sluice/test/e2e/cluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg cluster.Config
	flag.StringVar(&cfg.WorkDir, "work-dir", "", "the cluster's work directory (default ~/.cache/sluice/cluster/run)")
	flag.StringVar(&cfg.BinDir, "bin-dir", "", "kubelet, kube-controller-manager, kube-scheduler, kube-proxy, coredns (default: hack/kube-node.sh --print-dir)")
	flag.StringVar(&cfg.EnvtestBinDir, "envtest-bin-dir", "", "kube-apiserver, etcd (default: hack/envtest.sh --print-dir)")
	verbose := flag.Bool("v", false, "log every step")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: e2e-cluster [flags] up|down|status|diag|import TAR...")
		flag.PrintDefaults()
	}
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if flag.NArg() == 0 {
		flag.Usage()
		return errors.New("no command given")
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it runs containerd and the kubelet and creates interfaces and iptables rules (try sudo)")
	}
	switch cmd := flag.Arg(0); cmd {
	case "up":
		cl, err := cluster.Up(ctx, cfg)
		if err != nil {
			return err
		}
		fmt.Printf("export KUBECONFIG=%s\n", cl.Kubeconfig)
		return nil
	case "down":
		return cluster.Down(ctx, cfg)
	case "status":
		cl, err := cluster.Open(cfg)
		if err != nil {
			return err
		}
		if err := cl.Healthy(ctx); err != nil {
			return fmt.Errorf("not up: %w", err)
		}
		fmt.Printf("up: node %s at %s, KUBECONFIG=%s\n", cl.Config.NodeName, cl.NodeIP, cl.Kubeconfig)
		return nil
	case "diag":
		cl, err := cluster.Open(cfg)
		if err != nil {
			return err
		}
		cl.Diagnostics(ctx, os.Stdout)
		return nil
	case "import":
		cl, err := cluster.Open(cfg)
		if err != nil {
			return err
		}
		return cl.ImportImages(ctx, flag.Args()[1:]...)
	default:
		flag.Usage()
		return fmt.Errorf("unknown command %q (want up, down, status, diag or import)", cmd)
	}
}
