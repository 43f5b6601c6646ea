// Package config reads the proxy's configuration file: where it listens, the
// application it fronts, its timeouts and metric labels, and (in local mode) the
// whole route table. The file is YAML or JSON; unknown fields are errors, and
// every problem found is reported with the path of the field at fault.
//
// A minimal local-mode file:
//
//	admin: 127.0.0.1:4191
//	inbound:
//	  listen: 127.0.0.1:4143
//	  app: 127.0.0.1:8080
//	outbound:
//	  listen: "off"          # quoted: YAML reads a bare off as false
//	listeners:
//	- listen: 127.0.0.1:9080
//	  service: web.default:80
//	table:
//	  services:
//	  - name: web
//	    port: 80
//	    endpoints:
//	    - address: 127.0.0.1:8081
package config

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/detect"
	"github.com/sluicehq/sluice/proxy/policy"
)

// Off, as a listen address, disables that listener.
const Off = "off"

// Defaults applied by Parse (and ApplyDefaults) to fields left empty.
const (
	DefaultAdmin          = ":4191"
	DefaultInboundListen  = ":4143"
	DefaultOutboundListen = "127.0.0.1:4140"
	DefaultDetectTimeout  = detect.DefaultTimeout // 10s
	DefaultConnectTimeout = time.Second
	// DefaultIdleTimeout closes opaque TCP connections idle this long.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultHTTPIdleTimeout is how long a pooled HTTP connection to an endpoint
	// may sit unused before it is closed. It is not configurable: IdleTimeout
	// applies to opaque TCP connections only.
	DefaultHTTPIdleTimeout = 90 * time.Second
	DefaultShutdownGrace   = 30 * time.Second
)

// Config is the proxy's configuration.
type Config struct {
	// Admin is the admin server's address (/metrics, /ready, /live); default ":4191".
	Admin string `json:"admin"`
	// Inbound is traffic from the network to the application.
	Inbound Inbound `json:"inbound"`
	// Outbound is traffic from the application to other services.
	Outbound Outbound `json:"outbound"`
	// Listeners are explicit outbound listeners, each bound to one service:
	// local mode's stand-in for iptables interception.
	Listeners []Listener `json:"listeners,omitempty"`
	// Table holds the services, their endpoints and route rules.
	Table routetable.Table `json:"table"`
	// DetectTimeout bounds protocol detection; after it a connection is opaque.
	// Default 10s.
	DetectTimeout routetable.Duration `json:"detectTimeout,omitempty"`
	// OpaquePorts skip protocol detection. Absent means detect.DefaultOpaquePorts;
	// an explicit empty list means none.
	OpaquePorts []int `json:"opaquePorts,omitempty"`
	// ConnectTimeout bounds connecting to an endpoint or the application. Default 1s.
	ConnectTimeout routetable.Duration `json:"connectTimeout,omitempty"`
	// IdleTimeout closes opaque TCP connections with no traffic either way for
	// this long. Default 10m. (Pooled HTTP connections use DefaultHTTPIdleTimeout.)
	IdleTimeout routetable.Duration `json:"idleTimeout,omitempty"`
	// ShutdownGrace is how long in-flight requests and connections may finish
	// after a shutdown signal. Default 30s.
	ShutdownGrace routetable.Duration `json:"shutdownGrace,omitempty"`
	// Labels are static labels added to every metric: namespace, deployment,
	// pod, revision, ...
	Labels map[string]string `json:"labels,omitempty"`
	// LogLevel is debug, info, warn or error (slog's names); empty means info.
	LogLevel string `json:"logLevel,omitempty"`
	// ControlPlane, when set, makes the proxy a mesh member: it learns services
	// from the destination API, gets its certificate from the identity API and
	// its inbound policy from the policy API. Table then only adds to what the
	// control plane says.
	ControlPlane *ControlPlane `json:"controlPlane,omitempty"`
}

// ControlPlane says how to reach Sluice's control plane and who this proxy is.
type ControlPlane struct {
	// Address is the host:port of the control plane's gRPC API (destination
	// and policy; identity too unless IdentityAddress is set).
	Address string `json:"address"`
	// IdentityAddress is the host:port of the identity API, when it is not
	// served at Address (on Kubernetes it is its own service,
	// sluice-identity); empty means Address.
	IdentityAddress string `json:"identityAddress,omitempty"`
	// DestinationName is the mesh identity the server at Address must
	// present ("sluice-destination.sluice.serviceaccount.identity.sluice.cluster.local"
	// on Kubernetes). The control plane's gRPC is TLS: the proxy verifies the
	// server's certificate against TrustAnchors and this name, and presents
	// its own certificate (the destination service requires it). Required.
	DestinationName string `json:"destinationName"`
	// IdentityName is the mesh identity the identity service at
	// IdentityAddr must present ("sluice-identity.sluice.serviceaccount.identity.sluice.cluster.local"
	// on Kubernetes); empty means DestinationName, as when one server
	// serves both (`sluice up`).
	IdentityName string `json:"identityName,omitempty"`
	// Identity is the TLS identity this proxy requests, e.g.
	// "web.default.serviceaccount.identity.sluice.cluster.local".
	Identity string `json:"identity"`
	// TokenFile holds the token that proves the proxy may have Identity; it is
	// read again at every certificate refresh.
	TokenFile string `json:"tokenFile"`
	// TrustAnchors is a PEM file with the mesh's trust anchors.
	TrustAnchors string `json:"trustAnchors"`
	// Namespace is the workload's namespace (consumer routes and policy).
	Namespace string `json:"namespace,omitempty"`
	// Workload names the workload instance for inbound policy ("ns/pod").
	Workload string `json:"workload,omitempty"`
	// Watch lists services to discover up front besides the listeners' ones.
	Watch []string `json:"watch,omitempty"`
}

// IdentityAddr returns the address of the identity API: IdentityAddress,
// or Address when it is empty.
func (cp *ControlPlane) IdentityAddr() string {
	if cp.IdentityAddress != "" {
		return cp.IdentityAddress
	}
	return cp.Address
}

// IdentityServerName returns the identity the identity service must
// present: IdentityName, or DestinationName when it is empty.
func (cp *ControlPlane) IdentityServerName() string {
	if cp.IdentityName != "" {
		return cp.IdentityName
	}
	return cp.DestinationName
}

// Inbound configures the inbound side.
type Inbound struct {
	// Listen is the inbound listener's address. When App or OriginalDst is set
	// it defaults to ":4143"; with none of them set (or with "off") there is no inbound listener.
	Listen string `json:"listen"`
	// App is the application's local address, e.g. 127.0.0.1:8080; required
	// when Listen is set, unless OriginalDst is.
	App string `json:"app"`
	// OriginalDst sends each inbound connection that iptables redirected to
	// the proxy on to the port it was addressed to (its SO_ORIGINAL_DST), on
	// loopback, so every port of the pod is served, each under its own
	// inbound policy. Connections that reach the listener directly go to App.
	OriginalDst bool `json:"originalDst,omitempty"`
	// Protocol skips detection for inbound connections when set.
	Protocol routetable.Protocol `json:"protocol,omitempty"`
	// DefaultPolicy is the inbound authorization policy in force until the
	// control plane sends one, and for good without a control plane: one of
	// all-unauthenticated (the default when empty), all-authenticated,
	// cluster-unauthenticated, cluster-authenticated, deny, audit.
	DefaultPolicy string `json:"defaultPolicy,omitempty"`
	// Probes are the application's HTTP probe endpoints (the kubelet's
	// liveness, readiness and startup probes). A plain GET or HEAD request for
	// one of them on its port is allowed whatever the inbound policy says:
	// the kubelet has no mesh identity.
	Probes []Probe `json:"probes,omitempty"`
}

// Probe is one HTTP probe endpoint of the application.
type Probe struct {
	// Port is the port the probe is sent to (the port the kubelet dials).
	Port int `json:"port"`
	// Path is the probe's request path, without a query; it starts with "/".
	Path string `json:"path"`
}

// Enabled reports whether there is an inbound listener.
func (i Inbound) Enabled() bool { return i.Listen != "" && i.Listen != Off }

// Policy returns the name of the default inbound policy: DefaultPolicy, or
// all-unauthenticated when it is empty.
func (i Inbound) Policy() string {
	if i.DefaultPolicy == "" {
		return policy.AllUnauthenticated
	}
	return i.DefaultPolicy
}

// Outbound configures the outbound side.
type Outbound struct {
	// Listen is the transparent outbound listener's address (the target of
	// iptables redirection); default "127.0.0.1:4140", "off" for none.
	Listen string `json:"listen"`
}

// Enabled reports whether there is an outbound listener.
func (o Outbound) Enabled() bool { return o.Listen != "" && o.Listen != Off }

// Listener is an explicit outbound listener: every connection it accepts is
// for one service, whatever its destination.
type Listener struct {
	// Listen is the address to bind.
	Listen string `json:"listen"`
	// Service is the Service.Key() ("name.namespace:port") of a service in Table.
	Service string `json:"service"`
}

// ApplyDefaults fills in every empty field that has a default. Parse calls it;
// call it on a Config built in code.
func (c *Config) ApplyDefaults() {
	if c.Admin == "" {
		c.Admin = DefaultAdmin
	}
	if c.Inbound.Listen == "" && (c.Inbound.App != "" || c.Inbound.OriginalDst) {
		c.Inbound.Listen = DefaultInboundListen
	}
	if c.Outbound.Listen == "" {
		c.Outbound.Listen = DefaultOutboundListen
	}
	if c.OpaquePorts == nil {
		c.OpaquePorts = append([]int{}, detect.DefaultOpaquePorts...)
	}
	setDefault(&c.DetectTimeout, DefaultDetectTimeout)
	setDefault(&c.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&c.IdleTimeout, DefaultIdleTimeout)
	setDefault(&c.ShutdownGrace, DefaultShutdownGrace)
}

func setDefault(d *routetable.Duration, v time.Duration) {
	if *d == 0 {
		*d = routetable.Duration(v)
	}
}

// Parse reads a configuration in YAML or JSON, strictly (unknown and duplicate
// fields are errors naming the field), applies defaults and validates it. Its
// error lists every problem found, one per line.
func Parse(data []byte) (*Config, error) {
	c, err := decode(data)
	if err != nil {
		return nil, err
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// loaded remembers the content each path had when Load last read it, so that
// Watch reports a change made between Load and Watch.
var loaded sync.Map // absolute path -> [sha256.Size]byte

// Load reads and parses the configuration file at path. Its errors start with the path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // "PATH: no such file or directory" rather than "PATH: open PATH: ..."
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		loaded.Store(abs, sha256.Sum256(data))
	}
	return c, nil
}
