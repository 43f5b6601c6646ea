// Package prometheus is the "prometheus" provider of MetricTemplates: it runs
// rendered PromQL queries on a Prometheus server (or any server of its HTTP
// API: Thanos, Mimir, VictoriaMetrics) through
// github.com/prometheus/client_golang/api.
//
// A query must return one value: a scalar, or an instant vector of one
// series. An empty vector or NaN (0/0, when nothing was served) is no data
// (template.ErrNoData); several series is an error that says how many and
// how to fix the query; a range (matrix) or string result is an error.
//
// Credentials come from the template's secretRef through a SecretReader:
// the key "token" for a bearer token, or "username" and "password" for
// basic authentication, as in Flagger; they are read for every request, so a
// rotated secret takes effect at the next query. The optional key "ca.crt"
// is a PEM bundle of the certificate authorities to trust, read when the
// provider is built.
package prometheus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/analysis/template"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// DefaultTimeout bounds one query when Config.Timeout is 0, as in Flagger.
const DefaultTimeout = 5 * time.Second

// Keys read from the secret of a template's secretRef.
const (
	// KeyToken is a bearer token.
	KeyToken = "token"
	// KeyUsername and KeyPassword are basic-authentication credentials.
	KeyUsername = "username"
	KeyPassword = "password"
	// KeyCA is a PEM bundle of certificate authorities to trust.
	KeyCA = "ca.crt"
)

// SecretReader reads one key of a Secret. Implementations return an error
// wrapping ErrNotFound when the secret or the key does not exist, so that
// the provider can tell an absent optional key from a failure.
type SecretReader interface {
	Get(namespace, name, key string) (string, error)
}

// ErrNotFound is wrapped by a SecretReader's error when the secret or key
// does not exist.
var ErrNotFound = errors.New("not found")

// Secrets is a SecretReader over a fixed map: namespace/name → key → value.
type Secrets map[string]map[string]string

// Get returns the value of key in secret namespace/name.
func (s Secrets) Get(namespace, name, key string) (string, error) {
	sec, ok := s[namespace+"/"+name]
	if !ok {
		return "", fmt.Errorf("secret %s/%s: %w", namespace, name, ErrNotFound)
	}
	v, ok := sec[key]
	if !ok {
		return "", fmt.Errorf("secret %s/%s has no key %q: %w", namespace, name, key, ErrNotFound)
	}
	return v, nil
}

// Config describes one Prometheus server and how to talk to it.
type Config struct {
	// Address is the server's base URL, such as http://prometheus:9090.
	// Required.
	Address string
	// Headers are added to every request.
	Headers http.Header
	// SecretNamespace and SecretName name the Secret with the credentials;
	// SecretName "" means none. Secrets reads it; required with SecretName.
	SecretNamespace, SecretName string
	Secrets                     SecretReader
	// InsecureSkipVerify skips verification of the server's certificate.
	InsecureSkipVerify bool
	// CAFile is a PEM file of certificate authorities to trust, besides the
	// system's and the secret's "ca.crt".
	CAFile string
	// Timeout bounds one query (and Check); 0 means DefaultTimeout.
	Timeout time.Duration
}

// Provider runs queries on one Prometheus server. Create it with New; its
// methods are safe for concurrent use.
type Provider struct {
	address   string
	timeout   time.Duration
	api       v1.API
	transport *http.Transport
}

var (
	_ template.Querier        = (*Provider)(nil)
	_ template.Checker        = (*Provider)(nil)
	_ template.QueryValidator = (*Provider)(nil)
)

// New returns a Provider for cfg. It reads the secret's CA (when there is
// one) but does not contact the server: call Check for that.
func New(cfg Config) (*Provider, error) {
	if cfg.Address == "" {
		return nil, errors.New("prometheus address is empty")
	}
	u, err := url.Parse(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("prometheus address %q: %w", cfg.Address, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus address %q is not an absolute http or https URL", cfg.Address)
	}
	if cfg.SecretName != "" && cfg.Secrets == nil {
		return nil, fmt.Errorf("secret %s/%s is set but there is no secret reader", cfg.SecretNamespace, cfg.SecretName)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	tlsConfig := &tls.Config{InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // the user asked for it
	var pems [][]byte
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pems = append(pems, b)
	}
	if cfg.SecretName != "" {
		ca, err := cfg.Secrets.Get(cfg.SecretNamespace, cfg.SecretName, KeyCA)
		switch {
		case err == nil:
			pems = append(pems, []byte(ca))
		case !errors.Is(err, ErrNotFound):
			return nil, fmt.Errorf("reading %q of secret %s/%s: %w", KeyCA, cfg.SecretNamespace, cfg.SecretName, err)
		}
	}
	if len(pems) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for i, pem := range pems {
			if !pool.AppendCertsFromPEM(pem) {
				what := "CA file " + cfg.CAFile
				if i > 0 || cfg.CAFile == "" {
					what = fmt.Sprintf("%q of secret %s/%s", KeyCA, cfg.SecretNamespace, cfg.SecretName)
				}
				return nil, fmt.Errorf("%s holds no PEM certificate", what)
			}
		}
		tlsConfig.RootCAs = pool
	}

	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: timeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	rt := &authTransport{
		next:    transport,
		headers: cfg.Headers.Clone(),
		ns:      cfg.SecretNamespace,
		secret:  cfg.SecretName,
		secrets: cfg.Secrets,
	}
	client, err := api.NewClient(api.Config{Address: strings.TrimRight(cfg.Address, "/"), RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", cfg.Address, err)
	}
	return &Provider{address: cfg.Address, timeout: timeout, api: v1.NewAPI(client), transport: transport}, nil
}

// Options are the defaults of providers built by Factory.
type Options struct {
	// DefaultAddress is used by templates without an address (the
	// controller's -metrics-server).
	DefaultAddress string
	// Timeout bounds each query; 0 means DefaultTimeout.
	Timeout time.Duration
	// CAFile is trusted by every provider besides the system's CAs.
	CAFile string
}

// Factory returns the template.Factory of the "prometheus" provider type:
// a Provider from a template's provider spec (address, headers, secretRef,
// insecureSkipVerify), reading secrets in the template's namespace.
func Factory(secrets SecretReader, opts Options) template.Factory {
	return func(_ context.Context, namespace string, spec v1beta1.MetricTemplateProvider) (template.Querier, error) {
		return New(ConfigFromSpec(namespace, spec, secrets, opts))
	}
}

// ConfigFromSpec is the Config of a MetricTemplate's provider spec in
// namespace, with opts' defaults.
func ConfigFromSpec(namespace string, spec v1beta1.MetricTemplateProvider, secrets SecretReader, opts Options) Config {
	cfg := Config{
		Address:            spec.Address,
		Headers:            http.Header(spec.Headers),
		Secrets:            secrets,
		InsecureSkipVerify: spec.InsecureSkipVerify,
		CAFile:             opts.CAFile,
		Timeout:            opts.Timeout,
	}
	if cfg.Address == "" {
		cfg.Address = opts.DefaultAddress
	}
	if spec.SecretRef != nil {
		cfg.SecretNamespace, cfg.SecretName = namespace, spec.SecretRef.Name
	}
	return cfg
}

// String names the provider in messages: "prometheus at <address>".
func (p *Provider) String() string { return "prometheus at " + p.address }

// Address returns the server's address.
func (p *Provider) Address() string { return p.address }

// Close closes the provider's idle connections.
func (p *Provider) Close() error {
	p.transport.CloseIdleConnections()
	return nil
}

// Check runs the query vector(1), which any PromQL server answers, to tell
// whether the server is reachable and accepts the credentials:
// "prometheus at http://127.0.0.1:9090 is unreachable: ...".
func (p *Provider) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, _, _, err := p.api.Query(ctx, "vector(1)", time.Time{}, v1.WithTimeout(p.timeout))
	if err != nil {
		var apiErr *v1.Error
		if errors.As(err, &apiErr) {
			return fmt.Errorf("%s answered with an error: %s", p, describeAPIError(apiErr))
		}
		return fmt.Errorf("%s is unreachable: %w", p, err)
	}
	if _, err := single(v); err != nil {
		return fmt.Errorf("%s answered vector(1) oddly: %w", p, err)
	}
	return nil
}

// ValidateQuery refuses a query that is empty once rendered; PromQL's syntax
// is the server's to judge.
func (p *Provider) ValidateQuery(query string) error {
	if strings.TrimSpace(query) == "" {
		return errors.New("query renders to nothing")
	}
	return nil
}

// Query runs query at the current time; it implements template.Querier and
// ignores vars.
func (p *Provider) Query(ctx context.Context, query string, _ template.Vars) (float64, error) {
	return p.Value(ctx, query)
}

// Value runs query at the current time and returns its single value. The
// error wraps template.ErrNoData when there is none, and otherwise names the
// server and the query.
func (p *Provider) Value(ctx context.Context, query string) (float64, error) {
	if strings.TrimSpace(query) == "" {
		return 0, fmt.Errorf("%s: query is empty", p)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, _, _, err := p.api.Query(ctx, query, time.Time{}, v1.WithTimeout(p.timeout))
	if err != nil {
		var apiErr *v1.Error
		if errors.As(err, &apiErr) {
			return 0, fmt.Errorf("%s: query failed: %s; query: %s", p, describeAPIError(apiErr), oneLine(query))
		}
		return 0, fmt.Errorf("%s: query failed: %w; query: %s", p, err, oneLine(query))
	}
	f, err := single(v)
	if errors.Is(err, template.ErrNoData) {
		return 0, err
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w; query: %s", p, err, oneLine(query))
	}
	return f, nil
}

// single returns the one value of v, or the reason there is not one.
func single(v model.Value) (float64, error) {
	switch r := v.(type) {
	case *model.Scalar:
		if math.IsNaN(float64(r.Value)) {
			return 0, template.NoData("the query returned NaN")
		}
		return float64(r.Value), nil
	case model.Vector:
		switch len(r) {
		case 0:
			return 0, template.NoData("the query returned an empty vector")
		case 1:
			if r[0].Histogram != nil {
				return 0, errors.New("query returned a native histogram, want a number: apply histogram_quantile() or histogram_count()")
			}
			if math.IsNaN(float64(r[0].Value)) {
				return 0, template.NoData("the query returned NaN")
			}
			return float64(r[0].Value), nil
		default:
			return 0, fmt.Errorf("query returned %d series, want 1: add sum() or by() to aggregate them (first: %s)", len(r), r[0].Metric)
		}
	case model.Matrix:
		return 0, fmt.Errorf("query returned a range vector (%d series), want one value: it must not end in a [range] selector", len(r))
	case *model.String:
		return 0, fmt.Errorf("query returned a string (%q), want a number", r.Value)
	case nil:
		return 0, template.NoData("the query returned nothing")
	default:
		return 0, fmt.Errorf("query returned a %s, want a number", v.Type())
	}
}

// describeAPIError writes an API error with its response body, which is
// where a proxy in front of the server says what it refused.
func describeAPIError(e *v1.Error) string {
	s := e.Error()
	if d := strings.TrimSpace(e.Detail); d != "" {
		if len(d) > 200 {
			d = d[:200] + "…"
		}
		s += " (" + oneLine(d) + ")"
	}
	return s
}

// oneLine collapses the whitespace of s, as Flagger does to queries.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// authTransport adds the configured headers and the secret's credentials to
// every request.
type authTransport struct {
	next    http.RoundTripper
	headers http.Header
	ns      string
	secret  string
	secrets SecretReader
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for k, vs := range t.headers {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if t.secret != "" {
		if err := t.authorize(req); err != nil {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			return nil, err
		}
	}
	return t.next.RoundTrip(req)
}

// authorize sets the bearer token or basic credentials of the secret.
func (t *authTransport) authorize(req *http.Request) error {
	get := func(key string) (string, bool, error) {
		v, err := t.secrets.Get(t.ns, t.secret, key)
		switch {
		case err == nil:
			return v, true, nil
		case errors.Is(err, ErrNotFound):
			return "", false, nil
		default:
			return "", false, fmt.Errorf("reading %q of secret %s/%s: %w", key, t.ns, t.secret, err)
		}
	}
	token, ok, err := get(KeyToken)
	if err != nil {
		return err
	}
	if ok {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
		return nil
	}
	user, okUser, err := get(KeyUsername)
	if err != nil {
		return err
	}
	pass, okPass, err := get(KeyPassword)
	if err != nil {
		return err
	}
	if !okUser || !okPass {
		return fmt.Errorf("secret %s/%s has neither %q nor %q and %q", t.ns, t.secret, KeyToken, KeyUsername, KeyPassword)
	}
	req.SetBasicAuth(user, pass)
	return nil
}
