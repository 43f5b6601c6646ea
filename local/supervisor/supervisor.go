// Package supervisor runs local mode's workloads: every replica of a
// Deployment as a local process (containers[0].command and args, its env),
// each beside its own sluice-proxy sidecar process.
//
// For each replica the supervisor picks free ports on 127.0.0.1 (the
// application's, given to it in PORT; the sidecar's admin and inbound
// listeners; one sidecar outbound listener per Service port of the
// namespace), issues a bootstrap token for the replica's mesh identity
// (written 0600 under the state directory), writes the sidecar's
// configuration, starts the sidecar then the application, and registers the
// replica as an endpoint (its sidecar's inbound listener) in the discovery
// store. The replica is ready once the sidecar's /ready answers 200 and the
// application accepts connections on its port.
//
// The application reaches another Service through its sidecar: the
// supervisor sets <SERVICE>_SERVICE_HOST=127.0.0.1 and <SERVICE>_SERVICE_PORT
// to the sidecar's outbound listener for it, as Kubernetes names them.
//
// A process that exits is restarted after a backoff (1 s doubling to 30 s).
// A workload whose revision changes is rolled: replicas of the new revision
// are started and those of older revisions stopped once the new ones are all
// ready, so that a bad revision never takes down a good one. Stopping a
// process stops its whole process group: SIGTERM, then SIGKILL after a grace
// period.
//
// State lives under Options.StateDir: pods/<ns>/<pod>/{proxy.yaml,token}
// while a replica runs, and logs/<ns>/<pod>/{app,proxy}.log, kept.
package supervisor

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/localstore"
)

// Defaults of Options.
const (
	DefaultProbeInterval = 500 * time.Millisecond
	DefaultDrain         = time.Second
)

// Workload is a Deployment as the supervisor runs it.
type Workload struct {
	Namespace, Name string
	// Replicas is the number of replicas to run.
	Replicas int
	// Revision identifies the pod template (a hash); replicas of another
	// revision are replaced.
	Revision string
	// Labels are the pod labels (Service selectors match them).
	Labels map[string]string
	// ServiceAccount names the mesh identity ("" is "default").
	ServiceAccount string
	// Command is containers[0].command: the program and its first
	// arguments. Args follow it. Both may refer to env as $(NAME).
	Command []string
	Args    []string
	// Env is containers[0].env, in order.
	Env []EnvVar
	// Dir is the working directory of the application.
	Dir string
	// NoServiceLinks leaves out the <SERVICE>_SERVICE_HOST/PORT variables
	// (the pod's enableServiceLinks: false); the sidecar listeners exist all
	// the same.
	NoServiceLinks bool
	// PortName and ContainerPort are containers[0].ports[0]'s name and
	// number: the application's port (the one in PORT) is known to inbound
	// policy by that name, and by that number too.
	PortName      string
	ContainerPort int
	// DefaultInboundPolicy is the workload's default inbound policy
	// (config.sluice.dev/default-inbound-policy), "" for the control plane's.
	DefaultInboundPolicy string
}

// Key names the workload: "namespace/name".
func (w *Workload) Key() string { return w.Namespace + "/" + w.Name }

// Tokens issues and revokes the bootstrap tokens with which sidecars prove
// their identity to the identity service.
type Tokens interface {
	// Issue makes a new token for identity and registers it.
	Issue(identity string) ([]byte, error)
	// Revoke forgets one token of identity.
	Revoke(identity string, token []byte)
}

// Registry is where replicas are published as endpoints (the local store).
type Registry interface {
	SetReplica(localstore.Replica)
	RemoveReplica(namespace, pod string)
}

// EventType says what an Event is about.
type EventType string

// Events the supervisor reports.
const (
	// ReplicaStarted: a replica was created and its processes started.
	ReplicaStarted EventType = "started"
	// ReplicaReady and ReplicaNotReady: its readiness changed.
	ReplicaReady    EventType = "ready"
	ReplicaNotReady EventType = "not-ready"
	// ProcessExited: its application or sidecar exited and will be restarted.
	ProcessExited EventType = "exited"
	// ReplicaStopped: it was stopped for good (scaled down, replaced, deleted).
	ReplicaStopped EventType = "stopped"
)

// Event is something that happened to a replica, for the user.
type Event struct {
	Type                     EventType
	Namespace, Workload, Pod string
	// Container is "app" or "proxy" for ProcessExited.
	Container string
	// Exit details a ProcessExited event.
	Exit *Exit
	// Message says what happened, for people.
	Message string
}

// Options configure a Supervisor.
type Options struct {
	// StateDir holds generated configurations, tokens and logs.
	StateDir string
	// ProxyBinary is the sluice-proxy executable.
	ProxyBinary string
	// ControlPlane is the address of the control plane's gRPC API.
	ControlPlane string
	// ControlPlaneName is the mesh identity the control plane's TLS
	// certificate names; the proxies check it (controlPlane.destinationName).
	ControlPlaneName string
	// TrustAnchors is the PEM file of the mesh's trust anchors.
	TrustAnchors string
	// Tokens issues bootstrap tokens; Registry publishes replicas.
	Tokens   Tokens
	Registry Registry
	// Identity names the mesh identity of a service account (default
	// identity.Name with the default control namespace and trust domain).
	Identity func(serviceAccount, namespace string) string
	// Env is the base environment of every process (nil: os.Environ()).
	Env []string
	// Ports hands out ports (nil: a Ports of the supervisor's own).
	Ports *Ports
	// Backoff bounds restarts (zero: 1 s to 30 s); StopGrace is the time
	// between SIGTERM and SIGKILL (zero: DefaultStopGrace).
	Backoff   Backoff
	StopGrace time.Duration
	// ProbeInterval is how often readiness is checked (default 500 ms).
	ProbeInterval time.Duration
	// Drain is how long a replica being replaced stays up after it is
	// removed from discovery, so that in-flight traffic moves away (default
	// 1 s; negative: none). It does not apply when the supervisor stops.
	Drain time.Duration
	// ProxyLogLevel is the sidecars' log level ("" is info).
	ProxyLogLevel string
	// OnEvent, if set, receives events (from the supervisor's goroutines;
	// it must not block for long).
	OnEvent func(Event)
	// Logger receives the supervisor's own log (nil: slog.Default()).
	Logger *slog.Logger
	// Now and After are the clock of the restart backoff (tests).
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
}

// Supervisor runs workloads. Create it with New, call Run, and change what
// it runs with Apply, Delete and SetServices (before or while it runs).
type Supervisor struct {
	opts Options
	log  *slog.Logger
	kick chan struct{}

	mu       sync.Mutex
	ctx      context.Context // Run's, once running
	desired  map[string]Workload
	services map[string][]ServicePort // by namespace
	replicas map[string]*replica      // by "ns/pod", stopping ones included
	wg       sync.WaitGroup           // replica goroutines
}

// New returns a supervisor; nothing runs until Run.
func New(opts Options) (*Supervisor, error) {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"StateDir", opts.StateDir}, {"ProxyBinary", opts.ProxyBinary},
		{"ControlPlane", opts.ControlPlane}, {"TrustAnchors", opts.TrustAnchors},
		{"ControlPlaneName", opts.ControlPlaneName},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if opts.Tokens == nil {
		missing = append(missing, "Tokens")
	}
	if opts.Registry == nil {
		missing = append(missing, "Registry")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("supervisor: options %s are required", strings.Join(missing, ", "))
	}
	if opts.Identity == nil {
		opts.Identity = func(sa, ns string) string { return identity.Name(sa, ns, "", "") }
	}
	if opts.Env == nil {
		opts.Env = os.Environ()
	}
	if opts.Ports == nil {
		opts.Ports = &Ports{}
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	if opts.Drain == 0 {
		opts.Drain = DefaultDrain
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Supervisor{
		opts:     opts,
		log:      opts.Logger.With("component", "supervisor"),
		kick:     make(chan struct{}, 1),
		desired:  map[string]Workload{},
		services: map[string][]ServicePort{},
		replicas: map[string]*replica{},
	}, nil
}

// Run starts what was applied and keeps reconciling until ctx ends; then it
// stops every replica (every process group gone) and returns nil.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.ctx != nil {
		s.mu.Unlock()
		return errors.New("supervisor: Run called twice")
	}
	s.ctx = ctx
	s.mu.Unlock()
	s.poke()
	for {
		select {
		case <-ctx.Done():
			s.wg.Wait() // every replica stops with ctx
			return nil
		case <-s.kick:
			s.reconcile()
		}
	}
}

// poke asks Run to reconcile.
func (s *Supervisor) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Apply sets what a workload should run. Applying the same workload again
// changes nothing; a new Revision rolls it, a new Replicas scales it.
func (s *Supervisor) Apply(w Workload) {
	w.Labels = maps.Clone(w.Labels)
	w.Command = slices.Clone(w.Command)
	w.Args = slices.Clone(w.Args)
	w.Env = slices.Clone(w.Env)
	if w.Namespace == "" {
		w.Namespace = "default"
	}
	if w.Revision == "" {
		w.Revision = "0"
	}
	s.mu.Lock()
	old, ok := s.desired[w.Key()]
	s.desired[w.Key()] = w
	s.mu.Unlock()
	if !ok || !reflect.DeepEqual(old, w) {
		s.poke()
	}
}

// Delete stops every replica of a workload.
func (s *Supervisor) Delete(namespace, name string) {
	s.mu.Lock()
	_, ok := s.desired[namespace+"/"+name]
	delete(s.desired, namespace+"/"+name)
	s.mu.Unlock()
	if ok {
		s.poke()
	}
}

// SetServices sets the Service ports replicas may call. Running replicas of
// a namespace get a sidecar listener for every new port of their namespace
// (their proxy reloads its configuration), and lose those of removed ports;
// their environment, fixed when they started, is not changed (as with
// Kubernetes' service variables).
func (s *Supervisor) SetServices(ports []ServicePort) {
	byNS := map[string][]ServicePort{}
	for _, p := range ports {
		byNS[p.Namespace] = append(byNS[p.Namespace], p)
	}
	for _, list := range byNS {
		slices.SortFunc(list, func(a, b ServicePort) int { return cmp.Compare(a.Key(), b.Key()) })
	}
	s.mu.Lock()
	s.services = byNS
	reps := slices.Collect(maps.Values(s.replicas))
	s.mu.Unlock()
	for _, r := range reps {
		r.setServices(byNS[r.w.Namespace])
	}
}

// reconcile starts and stops replicas to match what is desired.
func (s *Supervisor) reconcile() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	live := map[string][]*replica{}
	for _, r := range s.replicas {
		if !r.isStopping() {
			live[r.w.Key()] = append(live[r.w.Key()], r)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(s.desired)) {
		w := s.desired[key]
		var cur, old []*replica
		for _, r := range live[key] {
			if r.w.Revision == w.Revision {
				cur = append(cur, r)
			} else {
				old = append(old, r)
			}
		}
		delete(live, key)
		// Replicas of the current revision that run an older spec (same
		// template, other settings such as the command's directory) are
		// treated as current: only the revision decides.
		for len(cur) < w.Replicas {
			r, err := s.startLocked(w)
			if err != nil {
				s.log.Error("cannot start a replica", "workload", key, "error", err)
				break
			}
			cur = append(cur, r)
		}
		if extra := len(cur) - w.Replicas; extra > 0 {
			// Stop the not-ready first, then the newest.
			slices.SortFunc(cur, func(a, b *replica) int {
				if ra, rb := a.isReady(), b.isReady(); ra != rb {
					if ra {
						return 1
					}
					return -1
				}
				return b.created.Compare(a.created)
			})
			for _, r := range cur[:extra] {
				r.stop(true)
			}
			cur = cur[extra:]
		}
		ready := 0
		for _, r := range cur {
			if r.isReady() {
				ready++
			}
		}
		if ready >= w.Replicas {
			for _, r := range old {
				r.stop(true)
			}
		}
	}
	for _, reps := range live { // workloads no longer desired
		for _, r := range reps {
			r.stop(true)
		}
	}
}

// startLocked creates and starts a replica of w. s.mu must be held.
func (s *Supervisor) startLocked(w Workload) (*replica, error) {
	var pod string
	for {
		pod = fmt.Sprintf("%s-%s-%s", w.Name, w.Revision, randomSuffix())
		if _, taken := s.replicas[w.Namespace+"/"+pod]; !taken {
			break
		}
	}
	r, err := newReplica(s, w, pod, s.services[w.Namespace])
	if err != nil {
		return nil, err
	}
	s.replicas[w.Namespace+"/"+pod] = r
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.run(s.ctx)
		s.mu.Lock()
		delete(s.replicas, w.Namespace+"/"+pod)
		s.mu.Unlock()
		s.poke()
	}()
	return r, nil
}

// emit reports an event.
func (s *Supervisor) emit(e Event) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(e)
	}
}

// ReplicaStatus is the state of one replica.
type ReplicaStatus struct {
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	Pod       string `json:"pod"`
	Revision  string `json:"revision"`
	Identity  string `json:"identity"`
	// Ready: the sidecar is ready and the application accepts connections.
	Ready bool `json:"ready"`
	// ProxyReady: the sidecar's /ready answers 200 (for a mesh member: it
	// holds a certificate).
	ProxyReady bool `json:"proxyReady"`
	// Stopping: it is being stopped (replaced, scaled down or deleted).
	Stopping bool `json:"stopping,omitempty"`
	// Address is the sidecar's inbound listener (the replica's endpoint),
	// Admin its admin server; AppPort the application's port.
	Address string `json:"address"`
	Admin   string `json:"admin"`
	AppPort int    `json:"appPort"`
	// Listeners maps the service keys the application may call to the
	// sidecar's outbound listeners for them.
	Listeners map[string]string `json:"listeners,omitempty"`
	// App and Proxy are the two processes.
	App   ProcessStatus `json:"app"`
	Proxy ProcessStatus `json:"proxy"`
	// Created is when the replica was created.
	Created time.Time `json:"created"`
	// Problem says why the replica is not ready, if it knows.
	Problem string `json:"problem,omitempty"`
}

// WorkloadStatus is the state of one applied workload.
type WorkloadStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Revision  string `json:"revision"`
	// Replicas is the number asked for; Current how many of the current
	// revision exist, Ready how many of those are ready; Old how many of
	// older revisions still run.
	Replicas int `json:"replicas"`
	Current  int `json:"current"`
	Ready    int `json:"ready"`
	Old      int `json:"old"`
}

// Replicas returns the state of every replica, ordered by namespace and pod.
func (s *Supervisor) Replicas() []ReplicaStatus {
	s.mu.Lock()
	reps := slices.Collect(maps.Values(s.replicas))
	s.mu.Unlock()
	out := make([]ReplicaStatus, 0, len(reps))
	for _, r := range reps {
		out = append(out, r.status())
	}
	slices.SortFunc(out, func(a, b ReplicaStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Pod, b.Pod))
	})
	return out
}

// Workloads returns the state of every applied workload, ordered by
// namespace and name.
func (s *Supervisor) Workloads() []WorkloadStatus {
	s.mu.Lock()
	desired := maps.Clone(s.desired)
	reps := slices.Collect(maps.Values(s.replicas))
	s.mu.Unlock()
	out := make([]WorkloadStatus, 0, len(desired))
	for _, w := range desired {
		ws := WorkloadStatus{Namespace: w.Namespace, Name: w.Name, Revision: w.Revision, Replicas: w.Replicas}
		for _, r := range reps {
			if r.w.Key() != w.Key() || r.isStopping() {
				continue
			}
			if r.w.Revision == w.Revision {
				ws.Current++
				if r.isReady() {
					ws.Ready++
				}
			} else {
				ws.Old++
			}
		}
		out = append(out, ws)
	}
	slices.SortFunc(out, func(a, b WorkloadStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// PIDs returns the process IDs of every process running now.
func (s *Supervisor) PIDs() []int {
	var out []int
	for _, r := range s.Replicas() {
		for _, p := range []ProcessStatus{r.App, r.Proxy} {
			if p.PID != 0 {
				out = append(out, p.PID)
			}
		}
	}
	return out
}

// podSuffixChars are the characters of generated pod name suffixes, as
// Kubernetes picks them (no vowels, no confusable digits).
const podSuffixChars = "bcdfghjklmnpqrstvwxz2456789"

func randomSuffix() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = podSuffixChars[int(b[i])%len(podSuffixChars)]
	}
	return string(b)
}

func randomUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
