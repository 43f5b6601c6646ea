package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/detect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func u32(v uint32) *uint32 { return &v }
func boolp(v bool) *bool   { return &v }

func dur(d time.Duration) routetable.Duration { return routetable.Duration(d) }

// fullWant is what testdata/full.{yaml,json} describe.
func fullWant() *Config {
	return &Config{
		Admin:     "127.0.0.1:4191",
		Inbound:   Inbound{Listen: "127.0.0.1:4143", App: "127.0.0.1:8080", Protocol: routetable.ProtocolHTTP1},
		Outbound:  Outbound{Listen: Off},
		Listeners: []Listener{{Listen: "127.0.0.1:9080", Service: "web.default:80"}},
		Table: routetable.Table{Services: []routetable.Service{
			{
				Name: "web", Port: 80, Addresses: []string{"10.96.0.10:80"},
				Rules: []routetable.Rule{
					{
						Route: "default/web",
						Match: routetable.Match{PathType: routetable.PathPrefix, Path: "/api", Headers: []routetable.ValueMatch{{Name: "x-canary", Value: "true"}}},
						Backends: []routetable.Backend{
							{Service: "web-primary.default:80", Weight: u32(90)},
							{Service: "web-canary.default:80", Weight: u32(10)},
						},
						Timeouts: routetable.Timeouts{Request: dur(10 * time.Second), BackendRequest: dur(2 * time.Second)},
						Retry:    &routetable.Retry{Attempts: 2, CodeRanges: [][2]int{{500, 599}}, GRPCCodes: []string{"unavailable"}, Backoff: dur(25 * time.Millisecond)},
					},
					{Route: "default/web", RuleIndex: 1, Backends: []routetable.Backend{{Service: "web-primary.default:80"}}},
				},
			},
			{Name: "web-primary", Port: 80, Endpoints: []routetable.Endpoint{{Address: "127.0.0.1:8081", Labels: map[string]string{"deployment": "web-primary"}}}},
			{
				Name: "web-canary", Port: 80, Endpoints: []routetable.Endpoint{{Address: "127.0.0.1:8082", Ready: boolp(false)}},
				Breaker: &routetable.Breaker{MaxFailures: 3, MinPenalty: dur(time.Second), MaxPenalty: dur(10 * time.Second)},
			},
		}},
		DetectTimeout:  dur(5 * time.Second),
		OpaquePorts:    []int{5432, 6379},
		ConnectTimeout: dur(250 * time.Millisecond),
		IdleTimeout:    dur(time.Hour),
		ShutdownGrace:  dur(5 * time.Second),
		Labels:         map[string]string{"namespace": "default", "deployment": "web", "revision": "2"},
		LogLevel:       "debug",
	}
}

func TestParseFiles(t *testing.T) {
	for _, name := range []string{"full.yaml", "full.json"} {
		t.Run(name, func(t *testing.T) {
			c, err := Load(filepath.Join("testdata", name))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if want := fullWant(); !reflect.DeepEqual(c, want) {
				got, _ := yaml.Marshal(c)
				exp, _ := yaml.Marshal(want)
				t.Errorf("parsed:\n%s\nwant:\n%s", got, exp)
			}
		})
	}
}

// TestRoundTrip: a Config marshalled to YAML parses back to itself, which is
// how tests and tools write configuration files.
func TestRoundTrip(t *testing.T) {
	want := fullWant()
	data, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse(Marshal(c)): %v\n%s", err, data)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip changed the config:\n%s", data)
	}
	// A config built in code with listeners off and no inbound app.
	c := &Config{Admin: "127.0.0.1:0", Inbound: Inbound{Listen: Off}, Outbound: Outbound{Listen: Off}}
	data, _ = yaml.Marshal(c)
	if _, err := Parse(data); err != nil {
		t.Errorf("Parse(%s): %v", data, err)
	}
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		name, in string
		check    func(t *testing.T, c *Config)
	}{
		{"empty object", "{}", func(t *testing.T, c *Config) {
			want := &Config{
				Admin:          ":4191",
				Outbound:       Outbound{Listen: "127.0.0.1:4140"},
				DetectTimeout:  dur(10 * time.Second),
				OpaquePorts:    detect.DefaultOpaquePorts,
				ConnectTimeout: dur(time.Second),
				IdleTimeout:    dur(10 * time.Minute),
				ShutdownGrace:  dur(30 * time.Second),
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("defaults = %+v, want %+v", c, want)
			}
			if c.Inbound.Enabled() || !c.Outbound.Enabled() {
				t.Errorf("Enabled: inbound %v, outbound %v; want false, true", c.Inbound.Enabled(), c.Outbound.Enabled())
			}
			c.OpaquePorts[0] = 1
			if detect.DefaultOpaquePorts[0] != 25 {
				t.Fatal("the default opaque ports share storage with the config")
			}
		}},
		{"inbound app only", "inbound: {app: 127.0.0.1:8080}", func(t *testing.T, c *Config) {
			if c.Inbound.Listen != ":4143" || !c.Inbound.Enabled() {
				t.Errorf("inbound.listen = %q, want :4143", c.Inbound.Listen)
			}
		}},
		{"inbound to original destinations", "inbound: {originalDst: true}", func(t *testing.T, c *Config) {
			if c.Inbound.Listen != ":4143" || !c.Inbound.Enabled() || c.Inbound.App != "" {
				t.Errorf("inbound = %+v, want listen :4143 without app", c.Inbound)
			}
		}},
		{"outbound off", `outbound: {listen: "off"}`, func(t *testing.T, c *Config) {
			if c.Outbound.Listen != Off || c.Outbound.Enabled() {
				t.Errorf("outbound = %+v, want off", c.Outbound)
			}
		}},
		{"no opaque ports", "opaquePorts: []", func(t *testing.T, c *Config) {
			if c.OpaquePorts == nil || len(c.OpaquePorts) != 0 {
				t.Errorf("opaquePorts = %#v, want an empty list", c.OpaquePorts)
			}
		}},
		{"comments and null fields", "# nothing\nlabels: null\ntable: {services: null}\n", func(t *testing.T, c *Config) {
			if c.Labels != nil || c.Table.Services != nil {
				t.Errorf("got %+v", c)
			}
		}},
		{"numeric duration in nanoseconds", "connectTimeout: 1500000000", func(t *testing.T, c *Config) {
			if c.ConnectTimeout.D() != 1500*time.Millisecond {
				t.Errorf("connectTimeout = %v", c.ConnectTimeout.D())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, c)
		})
	}
}

// TestParseErrors pins the messages users see (golden strings).
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "the configuration is empty"},
		{"only comments", "# nothing here\n", "the configuration is empty"},
		{"garbage", "table: [this is not: valid", "not valid YAML or JSON: yaml: line 1: did not find expected ',' or ']'"},
		{"binary", "\x00\x01\x02", "not valid YAML or JSON: yaml: control characters are not allowed"},
		{"not an object", "- a\n- b\n", "configuration: must be an object, got a list"},
		{"unknown top-level field", "admn: :4191\nfoo: 1\n", "admn: unknown field (did you mean \"admin\"?)\nfoo: unknown field"},
		{"wrong case", "Admin: :4191", "Admin: unknown field (did you mean \"admin\"?)"},
		{"unknown nested field", "inbound: {lisen: ':1', app: '127.0.0.1:1'}", "inbound.lisen: unknown field (did you mean \"listen\"?)"},
		{"unknown deep field", "table: {services: [{name: a, port: 1, rules: [{match: {pth: /}}]}]}", "table.services[0].rules[0].match.pth: unknown field (did you mean \"path\"?)"},
		{"duplicate field", "admin: ':1'\nadmin: ':2'\n", "not valid YAML or JSON: yaml: unmarshal errors:\n  line 2: key \"admin\" already set in map"},
		{"string for int", "table: {services: [{name: a, port: '80'}]}", "table.services[0].port: must be an integer, got string \"80\""},
		{"int out of range", "table: {services: [{name: a, port: 1, endpoints: [{address: 'x:1', weight: -1}]}]}", "table.services[0].endpoints[0].weight: must be a non-negative integer that fits in 32 bits, got number -1"},
		{"bare off", "outbound: {listen: off}", "outbound.listen: must be a string, got false (quote it: YAML reads bare on, off, yes and no as booleans)"},
		{"number for string", "labels: {revision: 2}", "labels[\"revision\"]: must be a string, got number 2"},
		{"bad duration", "detectTimeout: 10 s", "detectTimeout: invalid duration \"10 s\": time: unknown unit \" s\" in duration \"10 s\""},
		{"negative duration", "idleTimeout: -1s", "idleTimeout: invalid duration \"-1s\": must not be negative"},
		{"negative nanoseconds", "connectTimeout: -5", "connectTimeout: -5ns must not be negative"},
		{"list for object", "inbound: [a]", "inbound: must be an object, got a list"},
		{"array length", "table: {services: [{name: a, port: 1, rules: [{retry: {codeRanges: [[500]]}}]}]}", "table.services[0].rules[0].retry.codeRanges[0]: must be a list of 2 items, got a list"},
		{"several", "admin: 1\nfoo: {}\ninbound: {app: 3}\n", "admin: must be a string, got number 1\nfoo: unknown field\ninbound.app: must be a string, got number 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", c)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n%s\nwant:\n%s", err, tt.want)
			}
		})
	}
}

// TestValidate pins every validation message (golden strings) on one config
// that gets almost everything wrong.
func TestValidate(t *testing.T) {
	const in = `
admin: "localhost:http"
inbound:
  listen: "example.com:4143"
  protocol: tcp
  defaultPolicy: allow-all
  probes: [{port: 0, path: healthz}, {port: 8080, path: ""}, {port: 70000, path: "/ready?x=1"}, {port: 8080, path: /ok}]
outbound: {listen: "example.com:4140"}
listeners:
- {listen: "127.0.0.1:9000", service: web.default:80}
- {listen: "127.0.0.1:9000", service: nope.default:80}
- {listen: "off", service: ""}
opaquePorts: [0, 80, 70000]
shutdownGrace: -1
labels: {"bad-name": x, __reserved: yy, ok: z}
logLevel: loud
table:
  services:
  - name: web
    port: 80
    addresses: ["web:80", "10.0.0.1"]
    protocol: h3
    endpoints:
    - {address: "127.0.0.1"}
    - {address: ":8080", protocol: nope}
    - {address: "10.0.0.1:0"}
    rules:
    - match:
        path: api
        headers: [{name: "", value: x}, {name: x-a, type: Prefix, value: x}, {name: x-b, type: RegularExpression, value: "("}]
        queryParams: [{name: q, type: RegularExpression, value: "[a"}]
        method: "GE T"
      filters:
        requestHeaders: {set: [{name: "bad name", value: x}], remove: [""]}
        urlRewrite: {pathType: ReplaceSome, path: x}
        redirect: {scheme: ftp, port: 70000, statusCode: 200, pathType: ReplaceFullPath, path: nope}
        mirrors: [{backend: ghost.default:80}, {backend: web.default:80, numerator: 5, denominator: 2}, {backend: web.default:80, numerator: -1}]
      backends:
      - {service: web.default:80}
      - {service: web.default:8080}
      - {service: ""}
      timeouts: {request: 1s, backendRequest: 2s}
      retry: {attempts: -1, codes: [99, 503], codeRanges: [[500, 600], [502, 501]], grpcCodes: [unavailable, wobbly, "17"], backoff: -5}
    - match: {pathType: Fuzzy}
    - match: {pathType: RegularExpression, path: "*"}
  - name: ""
    port: 0
  - name: web
    port: 80
  - name: "a/b"
    namespace: x.y
    port: 1
    hostnames: [""]
    breaker: {maxFailures: -1, minPenalty: 10s, maxPenalty: 1s, jitterRatio: 101}
`
	want := strings.TrimSpace(`
admin: "localhost:http": port "http" is not a number within 0-65535
inbound.listen: "example.com:4143": host "example.com" is not an IP address or localhost
inbound.app: required when inbound.listen is set and inbound.originalDst is not (the application's address, e.g. 127.0.0.1:8080)
inbound.protocol: "tcp" is not http1, http2, grpc or opaque (or empty, to detect)
inbound.defaultPolicy: "allow-all" is not one of all-unauthenticated, all-authenticated, cluster-unauthenticated, cluster-authenticated, deny, audit
inbound.probes[0].port: 0 is not within 1-65535
inbound.probes[0].path: "healthz" must start with /
inbound.probes[1].path: required (the probe's request path, e.g. /healthz)
inbound.probes[2].port: 70000 is not within 1-65535
inbound.probes[2].path: "/ready?x=1" must not contain a query or fragment
outbound.listen: "example.com:4140": host "example.com" is not an IP address or localhost
listeners[1].listen: "127.0.0.1:9000" is already used by listeners[0]
listeners[1].service: unknown service "nope.default:80"
listeners[2].listen: cannot be "off"
listeners[2].service: required (a service key such as "web.default:80")
table.services[0].addresses[0]: "web:80" is not an IP:port address
table.services[0].addresses[1]: "10.0.0.1" is not an IP:port address
table.services[0].protocol: "h3" is not http1, http2, grpc or opaque (or empty, to detect)
table.services[0].endpoints[0].address: "127.0.0.1" is not a host:port address
table.services[0].endpoints[1].address: ":8080" has no host
table.services[0].endpoints[1].protocol: "nope" is not http1, http2, grpc or opaque (or empty, to detect)
table.services[0].endpoints[2].address: "10.0.0.1:0": port "0" is not a number within 1-65535
table.services[0].rules[0].match.path: "api" must start with /
table.services[0].rules[0].match.headers[0].name: required
table.services[0].rules[0].match.headers[1].type: "Prefix" is not Exact or RegularExpression
table.services[0].rules[0].match.headers[2].value: invalid regular expression: error parsing regexp: missing closing ): ` + "`(`" + `
table.services[0].rules[0].match.queryParams[0].value: invalid regular expression: error parsing regexp: missing closing ]: ` + "`[a`" + `
table.services[0].rules[0].match.method: "GE T" is not an HTTP method
table.services[0].rules[0].filters.requestHeaders.set[0].name: "bad name" is not a header name
table.services[0].rules[0].filters.requestHeaders.remove[0]: "" is not a header name
table.services[0].rules[0].filters.urlRewrite.pathType: "ReplaceSome" is not ReplaceFullPath or ReplacePrefixMatch
table.services[0].rules[0].filters.redirect.path: "nope" must start with /
table.services[0].rules[0].filters.redirect.scheme: "ftp" is not http or https
table.services[0].rules[0].filters.redirect.port: 70000 is not within 1-65535
table.services[0].rules[0].filters.redirect.statusCode: 200 is not 301, 302, 303, 307 or 308
table.services[0].rules[0].filters.mirrors[0].backend: unknown service "ghost.default:80"
table.services[0].rules[0].filters.mirrors[1].numerator: 5 is more than the denominator 2
table.services[0].rules[0].filters.mirrors[2]: numerator and denominator must not be negative
table.services[0].rules[0].backends[1].service: unknown service "web.default:8080"
table.services[0].rules[0].backends[2].service: required (a service key such as "web.default:80")
table.services[0].rules[0].timeouts.backendRequest: 2s is longer than timeouts.request 1s
table.services[0].rules[0].retry.attempts: must not be negative
table.services[0].rules[0].retry.codes[0]: 99 is not an HTTP status (100-599)
table.services[0].rules[0].retry.codeRanges[0]: [500 600] is not a range of HTTP statuses within 100-599
table.services[0].rules[0].retry.codeRanges[1]: [502 501] is not a range of HTTP statuses within 100-599
table.services[0].rules[0].retry.grpcCodes[1]: "wobbly" is not a gRPC status code name or number
table.services[0].rules[0].retry.grpcCodes[2]: "17" is not a gRPC status code name or number
table.services[0].rules[0].retry.backoff: -5ns must not be negative
table.services[0].rules[1].match.pathType: "Fuzzy" is not PathPrefix, Exact or RegularExpression
table.services[0].rules[2].match.path: invalid regular expression: error parsing regexp: missing argument to repetition operator: ` + "`*`" + `
table.services[1].name: required
table.services[1].port: 0 is not within 1-65535
table.services[2]: duplicate service "web.default:80" (also services[0])
table.services[3].name: "a/b" must not contain spaces, colons or slashes
table.services[3].namespace: "x.y" must not contain spaces, colons, slashes or dots
table.services[3].hostnames[0]: "" is not a hostname
table.services[3].breaker.maxFailures: must not be negative
table.services[3].breaker.minPenalty: 10s is more than maxPenalty 1s
table.services[3].breaker.jitterRatio: 101 is not within 0-100
shutdownGrace: -1ns must not be negative
opaquePorts[0]: port 0 is not within 1-65535
opaquePorts[2]: port 70000 is not within 1-65535
labels["__reserved"]: not a valid metric label name (letters, digits and _, not starting with a digit or __)
labels["bad-name"]: not a valid metric label name (letters, digits and _, not starting with a digit or __)
logLevel: "loud" is not debug, info, warn or error`)
	_, err := Parse([]byte(in))
	if err == nil {
		t.Fatal("Parse accepted an invalid config")
	}
	if got := err.Error(); got != want {
		gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("line %d:\n got: %s\nwant: %s", i+1, g, w)
			}
		}
	}
	// Each problem is its own error.
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != strings.Count(want, "\n")+1 {
		t.Errorf("Validate did not join one error per problem")
	}
}

func TestValidateOK(t *testing.T) {
	// Port 0 (any free port) is fine for listeners; "localhost" and IPv6 hosts too.
	c := &Config{
		Admin:     "[::1]:0",
		Inbound:   Inbound{Listen: "localhost:0", App: "localhost:8080", Probes: []Probe{{Port: 8080, Path: "/"}, {Port: 9090, Path: "/healthz"}}},
		Outbound:  Outbound{Listen: ":0"},
		Listeners: []Listener{{Listen: "127.0.0.1:0", Service: "a.b:1"}, {Listen: "127.0.0.1:0", Service: "a.b:1"}},
		Table:     routetable.Table{Services: []routetable.Service{{Name: "a", Namespace: "b", Port: 1}}},
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	_, err := Load(missing)
	if err == nil || err.Error() != missing+": no such file or directory" || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("admin: 1\nbogus: 2\n"), 0o644)
	_, err = Load(bad)
	if want := bad + ": admin: must be a string, got number 1\nbogus: unknown field"; err == nil || err.Error() != want {
		t.Errorf("Load(bad) = %v, want %q", err, want)
	}
}
