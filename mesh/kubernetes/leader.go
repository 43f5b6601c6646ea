package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// StatusLeaseName is the Lease, in the control plane's namespace, that the
// replicas of the destination service elect the one HTTPRoute status
// writer with.
const StatusLeaseName = "sluice-destination-status"

// Default timings of a leader election, client-go's (and
// controller-runtime's): a leader that cannot renew for RenewDeadline stops
// its work; another replica takes over LeaseDuration after the last renewal
// it saw, or at its next try (every RetryPeriod) after a leader released the
// Lease on a clean stop.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaderElection configures RunAsLeader.
type LeaderElection struct {
	// Client reads and writes the Lease (coordination.k8s.io/v1).
	Client clientset.Interface
	// Namespace and Name of the Lease; Name defaults to StatusLeaseName.
	Namespace, Name string
	// Identity names this replica in the Lease: its pod name. Required, and
	// unique among the replicas.
	Identity string
	// Timings; zero means the Default of each.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// OnLeading, if not nil, is called with true when this replica starts
	// leading (before the work starts) and with false once the work has
	// stopped.
	OnLeading func(leading bool)
	// Log receives the elections' outcomes; nil means slog.Default().
	Log *slog.Logger
}

// RunAsLeader runs work while this replica holds the Lease, until ctx is
// done, and returns nil then (or at once an error saying what in le is
// wrong). Every time it acquires the Lease it calls work with a context
// that ends as soon as the Lease is lost (it could not be renewed within
// RenewDeadline, before any other replica can take it over) or ctx is
// done; once work has returned it contends again. When ctx ends while
// leading, it waits for work to return, and only then releases the Lease,
// so that another replica takes over at once without ever working beside
// this one. A work that returns by itself (an error is logged) gives the
// Lease up and contends again after RetryPeriod.
func RunAsLeader(ctx context.Context, le LeaderElection, work func(context.Context) error) error {
	if le.Name == "" {
		le.Name = StatusLeaseName
	}
	if le.LeaseDuration <= 0 {
		le.LeaseDuration = DefaultLeaseDuration
	}
	if le.RenewDeadline <= 0 {
		le.RenewDeadline = DefaultRenewDeadline
	}
	if le.RetryPeriod <= 0 {
		le.RetryPeriod = DefaultRetryPeriod
	}
	if le.OnLeading == nil {
		le.OnLeading = func(bool) {}
	}
	if le.Log == nil {
		le.Log = slog.Default()
	}
	le.Log = le.Log.With("lease", le.Namespace+"/"+le.Name, "identity", le.Identity)
	switch {
	case le.Client == nil:
		return errors.New("leader election: no Kubernetes client")
	case le.Namespace == "":
		return fmt.Errorf("leader election: Lease %q has no namespace", le.Name)
	case le.Identity == "":
		return fmt.Errorf("leader election: Lease %s/%s: this replica has no identity (its pod name)", le.Namespace, le.Name)
	}
	for ctx.Err() == nil {
		led, err := le.term(ctx, work)
		if err != nil {
			return err
		}
		if led && ctx.Err() == nil {
			le.Log.WarnContext(ctx, "stopped leading; contending again")
		}
	}
	return nil
}

// term contends for the Lease until ctx is done or it has led once, and
// reports whether it led.
func (le *LeaderElection) term(ctx context.Context, work func(context.Context) error) (led bool, err error) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     le.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}
	leading := make(chan context.Context, 1)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          lock,
		Name:          le.Name,
		LeaseDuration: le.LeaseDuration,
		RenewDeadline: le.RenewDeadline,
		RetryPeriod:   le.RetryPeriod,
		// Not ReleaseOnCancel: the elector would release the Lease before
		// the work has stopped. release does it after.
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leadCtx context.Context) { leading <- leadCtx },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return false, fmt.Errorf("leader election on Lease %s/%s: %w", le.Namespace, le.Name, err)
	}
	// The elector's context ends when this replica stops contending, which
	// is after its work has stopped, never before.
	electCtx, stopElection := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElection()
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		elector.Run(electCtx)
	}()

	var leadCtx context.Context
	select {
	case <-ctx.Done():
		stopElection()
		<-ran
		return false, nil
	case <-ran:
		return false, nil // it led and lost before work could start
	case leadCtx = <-leading:
	}

	le.Log.InfoContext(ctx, "leading")
	workCtx, cancelWork := context.WithCancel(leadCtx)
	stopOnDone := context.AfterFunc(ctx, cancelWork)
	le.OnLeading(true)
	werr := work(workCtx)
	stopOnDone()
	cancelWork()
	le.OnLeading(false)
	lost := leadCtx.Err() != nil

	stopElection()
	<-ran
	if !lost {
		// This replica stops on its own: give the Lease up now that the
		// work has stopped.
		if err := le.release(ctx, lock); err != nil {
			le.Log.WarnContext(ctx, "cannot release the Lease; another replica takes over once it expires", "error", err)
		}
	}
	if werr != nil && ctx.Err() == nil {
		le.Log.ErrorContext(ctx, "the leader's work failed; giving the Lease up", "error", werr)
	}
	if !lost && ctx.Err() == nil {
		// The work returned by itself: pause before contending again, so
		// that a work that keeps failing does not spin.
		select {
		case <-ctx.Done():
		case <-time.After(le.RetryPeriod):
		}
	}
	return true, nil
}

// release empties the Lease if this replica still holds it, as client-go
// does on a release: no holder, a one-second duration.
func (le *LeaderElection) release(ctx context.Context, lock *resourcelock.LeaseLock) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), le.RenewDeadline)
	defer cancel()
	rec, _, err := lock.Get(ctx)
	if err != nil {
		return err
	}
	if rec.HolderIdentity != le.Identity {
		return nil
	}
	now := metav1.NewTime(time.Now())
	if err := lock.Update(ctx, resourcelock.LeaderElectionRecord{
		LeaderTransitions:    rec.LeaderTransitions,
		LeaseDurationSeconds: 1,
		RenewTime:            now,
		AcquireTime:          now,
	}); err != nil {
		return err
	}
	le.Log.InfoContext(ctx, "released the Lease")
	return nil
}
