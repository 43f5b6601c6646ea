package loadtest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// ParseCommand turns a flagger-loadtester command line into a Spec. The
// command is parsed, never run: there is no shell. Single and double quotes
// and backslash escapes are understood; pipes, redirections, command lists
// and substitutions are refused.
//
// hey (https://github.com/rakyll/hey), flags with one or two dashes, values
// after a space or "=":
//
//	-z DURATION   run for that long (then -n is ignored)
//	-n N          number of requests (default 200 without -z)
//	-c N          workers (default 50)
//	-q QPS        rate limit per worker: the load's rate is q×c
//	-m METHOD     HTTP method (default GET)
//	-H "K: V"     header, repeatable
//	-d BODY       request body
//	-T TYPE       Content-Type (default text/html, as hey)
//	-A ACCEPT     Accept header
//	-a USER:PASS  basic authentication
//	-t SECONDS    timeout of each request (default 20; 0 means the default)
//	-host HOST    Host header
//	-h2           HTTP/2 (over TLS)
//	-disable-compression, -disable-keepalive, -disable-redirects
//	-o, -cpus     accepted and ignored
//
// hey's certificate check is off, as in hey. -D (body file) and -x (proxy)
// are refused. Exactly one URL.
//
// ghz (https://ghz.sh), one or two dashes, values after a space or "=":
//
//	--call METHOD         package.Service/Method (or package.Service.Method)
//	-d, --data JSON       the request message as JSON
//	-m, --metadata JSON   metadata, a JSON object of strings
//	-z, --duration D      run for that long (then -n is ignored)
//	-x, --max-duration D  stop after that long at the latest
//	-n, --total N         number of requests (default 200 without -z)
//	-c, --concurrency N   workers (default 50)
//	-r, --rps N           total rate; also -q/--qps (older ghz)
//	-t, --timeout D       timeout of each request (default 20s)
//	--insecure            plaintext (h2c); without it, TLS
//	--skipTLS             TLS without verifying the certificate
//	--authority A         the :authority
//	--proto, --protoset, -i/--import-paths, --connections, --name, --tags,
//	-O/--format, -o/--output, --cpus, --connect-timeout, --keepalive,
//	--count-errors, --skipFirst, --enable-compression, --reflect-metadata:
//	                      accepted and ignored (methods are resolved from the
//	                      descriptors linked into Sluice, which include
//	                      grpc.testing.TestService, or by server reflection)
//
// Exactly one target, host:port. Other flags of either tool are refused with
// an error naming them.
func ParseCommand(cmd string) (Spec, error) {
	args, err := splitCommand(cmd)
	if err != nil {
		return Spec{}, fmt.Errorf("%w: command %q: %w", ErrInvalid, cmd, err)
	}
	if len(args) == 0 {
		return Spec{}, fmt.Errorf("%w: command is empty", ErrInvalid)
	}
	var spec Spec
	switch tool := path.Base(args[0]); tool {
	case "hey":
		spec, err = parseHey(args[1:])
	case "ghz":
		spec, err = parseGhz(args[1:])
	default:
		return Spec{}, fmt.Errorf("%w: command %q: %s is not supported: the built-in load tester understands hey and ghz command lines (it runs no commands)", ErrInvalid, cmd, tool)
	}
	if err != nil {
		return Spec{}, fmt.Errorf("%w: command %q: %w", ErrInvalid, cmd, err)
	}
	return spec, nil
}

// splitCommand splits a command line as a POSIX shell would split words.
func splitCommand(s string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inWord  bool
		i       int
		special = "|&;<>()`$"
	)
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+end])
			inWord = true
			i += end + 2
		case c == '"':
			i++
			closed := false
			for i < len(s) {
				d := s[i]
				if d == '"' {
					closed = true
					i++
					break
				}
				if d == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`\n", s[i+1]) >= 0 {
					if s[i+1] != '\n' {
						cur.WriteByte(s[i+1])
					}
					i += 2
					continue
				}
				if d == '$' || d == '`' {
					return nil, fmt.Errorf("shell substitution (%c) is not supported", d)
				}
				cur.WriteByte(d)
				i++
			}
			if !closed {
				return nil, errors.New("unterminated double quote")
			}
			inWord = true
		case c == '\\':
			if i+1 < len(s) {
				if s[i+1] != '\n' {
					cur.WriteByte(s[i+1])
					inWord = true
				}
				i += 2
			} else {
				i++
			}
		case strings.IndexByte(special, c) >= 0:
			return nil, fmt.Errorf("shell syntax %q is not supported: the command is parsed, not run by a shell", string(c))
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}

// flagDef is one flag of a tool.
type flagDef struct {
	names   []string
	boolean bool
	set     func(v string) error
}

// parseFlags reads args against defs; the rest are positional. A flag is
// written -name or --name, its value after "=" or as the next argument.
func parseFlags(tool string, args []string, defs []flagDef) ([]string, error) {
	byName := map[string]*flagDef{}
	for i := range defs {
		for _, n := range defs[i].names {
			byName[n] = &defs[i]
		}
	}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		def, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("%s flag %s is not supported", tool, a)
		}
		switch {
		case def.boolean && !hasValue:
			value = "true"
		case !hasValue:
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%s flag -%s needs a value", tool, name)
			}
			i++
			value = args[i]
		}
		if err := def.set(value); err != nil {
			return nil, fmt.Errorf("%s flag -%s %q: %w", tool, name, value, err)
		}
	}
	return pos, nil
}

func intFlag(p *int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errors.New("not a non-negative integer")
		}
		*p = n
		return nil
	}
}

func floatFlag(p *float64) func(string) error {
	return func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f != f {
			return errors.New("not a non-negative number")
		}
		*p = f
		return nil
	}
}

func durationFlag(p *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return errors.New("not a duration such as 30s or 1m")
		}
		*p = d
		return nil
	}
}

func boolFlag(p *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("not a boolean")
		}
		*p = b
		return nil
	}
}

func stringFlag(p *string) func(string) error {
	return func(v string) error { *p = v; return nil }
}

func ignored(string) error { return nil }

func unsupported(why string) func(string) error {
	return func(string) error { return errors.New(why) }
}

// parseHey reads hey's flags.
func parseHey(args []string) (Spec, error) {
	var (
		n, c                      = 200, 50
		q                         float64
		z                         time.Duration
		timeoutSec                = 20
		method                    = "GET"
		body, contentType, accept string
		auth, host                string
		h2, noComp, noKeep, noRed bool
		headers                   = map[string]string{}
	)
	defs := []flagDef{
		{names: []string{"n"}, set: intFlag(&n)},
		{names: []string{"c"}, set: intFlag(&c)},
		{names: []string{"q"}, set: floatFlag(&q)},
		{names: []string{"z"}, set: durationFlag(&z)},
		{names: []string{"m"}, set: stringFlag(&method)},
		{names: []string{"H"}, set: func(v string) error {
			k, val, ok := strings.Cut(v, ":")
			if !ok || strings.TrimSpace(k) == "" {
				return errors.New(`not a "Name: value" header`)
			}
			k, val = strings.TrimSpace(k), strings.TrimSpace(val)
			if old, dup := headers[k]; dup {
				val = old + ", " + val
			}
			headers[k] = val
			return nil
		}},
		{names: []string{"d"}, set: stringFlag(&body)},
		{names: []string{"T"}, set: stringFlag(&contentType)},
		{names: []string{"A"}, set: stringFlag(&accept)},
		{names: []string{"a"}, set: func(v string) error {
			if !strings.Contains(v, ":") {
				return errors.New("not user:password")
			}
			auth = v
			return nil
		}},
		{names: []string{"t"}, set: intFlag(&timeoutSec)},
		{names: []string{"host"}, set: stringFlag(&host)},
		{names: []string{"h2"}, boolean: true, set: boolFlag(&h2)},
		{names: []string{"disable-compression"}, boolean: true, set: boolFlag(&noComp)},
		{names: []string{"disable-keepalive"}, boolean: true, set: boolFlag(&noKeep)},
		{names: []string{"disable-redirects"}, boolean: true, set: boolFlag(&noRed)},
		{names: []string{"o", "cpus"}, set: ignored},
		{names: []string{"D"}, set: unsupported("a body file is not supported; use -d")},
		{names: []string{"x"}, set: unsupported("an HTTP proxy is not supported")},
	}
	pos, err := parseFlags("hey", args, defs)
	if err != nil {
		return Spec{}, err
	}
	if len(pos) != 1 {
		return Spec{}, fmt.Errorf("hey needs exactly one URL, got %d arguments %q", len(pos), pos)
	}
	if c <= 0 {
		return Spec{}, errors.New("hey -c must be at least 1")
	}
	spec := Spec{
		Kind:               HTTP,
		URL:                pos[0],
		Method:             method,
		Concurrency:        c,
		Rate:               q * float64(c),
		Body:               body,
		Host:               host,
		Insecure:           true,
		HTTP2:              h2,
		DisableCompression: noComp,
		DisableKeepAlives:  noKeep,
		DisableRedirects:   noRed,
	}
	if z > 0 {
		spec.Duration = z
	} else {
		if n <= 0 {
			return Spec{}, errors.New("hey -n must be at least 1")
		}
		if n < c {
			return Spec{}, errors.New("hey -n cannot be less than -c")
		}
		spec.Requests = n
	}
	if timeoutSec > 0 {
		spec.Timeout = time.Duration(timeoutSec) * time.Second
	}
	if contentType == "" {
		contentType = "text/html"
	}
	headers["Content-Type"] = contentType
	if accept != "" {
		headers["Accept"] = accept
	}
	if auth != "" {
		headers["Authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(auth))
	}
	spec.Headers = headers
	return spec, nil
}

// parseGhz reads ghz's flags.
func parseGhz(args []string) (Spec, error) {
	var (
		call, data, metaJSON, authority string
		n, c                            = 200, 50
		rps                             float64
		z, x                            time.Duration
		timeout                         = 20 * time.Second
		insecureFlag, skipTLS           bool
	)
	defs := []flagDef{
		{names: []string{"call"}, set: stringFlag(&call)},
		{names: []string{"d", "data"}, set: stringFlag(&data)},
		{names: []string{"m", "metadata"}, set: stringFlag(&metaJSON)},
		{names: []string{"z", "duration"}, set: durationFlag(&z)},
		{names: []string{"x", "max-duration"}, set: durationFlag(&x)},
		{names: []string{"n", "total"}, set: intFlag(&n)},
		{names: []string{"c", "concurrency"}, set: intFlag(&c)},
		{names: []string{"r", "rps", "q", "qps"}, set: floatFlag(&rps)},
		{names: []string{"t", "timeout"}, set: durationFlag(&timeout)},
		{names: []string{"insecure"}, boolean: true, set: boolFlag(&insecureFlag)},
		{names: []string{"skipTLS"}, boolean: true, set: boolFlag(&skipTLS)},
		{names: []string{"authority"}, set: stringFlag(&authority)},
		{names: []string{"proto", "protoset", "i", "import-paths", "connections", "name", "tags", "O", "format",
			"o", "output", "cpus", "connect-timeout", "keepalive", "reflect-metadata"}, set: ignored},
		{names: []string{"count-errors", "skipFirst", "enable-compression"}, boolean: true, set: ignored},
		{names: []string{"D", "data-file", "b", "binary", "B", "binary-file"}, set: unsupported("only -d/--data with a JSON message is supported")},
		{names: []string{"cacert", "cert", "key", "cname"}, set: unsupported("client certificates and custom CAs are not supported")},
	}
	pos, err := parseFlags("ghz", args, defs)
	if err != nil {
		return Spec{}, err
	}
	if len(pos) != 1 {
		return Spec{}, fmt.Errorf("ghz needs exactly one target host:port, got %d arguments %q", len(pos), pos)
	}
	if call == "" {
		return Spec{}, errors.New("ghz needs --call package.Service/Method")
	}
	if c <= 0 {
		return Spec{}, errors.New("ghz -c must be at least 1")
	}
	if strings.HasPrefix(strings.TrimSpace(data), "[") {
		return Spec{}, errors.New("ghz -d with a JSON array (streaming or per-call data) is not supported; give one JSON object")
	}
	spec := Spec{
		Kind:        GRPC,
		URL:         pos[0],
		Method:      call,
		Concurrency: c,
		Rate:        rps,
		Body:        data,
		Host:        authority,
		Timeout:     timeout,
		TLS:         !insecureFlag,
		Insecure:    skipTLS,
	}
	switch {
	case z > 0:
		spec.Duration = z
	case n > 0:
		spec.Requests = n
	default:
		return Spec{}, errors.New("ghz needs -n or -z")
	}
	if x > 0 && (spec.Duration == 0 || x < spec.Duration) {
		spec.Duration = x
	}
	if metaJSON != "" {
		var md map[string]string
		if err := json.Unmarshal([]byte(metaJSON), &md); err != nil {
			return Spec{}, fmt.Errorf("ghz -m is not a JSON object of strings: %w", err)
		}
		spec.Headers = md
	}
	return spec, nil
}
