package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/mesh/api/routetable"
	"github.com/sluicehq/sluice/proxy/policy"
	"github.com/sluicehq/sluice/proxy/retry"
)

// problems collects validation errors, each prefixed with a field path.
type problems []error

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// Validate checks the configuration: every address parses, every listener and
// every rule backend or mirror names a service in the table, durations are not
// negative, ports are in range, regular expressions compile, and so on. Empty
// fields that have a default are accepted. It returns every problem found,
// joined (one per line), each naming the field path, for example
//
//	table.services[2].rules[0].backends[1].service: unknown service "web.default:80"
func (c *Config) Validate() error {
	var p problems
	if c.Admin != "" {
		checkListen(&p, "admin", c.Admin, false)
	}
	if c.Inbound.Listen != "" {
		checkListen(&p, "inbound.listen", c.Inbound.Listen, true)
	}
	if c.Inbound.Enabled() && c.Inbound.App == "" && !c.Inbound.OriginalDst {
		p.add("inbound.app", "required when inbound.listen is set and inbound.originalDst is not (the application's address, e.g. 127.0.0.1:8080)")
	}
	if c.Inbound.App != "" {
		checkDial(&p, "inbound.app", c.Inbound.App)
	}
	checkProtocol(&p, "inbound.protocol", c.Inbound.Protocol)
	if dp := c.Inbound.DefaultPolicy; dp != "" && !slices.Contains(policy.DefaultPolicies, dp) {
		p.add("inbound.defaultPolicy", "%q is not one of %s", dp, strings.Join(policy.DefaultPolicies, ", "))
	}
	for i, pr := range c.Inbound.Probes {
		path := fmt.Sprintf("inbound.probes[%d]", i)
		if pr.Port < 1 || pr.Port > 65535 {
			p.add(path+".port", "%d is not within 1-65535", pr.Port)
		}
		switch {
		case pr.Path == "":
			p.add(path+".path", "required (the probe's request path, e.g. /healthz)")
		case !strings.HasPrefix(pr.Path, "/"):
			p.add(path+".path", "%q must start with /", pr.Path)
		case strings.ContainsAny(pr.Path, "?#"):
			p.add(path+".path", "%q must not contain a query or fragment", pr.Path)
		}
	}
	if c.Outbound.Listen != "" {
		checkListen(&p, "outbound.listen", c.Outbound.Listen, true)
	}

	known := map[string]bool{}
	for _, s := range c.Table.Services {
		known[s.Key()] = true
	}
	if cp := c.ControlPlane; cp != nil {
		// Services named here may be discovered from the control plane.
		known[anyService] = true
		checkDial(&p, "controlPlane.address", cp.Address)
		if cp.IdentityAddress != "" {
			checkDial(&p, "controlPlane.identityAddress", cp.IdentityAddress)
		}
		for _, f := range []struct{ name, v string }{
			{"controlPlane.identity", cp.Identity},
			{"controlPlane.tokenFile", cp.TokenFile},
			{"controlPlane.trustAnchors", cp.TrustAnchors},
			{"controlPlane.destinationName", cp.DestinationName},
		} {
			if f.v == "" {
				p.add(f.name, "required when controlPlane is set%s", controlPlaneHint[f.name])
			}
		}
	}
	seenListen := map[string]int{}
	for i, l := range c.Listeners {
		path := fmt.Sprintf("listeners[%d]", i)
		checkListen(&p, path+".listen", l.Listen, false)
		if _, port, err := net.SplitHostPort(l.Listen); err == nil && port != "0" {
			if j, dup := seenListen[l.Listen]; dup {
				p.add(path+".listen", "%q is already used by listeners[%d]", l.Listen, j)
			} else {
				seenListen[l.Listen] = i
			}
		}
		switch {
		case l.Service == "":
			p.add(path+".service", "required (a service key such as \"web.default:80\")")
		case !known[l.Service] && c.ControlPlane == nil:
			p.add(path+".service", "unknown service %q", l.Service)
		}
	}

	checkTable(&p, "table", &c.Table, known)

	for _, d := range []struct {
		name string
		v    routetable.Duration
	}{
		{"detectTimeout", c.DetectTimeout},
		{"connectTimeout", c.ConnectTimeout},
		{"idleTimeout", c.IdleTimeout},
		{"shutdownGrace", c.ShutdownGrace},
	} {
		checkDuration(&p, d.name, d.v)
	}
	for i, port := range c.OpaquePorts {
		if port < 1 || port > 65535 {
			p.add(fmt.Sprintf("opaquePorts[%d]", i), "port %d is not within 1-65535", port)
		}
	}
	for _, k := range sortedStringKeys(c.Labels) {
		if !labelName.MatchString(k) || strings.HasPrefix(k, "__") {
			p.add(fmt.Sprintf("labels[%q]", k), "not a valid metric label name (letters, digits and _, not starting with a digit or __)")
		}
	}
	if c.LogLevel != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
			p.add("logLevel", "%q is not debug, info, warn or error", c.LogLevel)
		}
	}
	return errors.Join(p...)
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func checkTable(p *problems, path string, t *routetable.Table, known map[string]bool) {
	first := map[string]int{}
	for i := range t.Services {
		s := &t.Services[i]
		sp := fmt.Sprintf("%s.services[%d]", path, i)
		switch {
		case s.Name == "":
			p.add(sp+".name", "required")
		case strings.ContainsAny(s.Name, " :/"):
			p.add(sp+".name", "%q must not contain spaces, colons or slashes", s.Name)
		}
		if strings.ContainsAny(s.Namespace, " :/.") {
			p.add(sp+".namespace", "%q must not contain spaces, colons, slashes or dots", s.Namespace)
		}
		if s.Port < 1 || s.Port > 65535 {
			p.add(sp+".port", "%d is not within 1-65535", s.Port)
		}
		if j, dup := first[s.Key()]; dup {
			p.add(sp, "duplicate service %q (also services[%d])", s.Key(), j)
		} else {
			first[s.Key()] = i
		}
		for j, a := range s.Addresses {
			ap, err := netip.ParseAddrPort(a)
			if err != nil || ap.Port() == 0 {
				p.add(fmt.Sprintf("%s.addresses[%d]", sp, j), "%q is not an IP:port address", a)
			}
		}
		for j, h := range s.Hostnames {
			if h == "" || strings.ContainsAny(h, " /") {
				p.add(fmt.Sprintf("%s.hostnames[%d]", sp, j), "%q is not a hostname", h)
			}
		}
		checkProtocol(p, sp+".protocol", s.Protocol)
		for j := range s.Endpoints {
			e := &s.Endpoints[j]
			ep := fmt.Sprintf("%s.endpoints[%d]", sp, j)
			checkDial(p, ep+".address", e.Address)
			checkProtocol(p, ep+".protocol", e.Protocol)
		}
		for j := range s.Rules {
			checkRule(p, fmt.Sprintf("%s.rules[%d]", sp, j), &s.Rules[j], known)
		}
		if b := s.Breaker; b != nil {
			bp := sp + ".breaker"
			if b.MaxFailures < 0 {
				p.add(bp+".maxFailures", "must not be negative")
			}
			checkDuration(p, bp+".minPenalty", b.MinPenalty)
			checkDuration(p, bp+".maxPenalty", b.MaxPenalty)
			if b.MinPenalty > 0 && b.MaxPenalty > 0 && b.MinPenalty > b.MaxPenalty {
				p.add(bp+".minPenalty", "%v is more than maxPenalty %v", b.MinPenalty.D(), b.MaxPenalty.D())
			}
			if b.JitterRatio < 0 || b.JitterRatio > 100 {
				p.add(bp+".jitterRatio", "%v is not within 0-100", b.JitterRatio)
			}
		}
	}
}

func checkRule(p *problems, path string, r *routetable.Rule, known map[string]bool) {
	m := &r.Match
	switch m.PathType {
	case "", routetable.PathPrefix, routetable.PathExact:
		if m.Path != "" && !strings.HasPrefix(m.Path, "/") {
			p.add(path+".match.path", "%q must start with /", m.Path)
		}
	case routetable.PathRegex:
		checkRegex(p, path+".match.path", m.Path)
	default:
		p.add(path+".match.pathType", "%q is not PathPrefix, Exact or RegularExpression", m.PathType)
	}
	for i, h := range m.Headers {
		checkValueMatch(p, fmt.Sprintf("%s.match.headers[%d]", path, i), h)
	}
	for i, q := range m.QueryParams {
		checkValueMatch(p, fmt.Sprintf("%s.match.queryParams[%d]", path, i), q)
	}
	if m.Method != "" && !isToken(m.Method) {
		p.add(path+".match.method", "%q is not an HTTP method", m.Method)
	}

	f := &r.Filters
	checkHeaderModifier(p, path+".filters.requestHeaders", f.RequestHeaders)
	checkHeaderModifier(p, path+".filters.responseHeaders", f.ResponseHeaders)
	if u := f.URLRewrite; u != nil {
		checkPathModifier(p, path+".filters.urlRewrite", u.PathType, u.Path)
	}
	if rd := f.Redirect; rd != nil {
		rp := path + ".filters.redirect"
		checkPathModifier(p, rp, rd.PathType, rd.Path)
		switch rd.Scheme {
		case "", "http", "https":
		default:
			p.add(rp+".scheme", "%q is not http or https", rd.Scheme)
		}
		if rd.Port < 0 || rd.Port > 65535 {
			p.add(rp+".port", "%d is not within 1-65535", rd.Port)
		}
		switch rd.StatusCode {
		case 0, 301, 302, 303, 307, 308:
		default:
			p.add(rp+".statusCode", "%d is not 301, 302, 303, 307 or 308", rd.StatusCode)
		}
	}
	for i, mr := range f.Mirrors {
		mp := fmt.Sprintf("%s.filters.mirrors[%d]", path, i)
		checkServiceRef(p, mp+".backend", mr.Backend, known)
		if mr.Numerator < 0 || mr.Denominator < 0 {
			p.add(mp, "numerator and denominator must not be negative")
		} else if mr.Denominator > 0 && mr.Numerator > mr.Denominator {
			p.add(mp+".numerator", "%d is more than the denominator %d", mr.Numerator, mr.Denominator)
		}
	}

	for i := range r.Backends {
		b := &r.Backends[i]
		bp := fmt.Sprintf("%s.backends[%d]", path, i)
		checkServiceRef(p, bp+".service", b.Service, known)
		checkHeaderModifier(p, bp+".requestHeaders", b.RequestHeaders)
		checkHeaderModifier(p, bp+".responseHeaders", b.ResponseHeaders)
	}

	checkDuration(p, path+".timeouts.request", r.Timeouts.Request)
	checkDuration(p, path+".timeouts.backendRequest", r.Timeouts.BackendRequest)
	if req, be := r.Timeouts.Request, r.Timeouts.BackendRequest; req > 0 && be > req {
		p.add(path+".timeouts.backendRequest", "%v is longer than timeouts.request %v", be.D(), req.D())
	}

	if rt := r.Retry; rt != nil {
		rp := path + ".retry"
		if rt.Attempts < 0 {
			p.add(rp+".attempts", "must not be negative")
		}
		for i, code := range rt.Codes {
			if code < 100 || code > 599 {
				p.add(fmt.Sprintf("%s.codes[%d]", rp, i), "%d is not an HTTP status (100-599)", code)
			}
		}
		for i, cr := range rt.CodeRanges {
			if cr[0] < 100 || cr[1] > 599 || cr[0] > cr[1] {
				p.add(fmt.Sprintf("%s.codeRanges[%d]", rp, i), "%v is not a range of HTTP statuses within 100-599", cr)
			}
		}
		for i, g := range rt.GRPCCodes {
			if _, err := retry.ParseGRPCCode(g); err != nil {
				p.add(fmt.Sprintf("%s.grpcCodes[%d]", rp, i), "%q is not a gRPC status code name or number", g)
			}
		}
		checkDuration(p, rp+".backoff", rt.Backoff)
	}
}

func checkValueMatch(p *problems, path string, v routetable.ValueMatch) {
	if v.Name == "" {
		p.add(path+".name", "required")
	}
	switch v.Type {
	case "", routetable.ValueExact:
	case routetable.ValueRegex:
		checkRegex(p, path+".value", v.Value)
	default:
		p.add(path+".type", "%q is not Exact or RegularExpression", v.Type)
	}
}

func checkHeaderModifier(p *problems, path string, h *routetable.HeaderModifier) {
	if h == nil {
		return
	}
	for i, x := range h.Set {
		if !isToken(x.Name) {
			p.add(fmt.Sprintf("%s.set[%d].name", path, i), "%q is not a header name", x.Name)
		}
	}
	for i, x := range h.Add {
		if !isToken(x.Name) {
			p.add(fmt.Sprintf("%s.add[%d].name", path, i), "%q is not a header name", x.Name)
		}
	}
	for i, name := range h.Remove {
		if !isToken(name) {
			p.add(fmt.Sprintf("%s.remove[%d]", path, i), "%q is not a header name", name)
		}
	}
}

func checkPathModifier(p *problems, path, pathType, value string) {
	switch pathType {
	case "":
	case "ReplaceFullPath", "ReplacePrefixMatch":
		if !strings.HasPrefix(value, "/") {
			p.add(path+".path", "%q must start with /", value)
		}
	default:
		p.add(path+".pathType", "%q is not ReplaceFullPath or ReplacePrefixMatch", pathType)
	}
}

// anyService, marked known, accepts every service reference.
const anyService = "*"

func checkServiceRef(p *problems, path, key string, known map[string]bool) {
	switch {
	case key == "":
		p.add(path, "required (a service key such as \"web.default:80\")")
	case !known[key] && !known[anyService]:
		p.add(path, "unknown service %q", key)
	}
}

func checkRegex(p *problems, path, expr string) {
	if _, err := regexp.Compile(expr); err != nil {
		p.add(path, "invalid regular expression: %v", err)
	}
}

func checkProtocol(p *problems, path string, proto routetable.Protocol) {
	switch proto {
	case routetable.ProtocolDetect, routetable.ProtocolHTTP1, routetable.ProtocolHTTP2, routetable.ProtocolGRPC, routetable.ProtocolOpaque:
	default:
		p.add(path, "%q is not http1, http2, grpc or opaque (or empty, to detect)", proto)
	}
}

func checkDuration(p *problems, path string, d routetable.Duration) {
	if d < 0 {
		p.add(path, "%v must not be negative", d.D())
	}
}

// checkListen checks an address to bind: [host]:port with an IP or
// "localhost" host and a port within 0-65535 (0: any free port).
func checkListen(p *problems, path, addr string, offOK bool) {
	if addr == Off {
		if !offOK {
			p.add(path, "cannot be %q", Off)
		}
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(path, "%q is not a host:port address", addr)
		return
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			p.add(path, "%q: host %q is not an IP address or localhost", addr, host)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add(path, "%q: port %q is not a number within 0-65535", addr, port)
	}
}

// checkDial checks an address to connect to: host:port, port within 1-65535.
func checkDial(p *problems, path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(path, "%q is not a host:port address", addr)
		return
	}
	if host == "" {
		p.add(path, "%q has no host", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		p.add(path, "%q: port %q is not a number within 1-65535", addr, port)
	}
}

// isToken reports whether s is a non-empty RFC 9110 token (methods, header names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func sortedStringKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// controlPlaneHint completes the message of a missing controlPlane field.
var controlPlaneHint = map[string]string{
	"controlPlane.destinationName": " (the mesh identity the control plane's certificate must name, such as " +
		"sluice-destination.sluice.serviceaccount.identity.sluice.cluster.local)",
}
