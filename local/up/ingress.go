package up

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/mesh/identity"
	"github.com/sluicehq/sluice/proxy/config"
)

// IngressServiceAccount and IngressNamespace make the ingress proxy's mesh
// identity (sluice-ingress.sluice.serviceaccount.identity.sluice.cluster.local):
// an AuthorizationPolicy that must let people and load generators in names it.
const (
	IngressServiceAccount = "sluice-ingress"
	IngressNamespace      = identity.DefaultControlNamespace
)

// ControlPlaneName is the mesh identity of `sluice up`'s control plane: the
// name its gRPC server's TLS certificate carries, which every local proxy
// checks (controlPlane.destinationName). One server carries identity,
// destination and policy, so one name serves for all of them.
var ControlPlaneName = identity.ControlPlaneName("sluice-up", "", "")

// IngressPort is a Service port published on the host.
type IngressPort struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	PortName  string `json:"portName,omitempty"`
	Port      int    `json:"port"`
	// Address is the host address it is published on (127.0.0.1:8080), URL
	// the same as an http:// URL.
	Address string `json:"address"`
	URL     string `json:"url"`
}

// ingress is the sluice-proxy that publishes every Service port on a host
// port: one explicit listener per port, a mesh member like the sidecars.
type ingress struct {
	ports    *supervisor.Ports
	base     int // first host port to try; 0: any free port
	next     int // the next port to try
	dir      string
	logFile  string
	identity string
	cp       string // control plane address
	anchors  string
	tokens   supervisor.Tokens
	keep     supervisor.KeepOptions
	env      []string
	proxyBin string
	logLevel string
	say      func(format string, args ...any)

	mu        sync.Mutex
	ctx       context.Context
	published map[string]IngressPort // by service key
	admin     int
	token     []byte
	keeper    *supervisor.Keeper
}

func (in *ingress) configPath() string { return filepath.Join(in.dir, "proxy.yaml") }

// adminAddr is the ingress proxy's admin address ("" before it starts).
func (in *ingress) adminAddr() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.admin == 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(in.admin))
}

// list returns the published ports, ordered by namespace, service and port.
func (in *ingress) list() []IngressPort {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := slices.Collect(maps.Values(in.published))
	slices.SortFunc(out, func(a, b IngressPort) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// status is the ingress proxy process's state (zero before it starts).
func (in *ingress) status() supervisor.ProcessStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.keeper == nil {
		return supervisor.ProcessStatus{}
	}
	return in.keeper.Status()
}

// setServices publishes ports (and unpublishes those gone), starting the
// ingress proxy with the first one. It reports whether the published set
// changed.
func (in *ingress) setServices(ports []supervisor.ServicePort) (bool, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	want := map[string]supervisor.ServicePort{}
	for _, p := range ports {
		want[p.Key()] = p
	}
	changed := false
	for key, p := range in.published {
		if _, ok := want[key]; !ok {
			host, _ := strconv.Atoi(p.Address[strings.LastIndexByte(p.Address, ':')+1:])
			in.ports.Release(host)
			delete(in.published, key)
			changed = true
		}
	}
	keys := slices.SortedFunc(maps.Keys(want), func(a, b string) int {
		pa, pb := want[a], want[b]
		return cmp.Or(cmp.Compare(pa.Namespace, pb.Namespace), cmp.Compare(pa.Name, pb.Name), cmp.Compare(pa.Index, pb.Index))
	})
	for _, key := range keys {
		if _, ok := in.published[key]; ok {
			continue
		}
		p := want[key]
		try := 0
		if in.base > 0 {
			try = max(in.next, in.base)
		}
		host, skipped, err := in.ports.Preferred(try)
		if err != nil {
			return changed, fmt.Errorf("no host port for %s: %w", key, err)
		}
		if len(skipped) > 0 {
			in.say("Port %s is in use (by another program, or by another Service here): %s is published on port %d instead.", portList(skipped), key, host)
		}
		if in.base > 0 && host >= try && host < try+1000 {
			in.next = host + 1
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(host))
		in.published[key] = IngressPort{
			Namespace: p.Namespace, Service: p.Name, PortName: p.PortName, Port: p.Port,
			Address: addr, URL: "http://" + addr,
		}
		changed = true
	}
	if !changed {
		return false, nil
	}
	if err := in.writeConfigLocked(); err != nil {
		return true, err
	}
	if in.keeper == nil && len(in.published) > 0 && in.ctx != nil {
		in.keeper = supervisor.Keep(in.ctx, supervisor.Command{
			Name:    "ingress proxy",
			Path:    in.proxyBin,
			Args:    []string{"--config", in.configPath()},
			Env:     in.env,
			LogFile: in.logFile,
		}, in.keep)
	}
	return true, nil
}

func portList(ports []int) string {
	if len(ports) == 1 {
		return strconv.Itoa(ports[0])
	}
	if len(ports) > 3 {
		return fmt.Sprintf("%d-%d", ports[0], ports[len(ports)-1])
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}

// writeConfigLocked writes the ingress proxy's configuration, issuing its
// token and admin port the first time. in.mu must be held.
func (in *ingress) writeConfigLocked() error {
	if in.token == nil {
		tok, err := in.tokens.Issue(in.identity)
		if err != nil {
			return err
		}
		in.token = tok
		if err := supervisor.WriteSecretFile(filepath.Join(in.dir, "token"), tok); err != nil {
			return err
		}
	}
	if in.admin == 0 {
		p, err := in.ports.Free()
		if err != nil {
			return fmt.Errorf("ingress admin port: %w", err)
		}
		in.admin = p
	}
	listeners := map[string]string{}
	for key, p := range in.published {
		listeners[key] = p.Address
	}
	return supervisor.WriteProxyConfig(in.configPath(), supervisor.ProxySpec{
		Admin:     net.JoinHostPort("127.0.0.1", strconv.Itoa(in.admin)),
		Listeners: listeners,
		ControlPlane: &config.ControlPlane{
			Address:         in.cp,
			DestinationName: ControlPlaneName,
			Identity:        in.identity,
			TokenFile:       filepath.Join(in.dir, "token"),
			TrustAnchors:    in.anchors,
			Namespace:       IngressNamespace,
			Workload:        IngressNamespace + "/ingress",
		},
		Labels:   map[string]string{"namespace": IngressNamespace, "deployment": "ingress", "pod": "ingress"},
		LogLevel: in.logLevel,
	})
}

// stop waits for the ingress proxy to stop (its context must be done) and
// revokes its token.
func (in *ingress) stop() {
	in.mu.Lock()
	k := in.keeper
	in.mu.Unlock()
	if k != nil {
		<-k.Done()
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.token != nil {
		in.tokens.Revoke(in.identity, in.token)
		in.token = nil
	}
	_ = os.RemoveAll(in.dir)
}
