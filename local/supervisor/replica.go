package supervisor

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/mesh/localstore"
	"github.com/sluicehq/sluice/proxy/config"
)

// The names of a replica's two processes.
const (
	ContainerApp   = "app"
	ContainerProxy = "proxy"
)

// replica is one running instance of a workload: its application process,
// its sidecar, their ports and files.
type replica struct {
	s       *Supervisor
	w       Workload
	pod     string
	uid     string
	ident   string
	dir     string // pods/<ns>/<pod>: configuration and token
	logDir  string // logs/<ns>/<pod>
	created time.Time

	appPort, inboundPort, adminPort int

	appCmd   Command
	stopCh   chan struct{}
	stopOnce sync.Once

	mu         sync.Mutex
	drain      bool
	services   []ServicePort
	listeners  map[string]int // service key -> sidecar outbound listener port
	configured bool           // the sidecar configuration was written
	stopping   bool
	ready      bool
	proxyReady bool
	problem    string
	app, proxy *Keeper
}

// newReplica picks the replica's ports and builds its application command.
func newReplica(s *Supervisor, w Workload, pod string, services []ServicePort) (r *replica, err error) {
	r = &replica{
		s:       s,
		w:       w,
		pod:     pod,
		uid:     randomUID(),
		ident:   s.opts.Identity(cmpOr(w.ServiceAccount, "default"), w.Namespace),
		dir:     filepath.Join(s.opts.StateDir, "pods", w.Namespace, pod),
		logDir:  filepath.Join(s.opts.StateDir, "logs", w.Namespace, pod),
		created: time.Now(),
		stopCh:  make(chan struct{}),
		drain:   true,
	}
	var got []int
	defer func() {
		if err != nil {
			s.opts.Ports.Release(got...)
		}
	}()
	port := func() (int, error) {
		p, err := s.opts.Ports.Free()
		if err == nil {
			got = append(got, p)
		}
		return p, err
	}
	for _, p := range []*int{&r.appPort, &r.inboundPort, &r.adminPort} {
		if *p, err = port(); err != nil {
			return nil, fmt.Errorf("replica %s/%s: %w", w.Namespace, pod, err)
		}
	}
	r.services = slices.Clone(services)
	r.listeners = map[string]int{}
	for _, sp := range services {
		if _, ok := r.listeners[sp.Key()]; ok {
			continue
		}
		lp, err := port()
		if err != nil {
			return nil, fmt.Errorf("replica %s/%s: %w", w.Namespace, pod, err)
		}
		r.listeners[sp.Key()] = lp
	}

	base := append(slices.Clone(s.opts.Env), "SLUICE_STATE_DIR="+s.opts.StateDir)
	var links []string
	if !w.NoServiceLinks {
		links = ServiceEnv(services, r.listeners)
	}
	env, lookup, err := buildEnv(base, links, pod, w.Namespace, r.uid, r.appPort, w.Env)
	if err != nil {
		return nil, fmt.Errorf("replica %s/%s: %w", w.Namespace, pod, err)
	}
	var argv []string
	for _, a := range append(slices.Clone(w.Command), w.Args...) {
		argv = append(argv, Expand(a, lookup))
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("workload %s: no command to run", w.Key())
	}
	r.appCmd = Command{
		Name:    fmt.Sprintf("%s/%s %s", w.Namespace, pod, ContainerApp),
		Path:    lookPath(argv[0], envValue(env, "PATH"), w.Dir),
		Args:    argv[1:],
		Env:     env,
		Dir:     w.Dir,
		LogFile: filepath.Join(r.logDir, ContainerApp+".log"),
	}
	return r, nil
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// envValue returns the value of name in an environment list (the last one).
func envValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// lookPath finds a program name without a slash in the directories of
// pathList, as the child's exec would; a name with a slash is left alone
// (relative names are relative to dir). A name not found is returned as is,
// and fails to start with exec's own message.
func lookPath(name, pathList, dir string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, d := range filepath.SplitList(pathList) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) && dir != "" {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, name)
		if info, err := os.Stat(p); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			if abs, err := filepath.Abs(p); err == nil {
				return abs
			}
			return p
		}
	}
	return name
}

func (r *replica) key() string { return r.w.Namespace + "/" + r.pod }

func (r *replica) isReady() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready && !r.stopping
}

func (r *replica) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}

// stop asks the replica to stop; drain says whether to wait for traffic to
// move away after leaving discovery.
func (r *replica) stop(drain bool) {
	r.mu.Lock()
	r.stopping = true
	r.drain = r.drain && drain
	r.mu.Unlock()
	r.stopOnce.Do(func() { close(r.stopCh) })
}

// proxySpec is the sidecar's configuration. r.mu must be held.
func (r *replica) proxySpecLocked() ProxySpec {
	o := &r.s.opts
	listeners := map[string]string{}
	for key, p := range r.listeners {
		listeners[key] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return ProxySpec{
		Admin:     r.adminAddr(),
		Inbound:   r.inboundAddr(),
		App:       net.JoinHostPort("127.0.0.1", strconv.Itoa(r.appPort)),
		Listeners: listeners,
		ControlPlane: &config.ControlPlane{
			Address:         o.ControlPlane,
			DestinationName: o.ControlPlaneName,
			Identity:        r.ident,
			TokenFile:       filepath.Join(r.dir, "token"),
			TrustAnchors:    o.TrustAnchors,
			Namespace:       r.w.Namespace,
			Workload:        r.w.Namespace + "/" + r.pod,
		},
		Labels: map[string]string{
			"namespace":  r.w.Namespace,
			"deployment": r.w.Name,
			"pod":        r.pod,
			"revision":   r.w.Revision,
		},
		LogLevel: o.ProxyLogLevel,
	}
}

func (r *replica) adminAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.adminPort)) }
func (r *replica) inboundAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.inboundPort))
}
func (r *replica) configPath() string { return filepath.Join(r.dir, "proxy.yaml") }

// setServices updates the sidecar's outbound listeners to the namespace's
// Service ports, rewriting its configuration if anything changed.
func (r *replica) setServices(ports []ServicePort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]bool{}
	for _, p := range ports {
		want[p.Key()] = true
	}
	changed := false
	for key, lp := range r.listeners {
		if !want[key] {
			delete(r.listeners, key)
			r.s.opts.Ports.Release(lp)
			changed = true
		}
	}
	for _, key := range slices.Sorted(maps.Keys(want)) {
		if _, ok := r.listeners[key]; ok {
			continue
		}
		lp, err := r.s.opts.Ports.Free()
		if err != nil {
			r.s.log.Error("no port for a sidecar listener", "pod", r.key(), "service", key, "error", err)
			continue
		}
		r.listeners[key] = lp
		changed = true
	}
	r.services = slices.Clone(ports)
	if changed && r.configured && !r.stopping {
		if err := WriteProxyConfig(r.configPath(), r.proxySpecLocked()); err != nil {
			r.s.log.Error("cannot rewrite a sidecar configuration", "pod", r.key(), "error", err)
		}
	}
}

// run starts the replica's processes and watches its readiness until it is
// stopped or ctx ends; then it stops everything and cleans up.
func (r *replica) run(ctx context.Context) {
	s := r.s
	log := s.log.With("pod", r.key())
	defer func() {
		r.mu.Lock()
		ports := []int{r.appPort, r.inboundPort, r.adminPort}
		for _, p := range r.listeners {
			ports = append(ports, p)
		}
		r.mu.Unlock()
		s.opts.Ports.Release(ports...)
	}()

	token, err := s.opts.Tokens.Issue(r.ident)
	if err == nil {
		defer s.opts.Tokens.Revoke(r.ident, token)
		err = WriteSecretFile(filepath.Join(r.dir, "token"), token)
	}
	if err == nil {
		r.mu.Lock()
		err = WriteProxyConfig(r.configPath(), r.proxySpecLocked())
		r.configured = err == nil
		r.mu.Unlock()
	}
	defer os.RemoveAll(r.dir)
	if err != nil {
		log.Error("cannot prepare the replica", "error", err)
		r.setProblem("cannot prepare the replica: " + err.Error())
		select {
		case <-ctx.Done():
		case <-r.stopCh:
		}
		return
	}

	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProcs()
	keep := func(container string, cmd Command) *Keeper {
		return Keep(procCtx, cmd, KeepOptions{
			Backoff:   s.opts.Backoff,
			StopGrace: s.opts.StopGrace,
			Now:       s.opts.Now,
			After:     s.opts.After,
			OnExit: func(e Exit) {
				s.emit(Event{
					Type: ProcessExited, Namespace: r.w.Namespace, Workload: r.w.Name, Pod: r.pod,
					Container: container, Exit: &e,
					Message: fmt.Sprintf("%s %s: %s; restarting in %v (restarts: %d)", r.key(), container, describeExit(e.Err), e.RestartIn, e.Restarts),
				})
			},
		})
	}
	proxy := keep(ContainerProxy, Command{
		Name:    fmt.Sprintf("%s %s", r.key(), ContainerProxy),
		Path:    s.opts.ProxyBinary,
		Args:    []string{"--config", r.configPath()},
		Env:     append(slices.Clone(s.opts.Env), "SLUICE_STATE_DIR="+s.opts.StateDir),
		LogFile: filepath.Join(r.logDir, ContainerProxy+".log"),
	})
	app := keep(ContainerApp, r.appCmd)
	r.mu.Lock()
	r.proxy, r.app = proxy, app
	r.mu.Unlock()
	s.opts.Registry.SetReplica(r.replicaRecord(false))
	s.emit(Event{Type: ReplicaStarted, Namespace: r.w.Namespace, Workload: r.w.Name, Pod: r.pod,
		Message: fmt.Sprintf("%s started (app port %d, sidecar inbound %s)", r.key(), r.appPort, r.inboundAddr())})

	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(s.opts.ProbeInterval)
	defer tick.Stop()
	drain := false
loop:
	for {
		r.probe(ctx, client)
		select {
		case <-ctx.Done():
			break loop
		case <-r.stopCh:
			r.mu.Lock()
			drain = r.drain
			r.mu.Unlock()
			break loop
		case <-tick.C:
		}
	}

	r.mu.Lock()
	r.stopping, r.ready = true, false
	r.mu.Unlock()
	s.opts.Registry.RemoveReplica(r.w.Namespace, r.pod)
	if drain && s.opts.Drain > 0 && ctx.Err() == nil {
		t := time.NewTimer(s.opts.Drain)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	stopProcs()
	<-app.Done()
	<-proxy.Done()
	s.emit(Event{Type: ReplicaStopped, Namespace: r.w.Namespace, Workload: r.w.Name, Pod: r.pod, Message: r.key() + " stopped"})
}

// probe checks readiness and publishes a change.
func (r *replica) probe(ctx context.Context, client *http.Client) {
	r.mu.Lock()
	app, proxy, stopping := r.app, r.proxy, r.stopping
	r.mu.Unlock()
	if stopping || app == nil {
		return
	}
	var problem string
	proxyReady := false
	ps, as := proxy.Status(), app.Status()
	switch {
	case !ps.Running():
		problem = "sidecar is not running"
		if ps.LastExit != "" {
			problem += " (last exit: " + ps.LastExit + ")"
		}
	default:
		ok, why := getReady(ctx, client, "http://"+r.adminAddr()+"/ready")
		proxyReady = ok
		if !ok {
			problem = "sidecar is not ready: " + why
		}
	}
	appUp := false
	if as.Running() {
		d := net.Dialer{Timeout: 500 * time.Millisecond}
		if c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.appPort))); err == nil {
			c.Close()
			appUp = true
		} else if problem == "" {
			problem = fmt.Sprintf("application does not accept connections on PORT=%d yet", r.appPort)
		}
	} else if problem == "" || as.LastExit != "" {
		// An application that exited says more than a sidecar still
		// starting beside it (a crash loop is the application's problem).
		problem = "application is not running"
		if as.LastExit != "" {
			problem += " (last exit: " + as.LastExit + ")"
		}
	}
	ready := proxyReady && appUp
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return
	}
	changed := ready != r.ready
	r.ready, r.proxyReady, r.problem = ready, proxyReady, problem
	r.mu.Unlock()
	if !changed {
		return
	}
	r.s.opts.Registry.SetReplica(r.replicaRecord(ready))
	if ready {
		r.s.emit(Event{Type: ReplicaReady, Namespace: r.w.Namespace, Workload: r.w.Name, Pod: r.pod, Message: r.key() + " is ready"})
	} else {
		r.s.emit(Event{Type: ReplicaNotReady, Namespace: r.w.Namespace, Workload: r.w.Name, Pod: r.pod, Message: r.key() + " is not ready: " + problem})
	}
	r.s.poke()
}

// getReady asks a proxy's /ready.
func getReady(ctx context.Context, client *http.Client, url string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode == http.StatusOK {
		return true, ""
	}
	return false, fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
}

func (r *replica) setProblem(p string) {
	r.mu.Lock()
	r.problem = p
	r.mu.Unlock()
}

// replicaRecord is the replica as the discovery store knows it.
func (r *replica) replicaRecord(ready bool) localstore.Replica {
	rec := localstore.Replica{
		Namespace:            r.w.Namespace,
		Workload:             r.w.Name,
		Pod:                  r.pod,
		Revision:             r.w.Revision,
		Labels:               maps.Clone(r.w.Labels),
		Address:              r.inboundAddr(),
		Identity:             r.ident,
		Ready:                ready,
		DefaultInboundPolicy: r.w.DefaultInboundPolicy,
	}
	if r.w.PortName != "" {
		rec.PortNames = map[int]string{r.appPort: r.w.PortName}
		if r.w.ContainerPort > 0 {
			rec.PortNames[r.w.ContainerPort] = r.w.PortName
		}
	}
	return rec
}

func (r *replica) status() ReplicaStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := ReplicaStatus{
		Namespace:  r.w.Namespace,
		Workload:   r.w.Name,
		Pod:        r.pod,
		Revision:   r.w.Revision,
		Identity:   r.ident,
		Ready:      r.ready && !r.stopping,
		ProxyReady: r.proxyReady,
		Stopping:   r.stopping,
		Address:    r.inboundAddr(),
		Admin:      r.adminAddr(),
		AppPort:    r.appPort,
		Created:    r.created,
		Problem:    r.problem,
		App:        ProcessStatus{Name: r.appCmd.Name, Log: r.appCmd.LogFile},
		Proxy:      ProcessStatus{Name: r.key() + " " + ContainerProxy, Log: filepath.Join(r.logDir, ContainerProxy+".log")},
	}
	if st.Ready {
		st.Problem = ""
	}
	if len(r.listeners) > 0 {
		st.Listeners = map[string]string{}
		for k, p := range r.listeners {
			st.Listeners[k] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		}
	}
	if r.app != nil {
		st.App = r.app.Status()
	}
	if r.proxy != nil {
		st.Proxy = r.proxy.Status()
	}
	return st
}
