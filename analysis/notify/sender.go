package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// DefaultTimeout bounds one post to a provider, as in Flagger.
const DefaultTimeout = 5 * time.Second

// Options configure a Sender.
type Options struct {
	// HTTPClient makes the requests; a client of its own when nil. Its
	// transport is cloned for providers that set a proxy.
	HTTPClient *http.Client
	// Secrets reads the Secrets that providers' secretRefs name; a provider
	// with a secretRef fails to send when nil.
	Secrets SecretReader
	// Timeout bounds one post (DefaultTimeout when 0).
	Timeout time.Duration
	// Cluster names the cluster in events that do not name one.
	Cluster string
	// Template is the message template of targets that have none; empty
	// for the event's own text.
	Template string
	// Logger reports template errors; slog.Default() when nil.
	Logger *slog.Logger
}

// Sender posts events to providers. It is safe for concurrent use.
type Sender struct {
	opts Options
	base *http.Client

	mu        sync.Mutex
	proxied   map[string]*http.Client   // by proxy URL
	templates map[string]parsedTemplate // by template text

	templateErrors atomic.Int64
}

type parsedTemplate struct {
	t   *template.Template
	err error
}

// NewSender returns a Sender.
func NewSender(opts Options) *Sender {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	base := opts.HTTPClient
	if base == nil {
		base = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return &Sender{opts: opts, base: base, proxied: map[string]*http.Client{}, templates: map[string]parsedTemplate{}}
}

// TemplateErrors returns how many messages were sent with the default text
// because their template failed.
func (s *Sender) TemplateErrors() int64 { return s.templateErrors.Load() }

// CloseIdleConnections closes the idle connections of the Sender's clients.
func (s *Sender) CloseIdleConnections() {
	s.base.CloseIdleConnections()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.proxied {
		c.CloseIdleConnections()
	}
}

// Send posts ev to the target's provider, waiting at most the Sender's
// timeout. It sends nothing and returns nil when the target does not want
// the event (Target.Wants). A message template that fails is logged and
// counted, and the event's default text is sent instead. The error names
// the provider and what went wrong: no address, an unknown type, a refused
// connection, a non-2xx answer with its body.
func (s *Sender) Send(ctx context.Context, t Target, ev Event) error {
	if !t.Wants(ev) {
		return nil
	}
	if ev.Cluster == "" {
		ev.Cluster = s.opts.Cluster
	}
	if ev.Severity == "" {
		ev.Severity = SeverityInfo
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	switch t.Spec.Type {
	case v1beta1.AlertProviderSlack, v1beta1.AlertProviderDiscord, v1beta1.AlertProviderRocket,
		v1beta1.AlertProviderMSTeams, v1beta1.AlertProviderGChat, Generic:
	default:
		return fmt.Errorf("alert provider %s: unknown type %q (want slack, msteams, discord, rocket, gchat or generic)", t, t.Spec.Type)
	}
	address, token, err := s.resolve(t)
	if err != nil {
		return fmt.Errorf("alert provider %s: %w", t, err)
	}
	if t.Spec.Type == v1beta1.AlertProviderDiscord {
		if address, err = discordSlackURL(address); err != nil {
			return fmt.Errorf("alert provider %s: %w", t, err)
		}
	}
	client, err := s.client(t.Spec.Proxy)
	if err != nil {
		return fmt.Errorf("alert provider %s: %w", t, err)
	}
	doc, err := json.Marshal(body(t.Spec, ev, s.render(t, ev)))
	if err != nil {
		return fmt.Errorf("alert provider %s: encoding message: %w", t, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	if err := post(ctx, client, address, token, doc, t.Spec.Type == v1beta1.AlertProviderSlack && token != ""); err != nil {
		return fmt.Errorf("alert provider %s: %w", t, err)
	}
	return nil
}

// Render returns the message Send would post for ev to t: the target's
// template (or the Sender's) applied to ev, or ev.Text() when there is no
// template or it fails.
func (s *Sender) Render(t Target, ev Event) (string, error) {
	text := t.Template
	if text == "" {
		text = s.opts.Template
	}
	if text == "" {
		return ev.Text(), nil
	}
	tmpl, err := s.parse(text)
	if err != nil {
		return ev.Text(), err
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, ev); err != nil {
		return ev.Text(), fmt.Errorf("message template: %w", err)
	}
	return b.String(), nil
}

func (s *Sender) render(t Target, ev Event) string {
	msg, err := s.Render(t, ev)
	if err != nil {
		s.templateErrors.Add(1)
		s.opts.Logger.Warn("alert message template failed; sending the default text",
			"provider", t.String(), "canary", ev.Namespace+"/"+ev.Canary, "error", err)
	}
	return msg
}

func (s *Sender) parse(text string) (*template.Template, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.templates[text]; ok {
		return p.t, p.err
	}
	t, err := template.New("message").Option("missingkey=error").Parse(text)
	if err != nil {
		err = fmt.Errorf("message template: %w", err)
	}
	if len(s.templates) > 256 { // templates come from specs; keep the cache bounded
		clear(s.templates)
	}
	s.templates[text] = parsedTemplate{t, err}
	return t, err
}

// CheckTemplate parses a message template and runs it on a sample Event, so
// that a controller can report a bad template (a syntax error, an unknown
// field) on the AlertProvider or Canary before any alert is sent.
func CheckTemplate(text string) error {
	t, err := template.New("message").Option("missingkey=error").Parse(text)
	if err != nil {
		return fmt.Errorf("message template: %w", err)
	}
	sample := Event{Kind: KindRolledBack, Canary: "podinfo", Namespace: "test", Phase: v1beta1.PhaseFailed,
		Revision: "abc", Weight: 10, FailingCheck: "request-success-rate 91% < min 99%", Message: "m",
		Severity: SeverityError, Cluster: "c", Time: time.Unix(0, 0), Fields: []Field{{"Target", "Deployment/podinfo.test"}}}
	if err := t.Execute(io.Discard, sample); err != nil {
		return fmt.Errorf("message template: %w", err)
	}
	return nil
}

// resolve returns the address and token of the target's provider: the
// Secret's "address" overrides spec.address; its "token" is optional.
func (s *Sender) resolve(t Target) (address, token string, err error) {
	address = t.Spec.Address
	if ref := t.Spec.SecretRef; ref != nil {
		if s.opts.Secrets == nil {
			return "", "", fmt.Errorf("secretRef %q cannot be read: no secret reader configured", ref.Name)
		}
		a, err := s.opts.Secrets.Get(t.Namespace, ref.Name, "address")
		switch {
		case err == nil:
			address = strings.TrimSpace(a)
		case !errors.Is(err, ErrSecretNotFound):
			return "", "", fmt.Errorf("reading address: %w", err)
		}
		tok, err := s.opts.Secrets.Get(t.Namespace, ref.Name, "token")
		switch {
		case err == nil:
			token = strings.TrimSpace(tok)
		case !errors.Is(err, ErrSecretNotFound):
			return "", "", fmt.Errorf("reading token: %w", err)
		}
	}
	if address == "" && token != "" && t.Spec.Type == v1beta1.AlertProviderSlack {
		address = SlackAPIURL
	}
	if address == "" {
		if t.Spec.SecretRef != nil {
			return "", "", fmt.Errorf("no address: spec.address is empty and secret %q has no \"address\" key", t.Spec.SecretRef.Name)
		}
		return "", "", errors.New("no address: spec.address is empty and there is no secretRef")
	}
	if err := checkHTTPURL(address); err != nil {
		return "", "", fmt.Errorf("address: %w", err)
	}
	return address, token, nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL") // url's error would repeat it, and webhook URLs hold credentials
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("not an absolute http(s) URL (scheme %q, host %q)", u.Scheme, u.Host)
	}
	return nil
}

// discordSlackURL appends /slack to a Discord webhook URL: Discord's
// Slack-compatible endpoint.
func discordSlackURL(address string) (string, error) {
	u, err := url.Parse(address)
	if err != nil {
		return "", errors.New("address: not a valid URL")
	}
	if !strings.HasSuffix(u.Path, "/slack") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/slack"
		u.RawPath = ""
	}
	return u.String(), nil
}

// client returns the HTTP client for a provider's proxy ("" for none).
func (s *Sender) client(proxy string) (*http.Client, error) {
	if proxy == "" {
		return s.base, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.proxied[proxy]; ok {
		return c, nil
	}
	if err := checkHTTPURL(proxy); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	pu, _ := url.Parse(proxy)
	var tr *http.Transport
	if t, ok := s.base.Transport.(*http.Transport); ok {
		tr = t.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	tr.Proxy = http.ProxyURL(pu)
	c := *s.base
	c.Transport = tr
	s.proxied[proxy] = &c
	return &c, nil
}

// post sends doc and checks the answer: a 2xx, and for Slack's Web API
// (slackAPI) a JSON answer without "ok": false. Errors do not repeat the
// address, which often embeds a credential.
func post(ctx context.Context, client *http.Client, address, token string, doc []byte, slackAPI bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, address, bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sluice-notify")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	host := req.URL.Host
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the address
		}
		return fmt.Errorf("posting to %s: %w", host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("posting to %s: answered %s: %s", host, resp.Status, strings.TrimSpace(string(b)))
	}
	if slackAPI {
		var ans struct {
			OK    *bool  `json:"ok"`
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &ans) == nil && ans.OK != nil && !*ans.OK {
			return fmt.Errorf("posting to %s: Slack refused the message: %s", host, ans.Error)
		}
	}
	return nil
}
