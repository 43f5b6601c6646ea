package loadtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strings"
	"time"
)

// Kind is the protocol of a load.
type Kind string

// The kinds of load.
const (
	// HTTP sends HTTP/1.1 requests (HTTP/2 over TLS with HTTP2).
	HTTP Kind = "http"
	// GRPC calls one unary gRPC method.
	GRPC Kind = "grpc"
)

// Defaults of a Spec's zero fields.
const (
	// DefaultDuration is a load's duration when it sets neither Duration nor
	// Requests.
	DefaultDuration = time.Minute
	// DefaultTimeout bounds one request, as hey's and ghz's -t do.
	DefaultTimeout = 20 * time.Second
	// DefaultConcurrency is the number of workers.
	DefaultConcurrency = 1
)

// ErrInvalid is wrapped by the errors of a Spec that cannot run.
var ErrInvalid = errors.New("invalid load")

// Spec is one load: what to call, how hard and for how long.
type Spec struct {
	// Kind is http (the default) or grpc.
	Kind Kind `json:"kind"`
	// URL is what to call: an absolute http or https URL, or for gRPC the
	// server's host:port (grpc://host:port is accepted).
	URL string `json:"url"`
	// Method is the HTTP method (default GET) or the gRPC method,
	// "package.Service/Method" (also written "package.Service.Method").
	Method string `json:"method,omitempty"`
	// Rate is the total requests per second across workers; 0 means as fast
	// as the workers go.
	Rate float64 `json:"rate,omitempty"`
	// Concurrency is the number of workers; default 1.
	Concurrency int `json:"concurrency,omitempty"`
	// Duration is how long the load runs; when 0 and Requests is 0,
	// DefaultDuration. The tester's MaxDuration caps it.
	Duration time.Duration `json:"duration,omitempty"`
	// Requests stops the load after that many requests; 0 means no limit.
	Requests int `json:"requests,omitempty"`
	// Timeout bounds each request; default DefaultTimeout.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Headers are sent with each request (gRPC: as metadata).
	Headers map[string]string `json:"headers,omitempty"`
	// Body is the request body; for gRPC, the request message in protobuf's
	// JSON form ("" is the empty message).
	Body string `json:"body,omitempty"`
	// Host overrides the Host header (gRPC: the :authority).
	Host string `json:"host,omitempty"`
	// Insecure skips verification of the server's certificate (https, or
	// gRPC with TLS).
	Insecure bool `json:"insecure,omitempty"`
	// TLS makes a gRPC load use TLS; gRPC is plaintext (h2c) otherwise.
	TLS bool `json:"tls,omitempty"`
	// HTTP2 lets HTTP loads negotiate HTTP/2 over TLS.
	HTTP2 bool `json:"http2,omitempty"`
	// DisableKeepAlives opens a new connection per HTTP request.
	DisableKeepAlives bool `json:"disableKeepAlives,omitempty"`
	// DisableCompression stops asking for gzip responses.
	DisableCompression bool `json:"disableCompression,omitempty"`
	// DisableRedirects reports 3xx responses instead of following them.
	DisableRedirects bool `json:"disableRedirects,omitempty"`
}

// specJSON is Spec with durations written as strings ("1m").
type specJSON struct {
	Kind               Kind              `json:"kind"`
	URL                string            `json:"url"`
	Method             string            `json:"method,omitempty"`
	Rate               float64           `json:"rate,omitempty"`
	Concurrency        int               `json:"concurrency,omitempty"`
	Duration           string            `json:"duration,omitempty"`
	Requests           int               `json:"requests,omitempty"`
	Timeout            string            `json:"timeout,omitempty"`
	Headers            map[string]string `json:"headers,omitempty"`
	Body               string            `json:"body,omitempty"`
	Host               string            `json:"host,omitempty"`
	Insecure           bool              `json:"insecure,omitempty"`
	TLS                bool              `json:"tls,omitempty"`
	HTTP2              bool              `json:"http2,omitempty"`
	DisableKeepAlives  bool              `json:"disableKeepAlives,omitempty"`
	DisableCompression bool              `json:"disableCompression,omitempty"`
	DisableRedirects   bool              `json:"disableRedirects,omitempty"`
}

// MarshalJSON writes s with its durations as strings such as "1m0s".
func (s Spec) MarshalJSON() ([]byte, error) {
	j := specJSON{
		Kind: s.Kind, URL: s.URL, Method: s.Method, Rate: s.Rate, Concurrency: s.Concurrency,
		Requests: s.Requests, Headers: s.Headers, Body: s.Body, Host: s.Host,
		Insecure: s.Insecure, TLS: s.TLS, HTTP2: s.HTTP2,
		DisableKeepAlives: s.DisableKeepAlives, DisableCompression: s.DisableCompression, DisableRedirects: s.DisableRedirects,
	}
	if s.Duration != 0 {
		j.Duration = s.Duration.String()
	}
	if s.Timeout != 0 {
		j.Timeout = s.Timeout.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Spec) UnmarshalJSON(b []byte) error {
	var j specJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Spec{
		Kind: j.Kind, URL: j.URL, Method: j.Method, Rate: j.Rate, Concurrency: j.Concurrency,
		Requests: j.Requests, Headers: j.Headers, Body: j.Body, Host: j.Host,
		Insecure: j.Insecure, TLS: j.TLS, HTTP2: j.HTTP2,
		DisableKeepAlives: j.DisableKeepAlives, DisableCompression: j.DisableCompression, DisableRedirects: j.DisableRedirects,
	}
	var err error
	if j.Duration != "" {
		if out.Duration, err = time.ParseDuration(j.Duration); err != nil {
			return fmt.Errorf("duration: %w", err)
		}
	}
	if j.Timeout != "" {
		if out.Timeout, err = time.ParseDuration(j.Timeout); err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
	}
	*s = out
	return nil
}

// limits are the caps a tester puts on every load.
type limits struct {
	maxDuration    time.Duration
	maxConcurrency int
}

// normalize validates s and returns it with the defaults applied and its
// duration capped, so that two requests for the same load compare equal.
func (s Spec) normalize(lim limits) (Spec, error) {
	var errs []error
	if s.Kind == "" {
		s.Kind = HTTP
		if strings.HasPrefix(s.URL, "grpc://") {
			s.Kind = GRPC
		}
	}
	switch s.Kind {
	case HTTP:
		u, err := url.Parse(s.URL)
		switch {
		case s.URL == "":
			errs = append(errs, errors.New("url is empty"))
		case err != nil:
			errs = append(errs, fmt.Errorf("url %q: %w", s.URL, err))
		case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs = append(errs, fmt.Errorf("url %q is not an absolute http or https URL", s.URL))
		}
		if s.Method == "" {
			s.Method = "GET"
		}
		s.Method = strings.ToUpper(s.Method)
		if strings.ContainsAny(s.Method, " /\t") {
			errs = append(errs, fmt.Errorf("method %q is not an HTTP method", s.Method))
		}
		if s.TLS {
			errs = append(errs, errors.New("tls applies to grpc loads; an HTTP load uses TLS with an https url"))
		}
	case GRPC:
		s.URL = strings.TrimPrefix(s.URL, "grpc://")
		if s.URL == "" {
			errs = append(errs, errors.New("url (the server's host:port) is empty"))
		} else if strings.Contains(s.URL, "/") {
			errs = append(errs, fmt.Errorf("url %q is not host:port", s.URL))
		}
		m, err := normalizeGRPCMethod(s.Method)
		if err != nil {
			errs = append(errs, err)
		}
		s.Method = m
	default:
		errs = append(errs, fmt.Errorf("kind %q is neither http nor grpc", s.Kind))
	}
	if s.Rate < 0 || s.Rate != s.Rate {
		errs = append(errs, fmt.Errorf("rate %v is negative", s.Rate))
	}
	if s.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency %d is negative", s.Concurrency))
	}
	if s.Concurrency == 0 {
		s.Concurrency = DefaultConcurrency
	}
	if s.Concurrency > lim.maxConcurrency {
		errs = append(errs, fmt.Errorf("concurrency %d is above the maximum %d", s.Concurrency, lim.maxConcurrency))
	}
	if s.Requests < 0 {
		errs = append(errs, fmt.Errorf("requests %d is negative", s.Requests))
	}
	if s.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration %v is negative", s.Duration))
	}
	if s.Duration == 0 && s.Requests == 0 {
		s.Duration = DefaultDuration
	}
	if s.Duration > lim.maxDuration || s.Duration == 0 {
		s.Duration = lim.maxDuration
	}
	if s.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v is negative", s.Timeout))
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if len(s.Headers) == 0 {
		s.Headers = nil
	} else {
		s.Headers = maps.Clone(s.Headers)
	}
	if err := errors.Join(errs...); err != nil {
		return s, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return s, nil
}

// normalizeGRPCMethod writes a gRPC method as "package.Service/Method".
func normalizeGRPCMethod(m string) (string, error) {
	m = strings.TrimPrefix(strings.TrimSpace(m), "/")
	if m == "" {
		return "", errors.New("method (the gRPC method, package.Service/Method) is empty")
	}
	svc, meth, ok := strings.Cut(m, "/")
	if !ok {
		i := strings.LastIndexByte(m, '.')
		if i <= 0 || i == len(m)-1 {
			return m, fmt.Errorf("method %q is not package.Service/Method", m)
		}
		svc, meth = m[:i], m[i+1:]
	}
	if svc == "" || meth == "" || strings.ContainsAny(meth, "/.") {
		return m, fmt.Errorf("method %q is not package.Service/Method", m)
	}
	return svc + "/" + meth, nil
}

// equal reports whether two normalized specs describe the same load.
func (s Spec) equal(o Spec) bool {
	return s.Kind == o.Kind && s.URL == o.URL && s.Method == o.Method && s.Rate == o.Rate &&
		s.Concurrency == o.Concurrency && s.Duration == o.Duration && s.Requests == o.Requests &&
		s.Timeout == o.Timeout && maps.Equal(s.Headers, o.Headers) && s.Body == o.Body && s.Host == o.Host &&
		s.Insecure == o.Insecure && s.TLS == o.TLS && s.HTTP2 == o.HTTP2 &&
		s.DisableKeepAlives == o.DisableKeepAlives && s.DisableCompression == o.DisableCompression &&
		s.DisableRedirects == o.DisableRedirects
}
