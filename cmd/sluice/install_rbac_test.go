package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	meshk8s "github.com/sluicehq/sluice/mesh/kubernetes"
)

// asServiceAccount is a client that acts as the ServiceAccount sluice/name.
func asServiceAccount(t *testing.T, cfg *rest.Config, name string) clientset.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:sluice:" + name}
	kube, err := clientset.NewForConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	return kube
}

// checkRolesMayWork checks, on an API server where `sluice install` was
// applied, that the roles' RBAC lets them do what this branch added: the
// destination service elects its status writer on its Lease, and the
// identity service watches its trust anchors and issuer.
func checkRolesMayWork(t *testing.T, cfg *rest.Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), roleWait)
	defer cancel()

	// destination: RunAsLeader leads, with the Lease it creates.
	var leading atomic.Bool
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- meshk8s.RunAsLeader(lctx, meshk8s.LeaderElection{
			Client: asServiceAccount(t, cfg, "sluice-destination"), Namespace: "sluice", Identity: "rbac-check",
			LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 200 * time.Millisecond,
		}, func(ctx context.Context) error {
			leading.Store(true)
			<-ctx.Done()
			return nil
		})
	}()
	poll(t, "the destination's ServiceAccount to lead on its Lease", func() (bool, string) {
		return leading.Load(), "not leading (is the Role sluice-destination missing leases?)"
	})
	stop()
	if err := <-done; err != nil {
		t.Errorf("RunAsLeader as sluice-destination: %v", err)
	}

	// identity: loads and watches its ConfigMap and Secret.
	kube := asServiceAccount(t, cfg, "sluice-identity")
	ca, err := meshk8s.LoadCA(ctx, kube, "sluice", "", "")
	if err != nil {
		t.Fatalf("LoadCA as sluice-identity: %v", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	reported := make(chan meshk8s.CAState, 10)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		meshk8s.WatchCA(wctx, kube, "sluice", "", "", ca, func(st meshk8s.CAState) { reported <- st })
	}()
	select {
	case st := <-reported:
		if st.Unusable != nil || st.IssuerRejected != nil {
			t.Errorf("WatchCA as sluice-identity: %+v", st)
		}
	case <-ctx.Done():
		t.Error("WatchCA as sluice-identity reported nothing (may it list and watch its ConfigMap and Secret?)")
	}
	stopWatch()
	<-watched
}
