// Package up is local mode: `sluice up -f DIR`. It runs the whole control
// plane in one process on loopback — identity (the CA, under
// <state>/identity), destination, inbound policy and telemetry, the first
// three on one gRPC server; reads the Kubernetes-style
// YAML of DIR into the local store and keeps watching it; runs every
// Deployment replica as a local process beside its own sluice-proxy sidecar
// (package supervisor); publishes every Service port on a host port through
// an ingress sluice-proxy; and serves an HTTP API on 127.0.0.1 (its address
// in <state>/api) that `sluice stat` and `sluice check` query.
//
// Bad input never tears down what runs: a file that does not parse, or an
// object that is not valid, is reported (file, line, field) and the objects
// it defined before stay as they were; a kind local mode does not run is
// reported and skipped.
package up

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sluicehq/sluice/local/canaries"
	"github.com/sluicehq/sluice/local/manifest"
	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/cptls"
	"github.com/sluicehq/sluice/mesh/destination"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/mesh/localstore"
	"github.com/sluicehq/sluice/mesh/policy"
	"github.com/sluicehq/sluice/mesh/telemetry"
	"github.com/sluicehq/sluice/proxy/controlplane"
)

// identityOf names the mesh identity of a service account.
func identityOf(serviceAccount, namespace string) string {
	return identity.Name(serviceAccount, namespace, "", "")
}

// Defaults of Options.
const (
	DefaultStateDir        = ".sluice"
	DefaultIngressBasePort = 8080
)

// ObjectSink receives the objects of sluice.dev kinds (Canary, ...) for the
// engines that read them. Whether or not one is given, they are also served
// by the API (GET /api/v1/objects).
type ObjectSink interface {
	// SetObjects replaces the objects.
	SetObjects([]manifest.Object)
}

// Options configure Run.
type Options struct {
	// ManifestDir is the directory of YAML to run (required).
	ManifestDir string
	// StateDir holds the CA, logs, generated configurations and the API
	// address (default ".sluice").
	StateDir string
	// ProxyBinary is the sluice-proxy executable (required).
	ProxyBinary string
	// ControlPlaneAddr and APIAddr are where the gRPC control plane and the
	// HTTP API listen (default 127.0.0.1:0 each: free ports).
	ControlPlaneAddr, APIAddr string
	// IngressBasePort is the first host port Services are published on,
	// counting up; 0 takes any free ports.
	IngressBasePort int
	// ScrapeInterval is how often telemetry scrapes the proxies (default 5 s).
	ScrapeInterval time.Duration
	// WatchInterval is how often DIR is checked for changes besides file
	// system events (default 2 s).
	WatchInterval time.Duration
	// ExtraPath are directories put first in the PATH of the workloads (the
	// directory of the sluice binary, so that programs built beside it are
	// found).
	ExtraPath []string
	// Backoff and StopGrace tune the supervisor (zero: defaults).
	Backoff   supervisor.Backoff
	StopGrace time.Duration
	// ProxyLogLevel is the log level of the proxies ("" is info).
	ProxyLogLevel string
	// DefaultInboundPolicy is what a port no Server selects gets when its
	// workload names no default ("" is all-unauthenticated).
	DefaultInboundPolicy string
	// Objects receives the sluice.dev objects, if set.
	Objects ObjectSink
	// Out receives what people read: the published ports, problems in the
	// manifests, replicas that crash with the end of their logs (nil: discard).
	Out io.Writer
	// Logger receives the components' logs (nil: discard).
	Logger *slog.Logger
	// Version is reported by the API.
	Version string
	// Ready, if set, is called once everything has started and the
	// manifests were applied a first time.
	Ready func(*Status)
}

// instance is a running `sluice up`.
type instance struct {
	opts    Options
	log     *slog.Logger
	out     *printer
	started time.Time

	stateDir, manifestDir string
	store                 *localstore.Store
	tokens                *supervisor.TokenSet
	ca                    *identity.CA
	anchors               string
	cpAddr, apiURL        string
	sup                   *supervisor.Supervisor
	tel                   *telemetry.Store
	ingress               *ingress
	ports                 *supervisor.Ports
	sync                  *syncer
	canaries              *canaries.Controller // see canaries.go
	integ                 *integrations        // see integrations.go
}

// Run runs local mode until ctx ends, then stops everything it started —
// every process gone — and returns nil. It returns an error at once when
// something cannot start (a port taken, a missing binary, another instance
// using the state directory).
func Run(ctx context.Context, opts Options) (err error) {
	u, err := newInstance(opts)
	if err != nil {
		return err
	}
	return u.run(ctx)
}

func newInstance(opts Options) (*instance, error) {
	if opts.ManifestDir == "" {
		return nil, errors.New("no manifest directory (-f DIR)")
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.ControlPlaneAddr == "" {
		opts.ControlPlaneAddr = "127.0.0.1:0"
	}
	if opts.APIAddr == "" {
		opts.APIAddr = "127.0.0.1:0"
	}
	if opts.WatchInterval <= 0 {
		opts.WatchInterval = 2 * time.Second
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	manifestDir, err := filepath.Abs(opts.ManifestDir)
	if err != nil {
		return nil, fmt.Errorf("manifest directory %s: %w", opts.ManifestDir, err)
	}
	if info, err := os.Stat(manifestDir); err != nil {
		return nil, fmt.Errorf("manifest directory %s: %w", opts.ManifestDir, unwrapPath(err))
	} else if !info.IsDir() {
		return nil, fmt.Errorf("manifest directory %s is not a directory", opts.ManifestDir)
	}
	stateDir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state directory %s: %w", opts.StateDir, err)
	}
	if opts.ProxyBinary == "" {
		return nil, errors.New("no sluice-proxy binary given")
	}
	if _, err := exec.LookPath(opts.ProxyBinary); err != nil {
		return nil, fmt.Errorf("sluice-proxy %s cannot be run: %w (build it with `make build`, or pass --proxy)", opts.ProxyBinary, unwrapPath(err))
	}
	return &instance{
		opts:        opts,
		log:         opts.Logger,
		out:         &printer{w: opts.Out},
		started:     time.Now(),
		stateDir:    stateDir,
		manifestDir: manifestDir,
		store:       localstore.New(),
		tokens:      &supervisor.TokenSet{},
		ports:       &supervisor.Ports{},
	}, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (u *instance) run(ctx context.Context) error {
	if err := os.MkdirAll(u.stateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	unlock, err := lockState(u.stateDir)
	if err != nil {
		return err
	}
	defer unlock()
	// A previous run that was killed may have left configurations and tokens.
	_ = os.RemoveAll(filepath.Join(u.stateDir, "pods"))
	_ = os.RemoveAll(filepath.Join(u.stateDir, "ingress"))

	u.ca, err = identity.LoadOrCreate(filepath.Join(u.stateDir, "identity"), "", nil)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	u.anchors = filepath.Join(u.stateDir, "identity", identity.AnchorFile)

	cpLn, err := net.Listen("tcp", u.opts.ControlPlaneAddr)
	if err != nil {
		return fmt.Errorf("the control plane cannot listen on %s: %w (is another program using it?)", u.opts.ControlPlaneAddr, err)
	}
	defer cpLn.Close()
	apiLn, err := net.Listen("tcp", u.opts.APIAddr)
	if err != nil {
		return fmt.Errorf("the API cannot listen on %s: %w (is another program using it?)", u.opts.APIAddr, err)
	}
	defer apiLn.Close()
	u.cpAddr = cpLn.Addr().String()
	u.apiURL = "http://" + apiLn.Addr().String()

	// The control plane: one gRPC server for every mesh API, over TLS with
	// a certificate it issues itself; Destination and InboundPolicies only
	// answer clients with a mesh certificate.
	self, err := identity.NewSelfCertificate(u.ca, ControlPlaneName, 0)
	if err != nil {
		return fmt.Errorf("control plane certificate: %w", err)
	}
	if err := self.Ready(); err != nil {
		return fmt.Errorf("control plane certificate: %w (the issuer in %s may have expired: remove %s and %s to generate a new one)",
			err, filepath.Join(u.stateDir, "identity"), identity.IssuerFile, identity.IssuerKeyFile)
	}
	grpcSrv := grpc.NewServer(cptls.ServerOptions(u.ca.TrustAnchors(), self.GetCertificate, cptls.MeshOnlyServices...)...)
	dst := destination.NewServer(u.store, u.log)
	meshv1.RegisterDestinationServer(grpcSrv, dst)
	meshv1.RegisterIdentityServer(grpcSrv, identity.NewServer(u.ca, u.tokens, 0))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(grpcSrv, hs)
	pol := policy.NewServer(u.store, u.opts.DefaultInboundPolicy, nil, identityOf, u.log)
	meshv1.RegisterInboundPoliciesServer(grpcSrv, pol)

	env := childEnv(u.opts.ExtraPath)
	u.sup, err = supervisor.New(supervisor.Options{
		StateDir:         u.stateDir,
		ProxyBinary:      u.opts.ProxyBinary,
		ControlPlane:     u.cpAddr,
		ControlPlaneName: ControlPlaneName,
		TrustAnchors:     u.anchors,
		Tokens:           u.tokens,
		Registry:         u.store,
		Env:              env,
		Ports:            u.ports,
		Backoff:          u.opts.Backoff,
		StopGrace:        u.opts.StopGrace,
		ProxyLogLevel:    u.opts.ProxyLogLevel,
		OnEvent:          u.onEvent,
		Logger:           u.log,
	})
	if err != nil {
		return err
	}
	u.tel = telemetry.New(telemetry.TargetsFunc(u.targets), telemetry.Options{Interval: u.opts.ScrapeInterval, Logger: u.log})
	u.ingress = &ingress{
		ports:     u.ports,
		base:      u.opts.IngressBasePort,
		dir:       filepath.Join(u.stateDir, "ingress"),
		logFile:   filepath.Join(u.stateDir, "logs", IngressNamespace, "ingress", "proxy.log"),
		identity:  identity.Name(IngressServiceAccount, IngressNamespace, "", ""),
		cp:        u.cpAddr,
		anchors:   u.anchors,
		tokens:    u.tokens,
		keep:      supervisor.KeepOptions{Backoff: u.opts.Backoff, StopGrace: u.opts.StopGrace, OnExit: u.onIngressExit},
		env:       append(env, "SLUICE_STATE_DIR="+u.stateDir),
		proxyBin:  u.opts.ProxyBinary,
		logLevel:  u.opts.ProxyLogLevel,
		say:       u.out.say,
		published: map[string]IngressPort{},
	}
	u.sync = newSyncer(u)
	if u.integ, err = openIntegrations(u.stateDir, u.log); err != nil {
		return err
	}
	defer u.integ.close()

	// Everything below stops when runCtx ends; processes first.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	goRun := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }

	supCtx, stopSup := context.WithCancel(context.WithoutCancel(runCtx))
	defer stopSup()
	supDone := make(chan struct{})
	go func() { defer close(supDone); _ = u.sup.Run(supCtx) }()
	u.ingress.ctx = supCtx

	served := make(chan struct{})
	go func() { defer close(served); _ = grpcSrv.Serve(cpLn) }()
	apiSrv := &http.Server{Handler: u.handler(), ReadHeaderTimeout: 10 * time.Second}
	apiServed := make(chan struct{})
	go func() { defer close(apiServed); _ = apiSrv.Serve(apiLn) }()
	goRun(func() { _ = u.tel.Run(runCtx) })
	u.startCanaries(runCtx, goRun)

	var runErr error
	if err := supervisor.WriteSecretFile(filepath.Join(u.stateDir, APIFile), []byte(u.apiURL+"\n")); err != nil {
		runErr = fmt.Errorf("writing the API address: %w", err)
		stop()
	}
	defer os.Remove(filepath.Join(u.stateDir, APIFile))

	// Read the manifests, start what they say, then keep watching.
	u.sync.resync()
	u.printBanner()
	if u.opts.Ready != nil {
		st := u.status(runCtx)
		u.opts.Ready(&st)
	}
	goRun(func() { u.sync.watch(runCtx) })

	<-runCtx.Done()
	u.out.say("Stopping: every replica, its sidecar and the ingress proxy...")
	stopSup()
	<-supDone
	u.ingress.stop()
	_ = os.RemoveAll(filepath.Join(u.stateDir, "pods"))
	dst.Close()
	pol.Close()
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		grpcSrv.Stop()
	}
	<-served
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(shutCtx)
	<-apiServed
	wg.Wait()
	u.out.say("Stopped. State, certificates and logs are in %s.", u.stateDir)
	return runErr
}

// childEnv is the environment of the workloads and proxies: this process's,
// with extra directories first in PATH.
func childEnv(extraPath []string) []string {
	env := os.Environ()
	if len(extraPath) == 0 {
		return env
	}
	path := os.Getenv("PATH")
	dirs := append([]string(nil), extraPath...)
	if path != "" {
		dirs = append(dirs, path)
	}
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PATH=") {
			out = append(out, kv)
		}
	}
	return append(out, "PATH="+strings.Join(dirs, string(os.PathListSeparator)))
}

// lockState takes an exclusive lock on the state directory, so that two
// `sluice up` never share one. It returns the unlock function.
func lockState(dir string) (func(), error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		other := ""
		if data, err := os.ReadFile(filepath.Join(dir, APIFile)); err == nil {
			other = fmt.Sprintf(" (its API is %s)", strings.TrimSpace(string(data)))
		}
		return nil, fmt.Errorf("another sluice up is running with state directory %s%s: stop it first, or use another --state-dir", dir, other)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// targets lists the sidecars for telemetry.
func (u *instance) targets() []telemetry.Target {
	var out []telemetry.Target
	for _, r := range u.sup.Replicas() {
		out = append(out, telemetry.Target{
			URL: "http://" + r.Admin + "/metrics",
			Labels: map[string]string{
				"namespace": r.Namespace, "workload": r.Workload, "pod": r.Pod, "revision": r.Revision,
			},
		})
	}
	return out
}

// status builds the API's Status.
func (u *instance) status(ctx context.Context) Status {
	st := Status{
		Version:          u.opts.Version,
		PID:              os.Getpid(),
		StateDir:         u.stateDir,
		ManifestDir:      u.manifestDir,
		Started:          u.started,
		ControlPlane:     u.cpAddr,
		ControlPlaneName: ControlPlaneName,
		TrustAnchors:     u.anchors,
		API:              u.apiURL,
		Ingress:          u.ingress.list(),
		IngressProxy:     u.ingress.status(),
		Workloads:        u.sup.Workloads(),
		Problems:         u.sync.currentProblems(),
	}
	if addr := u.ingress.adminAddr(); addr != "" && st.IngressProxy.Running() {
		client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/ready", nil)
		if err == nil {
			if resp, err := client.Do(req); err == nil {
				st.IngressReady = resp.StatusCode == http.StatusOK
				resp.Body.Close()
			}
		}
	}
	for _, r := range u.sup.Replicas() {
		rep := Replica{ReplicaStatus: r}
		if !r.Ready && !r.Stopping {
			rep.LogTail = map[string][]string{}
			for name, ps := range map[string]supervisor.ProcessStatus{supervisor.ContainerApp: r.App, supervisor.ContainerProxy: r.Proxy} {
				if !blamed(r, name) {
					continue
				}
				if lines, err := supervisor.Tail(ps.Log, tailLines); err == nil && len(lines) > 0 {
					rep.LogTail[name] = lines
				}
			}
		}
		st.Replicas = append(st.Replicas, rep)
	}
	return st
}

// blamed reports whether a replica that is not ready may be so because of
// its application ("app") or its sidecar ("proxy"), whose log is then worth
// showing.
func blamed(r supervisor.ReplicaStatus, container string) bool {
	if container == supervisor.ContainerProxy {
		return !r.ProxyReady || r.Proxy.Restarts > 0
	}
	return !r.App.Running() || r.App.Restarts > 0 || strings.HasPrefix(r.Problem, "application")
}

// checkIdentity certifies a throwaway identity through the control plane's
// own gRPC API, as a proxy does, and verifies the certificate.
func (u *instance) checkIdentity(ctx context.Context) (string, error) {
	id := identity.Name("sluice-check", IngressNamespace, "", "")
	token, err := u.tokens.Issue(id)
	if err != nil {
		return "", err
	}
	defer u.tokens.Revoke(id, token)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}, DNSNames: []string{id}}, key)
	if err != nil {
		return "", err
	}
	creds, err := controlplane.TransportCredentials(controlplane.TLSOptions{
		Service: "identity", Address: u.cpAddr, ServerName: ControlPlaneName, Roots: u.ca.TrustAnchors(),
	})
	if err != nil {
		return "", err
	}
	conn, err := grpc.NewClient(u.cpAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return "", fmt.Errorf("connecting to the control plane %s: %w", u.cpAddr, err)
	}
	defer conn.Close()
	resp, err := meshv1.NewIdentityClient(conn).Certify(ctx, &meshv1.CertifyRequest{Identity: id, Token: token, CertificateSigningRequest: csr})
	if err != nil {
		return "", fmt.Errorf("identity refused to certify %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		return "", fmt.Errorf("identity issued an unreadable certificate: %w", err)
	}
	inter := x509.NewCertPool()
	for _, der := range resp.GetIntermediateCertificates() {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: u.ca.TrustAnchors(), Intermediates: inter, DNSName: id, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "", fmt.Errorf("the certificate issued for %s does not verify against the trust anchors: %w", id, err)
	}
	return fmt.Sprintf("issued a certificate for %s, valid until %s", id, leaf.NotAfter.UTC().Format(time.RFC3339)), nil
}
