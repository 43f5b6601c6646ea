package netns

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/config"
)

// The pods' ports: the application's, the one both pods skip in both
// directions, and the proxy's (DESIGN.md).
const (
	appPort      = 8080
	skipPort     = 9090
	adminPort    = 4191
	inboundPort  = 4143
	outboundPort = 4140
)

// readyWait bounds waiting for a process to start answering.
const readyWait = 30 * time.Second

// pod is a simulated pod: a namespace with an address on the veth to its peer,
// an application, the init rules and a proxy.
type pod struct {
	*netns
	name  string
	ip    string
	procs []*process // everything started in the pod, watched while waiting
}

// url is http://<pod IP>:<port><path>.
func (p *pod) url(port int, path string) string {
	return "http://" + net.JoinHostPort(p.ip, strconv.Itoa(port)) + path
}

// peerService is the service of the other pod that a pod's proxy knows about.
type peerService struct {
	name string
	ip   string
}

// proxyConfig is the configuration of a pod's proxy: admin on every address,
// inbound on every address (iptables REDIRECT keeps the pod IP as destination)
// forwarding to the application on loopback, outbound on loopback, and a
// table with the peer's service at its pod address.
//
// The mTLS work adds identities here (and tls="true" to flow.selector).
func proxyConfig(t *testing.T, p *pod, peer peerService) []byte {
	t.Helper()
	addr := net.JoinHostPort(peer.ip, strconv.Itoa(appPort))
	cfg := config.Config{
		Admin:    fmt.Sprintf(":%d", adminPort),
		Inbound:  config.Inbound{Listen: fmt.Sprintf(":%d", inboundPort), App: fmt.Sprintf("127.0.0.1:%d", appPort)},
		Outbound: config.Outbound{Listen: fmt.Sprintf("127.0.0.1:%d", outboundPort)},
		Labels:   map[string]string{"namespace": "netns", "pod": p.name},
		// Stopped at the end of the test with nothing in flight.
		ShutdownGrace: routetable.Duration(5 * time.Second),
		Table: routetable.Table{Services: []routetable.Service{{
			Name: peer.name, Namespace: "netns", Port: appPort,
			Addresses: []string{addr},
			Endpoints: []routetable.Endpoint{{Address: addr, Labels: map[string]string{"pod": peer.name}}},
		}}},
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(data); err != nil {
		t.Fatalf("proxy configuration for %s: %v\n%s", p.name, err, data)
	}
	return data
}

// twoPods builds the binaries and sets up pods "a" (a frontend calling b's
// pod address) and "b" (the backend, plus a second server on skipPort), joined
// by a veth pair, each with the init rules applied and its proxy running as
// UID 2102. Everything is removed when the test ends.
func twoPods(t *testing.T) (a, b *pod) {
	t.Helper()
	requireNetns(t, "iptables")
	bins := buildBinaries(t)
	dir := sharedTempDir(t)

	ipA, ipB := randomSubnet()
	a = &pod{netns: newNetns(t, "a"), name: "a", ip: ipA}
	b = &pod{netns: newNetns(t, "b"), name: "b", ip: ipB}
	// The veth is created inside pod a with its peer inside pod b: no
	// interface ever exists in the host namespace.
	run(t, "ip", "-n", a.netns.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.netns.name)
	for _, p := range []*pod{a, b} {
		p.run(t, "ip", "addr", "add", p.ip+"/30", "dev", "eth0")
		p.run(t, "ip", "link", "set", "eth0", "up")
		// What the injector's init container does. The mode is detected.
		p.run(t, bins.proxy, "init",
			"--proxy-uid", strconv.Itoa(proxyUID),
			"--inbound-port", strconv.Itoa(inboundPort),
			"--outbound-port", strconv.Itoa(outboundPort),
			"--admin-port", strconv.Itoa(adminPort),
			"--inbound-ports-to-ignore", strconv.Itoa(skipPort),
			"--outbound-ports-to-ignore", strconv.Itoa(skipPort))
	}

	// The applications know nothing of the proxy: they listen on every
	// address and the frontend calls the backend's plain pod address.
	appArgs := func(name, version string, port int) []string {
		return []string{bins.app, "--name", name, "--version", version, "--listen", fmt.Sprintf("0.0.0.0:%d", port)}
	}
	b.procs = append(b.procs,
		b.start(t, dir, "b-app", []string{"POD_NAME=b"}, appArgs("backend", "b-v1", appPort)...),
		b.start(t, dir, "b-app-skipped", []string{"POD_NAME=b"}, appArgs("backend-direct", "b-direct", skipPort)...))
	a.procs = append(a.procs,
		a.start(t, dir, "a-app", []string{"POD_NAME=a", "BACKEND_SERVICE_HOST=" + b.ip, "BACKEND_SERVICE_PORT=" + strconv.Itoa(appPort)},
			appArgs("frontend", "a-v1", appPort)...))

	for _, pp := range []struct {
		p    *pod
		peer peerService
	}{{a, peerService{"backend", b.ip}}, {b, peerService{"frontend", a.ip}}} {
		p := pp.p
		cfgPath := filepath.Join(dir, p.name+"-proxy.json")
		if err := os.WriteFile(cfgPath, proxyConfig(t, p, pp.peer), 0o644); err != nil {
			t.Fatal(err)
		}
		p.procs = append(p.procs, p.start(t, dir, p.name+"-proxy", nil,
			"setpriv", "--reuid", strconv.Itoa(proxyUID), "--regid", strconv.Itoa(proxyUID), "--clear-groups", "--pdeathsig", "KILL",
			bins.proxy, "--config", cfgPath, "--log-level", "debug"))
	}

	// Wait from inside each pod, on loopback (never redirected).
	for _, p := range []*pod{a, b} {
		for _, u := range []string{
			fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort),
			fmt.Sprintf("http://127.0.0.1:%d/healthz", appPort),
		} {
			if status, body := p.get(t, u, 1, readyWait, p.procs...); status != http.StatusOK {
				t.Fatalf("pod %s: %s answered %d: %s", p.name, u, status, body)
			}
		}
	}
	if status, body := b.get(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", skipPort), 1, readyWait, b.procs...); status != http.StatusOK {
		t.Fatalf("pod b: the server on the skipped port answered %d: %s", status, body)
	}
	return a, b
}

// flow is one proxy side whose requests the test counts.
type flow struct {
	pod       *pod
	direction string // "inbound" or "outbound"
}

func (f flow) String() string { return f.pod.name + "/" + f.direction }

// selector is the label set the flow's request_total series must carry.
// The mTLS work adds "tls": "true" here: pod-to-pod traffic must then be
// counted as mutually authenticated on both proxies.
func (f flow) selector() map[string]string {
	return map[string]string{"direction": f.direction}
}

// counts scrapes request_total of every flow.
func counts(t *testing.T, flows []flow) map[flow]float64 {
	t.Helper()
	out := map[flow]float64{}
	scraped := map[*pod]map[string]float64{}
	for _, f := range flows {
		if scraped[f.pod] == nil {
			scraped[f.pod] = map[string]float64{}
			fams := f.pod.scrape(t, adminPort)
			for _, g := range flows {
				if g.pod == f.pod {
					scraped[f.pod][g.direction] = sum(fams, "request_total", g.selector())
				}
			}
		}
		out[f] = scraped[f.pod][f.direction]
	}
	return out
}

// expectDeltas waits until every flow in want has counted at least its number
// of requests since before, then requires exactly that many: more would mean
// a request was counted twice, e.g. the proxy's own connection looped back
// into it.
func expectDeltas(t *testing.T, before map[flow]float64, want map[flow]float64) {
	t.Helper()
	flows := make([]flow, 0, len(want))
	for f := range want {
		flows = append(flows, f)
	}
	deadline := time.Now().Add(20 * time.Second)
	var now map[flow]float64
	for {
		now = counts(t, flows)
		done := true
		for _, f := range flows {
			if now[f]-before[f] < want[f] {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // metrics live in other processes: poll
	}
	for _, f := range flows {
		if got := now[f] - before[f]; got != want[f] {
			t.Errorf("%s: request_total%v grew by %v, want %v", f, f.selector(), got, want[f])
		}
	}
}

type identity struct {
	Service string `json:"service"`
	Version string `json:"version"`
	Pod     string `json:"pod"`
}

type frontendReply struct {
	identity
	Backend *identity `json:"backend"`
	Error   string    `json:"error"`
}

type echoReply struct {
	Version string `json:"version"`
	Remote  string `json:"remote"`
}

// TestTransparentInterception is issue 6's network-namespace test: two pods
// whose applications talk to each other's plain addresses, with the traffic
// going through both proxies, the proxies' own traffic not looped, skipped
// ports bypassing the proxies and the admin port not redirected.
func TestTransparentInterception(t *testing.T) {
	a, b := twoPods(t)
	aIn, aOut := flow{a, "inbound"}, flow{a, "outbound"}
	bIn, bOut := flow{b, "inbound"}, flow{b, "outbound"}
	all := []flow{aIn, aOut, bIn, bOut}

	t.Run("pod to pod address goes through both proxies", func(t *testing.T) {
		const n = 3
		before := counts(t, all)
		status, body := a.get(t, b.url(appPort, "/"), n, 0)
		if status != http.StatusOK {
			t.Fatalf("GET %s from pod a: %d %s", b.url(appPort, "/"), status, body)
		}
		var got identity
		decodeJSON(t, body, &got)
		if got.Service != "backend" || got.Version != "b-v1" {
			t.Errorf("answer from %+v, want pod b's backend b-v1", got)
		}
		// Exactly n on each side: the outbound proxy's own connection to
		// b (UID 2102) and the inbound proxy's connection to the app on
		// loopback are not redirected again.
		expectDeltas(t, before, map[flow]float64{aOut: n, bIn: n, aIn: 0, bOut: 0})
	})

	t.Run("app to app through four proxy sides", func(t *testing.T) {
		before := counts(t, all)
		// pod b calls a's frontend, which calls b's backend: b out, a in,
		// a out, b in.
		status, body := b.get(t, a.url(appPort, "/"), 1, 0)
		if status != http.StatusOK {
			t.Fatalf("GET %s from pod b: %d %s", a.url(appPort, "/"), status, body)
		}
		var got frontendReply
		decodeJSON(t, body, &got)
		if got.Service != "frontend" || got.Backend == nil || got.Backend.Version != "b-v1" {
			t.Errorf("answer %s, want the frontend with backend b-v1", body)
		}
		expectDeltas(t, before, map[flow]float64{aIn: 1, aOut: 1, bIn: 1, bOut: 1})
	})

	t.Run("skipped ports bypass both proxies", func(t *testing.T) {
		before := counts(t, all)
		status, body := a.get(t, b.url(skipPort, "/echo"), 1, 0)
		if status != http.StatusOK {
			t.Fatalf("GET %s from pod a: %d %s", b.url(skipPort, "/echo"), status, body)
		}
		var direct echoReply
		decodeJSON(t, body, &direct)
		// Redirected inbound, it would have reached the app on appPort.
		if direct.Version != "b-direct" {
			t.Errorf("skipped port answered by %q, want the b-direct server", direct.Version)
		}
		if host, _, _ := net.SplitHostPort(direct.Remote); host != a.ip {
			t.Errorf("skipped port saw client %s, want pod a's address %s (no proxy in between)", direct.Remote, a.ip)
		}
		// A proxied request afterwards: once it is counted, a count of the
		// skipped one would have shown too.
		status, body = a.get(t, b.url(appPort, "/echo"), 1, 0)
		if status != http.StatusOK {
			t.Fatalf("GET %s from pod a: %d %s", b.url(appPort, "/echo"), status, body)
		}
		var proxied echoReply
		decodeJSON(t, body, &proxied)
		if host, _, _ := net.SplitHostPort(proxied.Remote); host != "127.0.0.1" {
			t.Errorf("the app saw client %s, want 127.0.0.1 (pod b's inbound proxy)", proxied.Remote)
		}
		expectDeltas(t, before, map[flow]float64{aOut: 1, bIn: 1, aIn: 0, bOut: 0})
	})

	t.Run("admin port is not redirected inbound", func(t *testing.T) {
		before := counts(t, all)
		// As the proxy's UID, pod a's client is not redirected outbound:
		// this checks pod b's inbound rules alone.
		status, body := a.getAsProxyUID(t, b.url(adminPort, "/live"))
		// The app has no /live: only pod b's proxy answers it.
		if status != http.StatusOK || strings.TrimSpace(body) != "live" {
			t.Fatalf("GET %s from pod a as UID %d: %d %q, want 200 live from b's proxy", b.url(adminPort, "/live"), proxyUID, status, body)
		}
		status, body = a.get(t, b.url(appPort, "/"), 1, 0)
		if status != http.StatusOK {
			t.Fatalf("GET %s from pod a: %d %s", b.url(appPort, "/"), status, body)
		}
		expectDeltas(t, before, map[flow]float64{aOut: 1, bIn: 1, aIn: 0, bOut: 0})
	})

	t.Run("outbound to an address no service claims passes through", func(t *testing.T) {
		before := counts(t, all)
		// b's admin address is in no table: a's outbound proxy forwards the
		// request to the original destination as it is.
		status, body := a.get(t, b.url(adminPort, "/live"), 1, 0)
		if status != http.StatusOK || strings.TrimSpace(body) != "live" {
			t.Fatalf("GET %s from pod a: %d %q, want 200 live from b's proxy", b.url(adminPort, "/live"), status, body)
		}
		expectDeltas(t, before, map[flow]float64{aOut: 1, bIn: 0, aIn: 0, bOut: 0})
	})
}
