// Package webhook calls a Canary's webhooks: the gates, checks, load tests
// and event sinks listed in analysis.webhooks.
//
// A call is Flagger's: an HTTP POST of a JSON Payload
// {name, namespace, phase, checksum, metadata} with Content-Type
// application/json. Each attempt is bounded by the webhook's timeout (10s
// unless the webhook says otherwise); a call that fails with a transport
// error, a timeout, 429 or a 5xx other than 501 is retried up to the
// webhook's retries, with exponential backoff between attempts.
//
// Success is any 2xx status. Flagger treats only 200 to 202 as success (a
// 204 fails there); Sluice does not keep that quirk.
//
// What a success means depends on the hook type (v1beta1.HookType): a gate
// (confirm-rollout, confirm-traffic-increase, confirm-promotion) opens, a
// check (pre-rollout, rollout) passes, a rollback hook requests a rollback;
// post-rollout and event answers are only recorded. The caller — the canary
// engine — decides what to do; this package makes the call and describes
// the outcome in a sentence fit for an event or the Canary's status.
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Defaults of a Caller.
const (
	// DefaultBackoff is the wait before the first retry; it doubles with
	// each further retry.
	DefaultBackoff = time.Second
	// DefaultMaxBackoff caps the wait between two attempts.
	DefaultMaxBackoff = 30 * time.Second
	// maxBody is how much of a response body is read.
	maxBody = 64 << 10
	// maxBodyInMessage is how much of a response body an Outcome keeps.
	maxBodyInMessage = 256
)

// Payload is the JSON document POSTed to a webhook, Flagger's
// CanaryWebhookPayload.
type Payload struct {
	// Name of the Canary.
	Name string `json:"name"`
	// Namespace of the Canary.
	Namespace string `json:"namespace"`
	// Phase of the Canary when the hook is called.
	Phase v1beta1.CanaryPhase `json:"phase"`
	// Checksum identifies the canary's revision (Flagger: a hash of the pod
	// template and the tracked configs).
	Checksum string `json:"checksum"`
	// Metadata is the webhook's metadata; for event hooks it also holds
	// eventMessage, eventType and timestamp.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// NewPayload returns the payload for a call about c in the given phase. The
// checksum is the canary's observed revision (its last applied spec while no
// revision has been observed yet).
func NewPayload(c *v1beta1.Canary, phase v1beta1.CanaryPhase) Payload {
	sum := c.Status.ObservedRevision
	if sum == "" {
		sum = c.Status.LastAppliedSpec
	}
	return Payload{Name: c.Name, Namespace: c.Namespace, Phase: phase, Checksum: sum}
}

// Event types of an event hook's payload, as Kubernetes names them.
const (
	// EventNormal is an informational event.
	EventNormal = "Normal"
	// EventWarning is a warning or an error.
	EventWarning = "Warning"
)

// EventPayload returns the payload for an event hook: NewPayload plus the
// metadata keys eventMessage, eventType (EventNormal or EventWarning) and
// timestamp (Unix milliseconds), as Flagger sends them. The webhook's own
// metadata is merged in by Call without overriding these keys.
func EventPayload(c *v1beta1.Canary, phase v1beta1.CanaryPhase, message, eventType string, at time.Time) Payload {
	p := NewPayload(c, phase)
	p.Metadata = map[string]string{
		"eventMessage": message,
		"eventType":    eventType,
		"timestamp":    strconv.FormatInt(at.UnixMilli(), 10),
	}
	return p
}

// Hooks returns c's webhooks of type t, in spec order. An empty type in the
// spec, or an empty t, means rollout.
func Hooks(c *v1beta1.Canary, t v1beta1.HookType) []v1beta1.CanaryWebhook {
	if c == nil || c.Spec.Analysis == nil {
		return nil
	}
	if t == "" {
		t = v1beta1.RolloutHook
	}
	var out []v1beta1.CanaryWebhook
	for _, h := range c.Spec.Analysis.Webhooks {
		if h.GetType() == t {
			out = append(out, h)
		}
	}
	return out
}

// Outcome is the result of one webhook call, with all its attempts.
type Outcome struct {
	// Hook is the webhook's name.
	Hook string
	// Type is the webhook's type (rollout when the spec left it empty).
	Type v1beta1.HookType
	// OK is true when the last attempt answered 2xx.
	OK bool
	// Status is the HTTP status of the last attempt; 0 when none answered.
	Status int
	// Attempts is how many requests were made.
	Attempts int
	// Duration is the time from the first request to the last answer,
	// backoff included.
	Duration time.Duration
	// Body is the start of the last response body, on one line.
	Body string
	// Err is nil when OK, else what went wrong, naming the hook and its URL.
	Err error
	// Message describes the call for the Canary's events and status, e.g.
	// "pre-rollout hook acceptance-test: 200 OK in 35ms".
	Message string
}

// Verdict maps the outcome onto a check verdict for the Canary's status: a
// 2xx passes, another status fails, no answer is an error.
func (o Outcome) Verdict() v1beta1.CheckVerdict {
	switch {
	case o.OK:
		return v1beta1.VerdictPass
	case o.Status != 0:
		return v1beta1.VerdictFail
	default:
		return v1beta1.VerdictError
	}
}

// AllOK reports whether every outcome is OK: the gates are open, the checks
// passed. It is true for no outcomes (no hooks means nothing to wait for).
func AllOK(outs []Outcome) bool {
	for _, o := range outs {
		if !o.OK {
			return false
		}
	}
	return true
}

// AnyOK reports whether some outcome is OK: for rollback hooks, whether a
// rollback was requested.
func AnyOK(outs []Outcome) bool {
	for _, o := range outs {
		if o.OK {
			return true
		}
	}
	return false
}

// Caller calls webhooks. The zero value is usable; a Caller is safe for
// concurrent use and must not be copied after first use.
type Caller struct {
	// HTTPClient makes the requests; http.DefaultClient when nil. Its own
	// Timeout, if any, also applies; the per-attempt timeout is the hook's.
	HTTPClient *http.Client
	// Backoff is the wait before the first retry (DefaultBackoff when 0);
	// each further retry waits twice as long, up to MaxBackoff.
	Backoff time.Duration
	// MaxBackoff caps the wait between attempts (DefaultMaxBackoff when 0).
	MaxBackoff time.Duration
	// Now returns the current time, to measure durations; time.Now when
	// nil. Tests set a fake clock.
	Now func() time.Time

	mu       sync.Mutex
	insecure *http.Client // HTTPClient without certificate checks, for disableTLS
}

// CallInOrder calls hooks one after another, in order, and returns the
// outcomes of the calls made. It stops as soon as the answer is decided by
// the hooks' type: after the first failure of a gate or a check, after the
// first success of a rollback hook. Post-rollout and event hooks are all
// called. Use AllOK or AnyOK on the result.
func (c *Caller) CallInOrder(ctx context.Context, hooks []v1beta1.CanaryWebhook, payload Payload) []Outcome {
	outs := make([]Outcome, 0, len(hooks))
	for _, h := range hooks {
		o := c.Call(ctx, h, payload)
		outs = append(outs, o)
		switch h.GetType() {
		case v1beta1.RollbackHook:
			if o.OK {
				return outs
			}
		case v1beta1.PostRolloutHook, v1beta1.EventHook:
		default:
			if !o.OK {
				return outs
			}
		}
	}
	return outs
}

// Call POSTs payload, with the hook's metadata merged into its metadata
// (keys already in payload.Metadata win), to the hook's URL, retrying as
// the hook says. It never panics on a bad hook; the Outcome says what was
// wrong.
func (c *Caller) Call(ctx context.Context, hook v1beta1.CanaryWebhook, payload Payload) Outcome {
	out := Outcome{Hook: hook.Name, Type: hook.GetType()}
	payload.Metadata = mergeMetadata(payload.Metadata, hook.Metadata)
	body, err := json.Marshal(payload)
	if err != nil { // cannot happen with string maps; kept for safety
		return c.finish(out, hook, fmt.Errorf("%s hook %s: encoding payload: %w", out.Type, hook.Name, err), "encoding payload: "+err.Error())
	}
	if u, err := url.Parse(hook.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c.finish(out, hook, fmt.Errorf("%s hook %s: url %q is not an http(s) URL", out.Type, hook.Name, hook.URL),
			fmt.Sprintf("url %q is not an http(s) URL", hook.URL))
	}
	client := c.client(hook.DisableTLS)
	timeout := hook.GetTimeout()
	retries := max(hook.Retries, 0)

	start := c.now()
	var lastDesc string
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, c.backoff(attempt)); err != nil {
				break // keep the last attempt's result
			}
		}
		out.Attempts++
		status, respBody, desc, err := c.attempt(ctx, client, hook.URL, body, timeout)
		out.Status, out.Body, lastDesc, out.Err = status, respBody, desc, err
		if err == nil && status >= 200 && status <= 299 {
			out.OK = true
			break
		}
		if attempt >= retries || !retryable(ctx, status) {
			break
		}
	}
	out.Duration = c.now().Sub(start)
	if !out.OK && out.Err == nil {
		out.Err = fmt.Errorf("%s hook %s: POST %s answered %s", out.Type, hook.Name, hook.URL, statusText(out.Status, out.Body))
	} else if out.Err != nil {
		out.Err = fmt.Errorf("%s hook %s: %w", out.Type, hook.Name, out.Err)
	}
	out.Message = message(out, lastDesc)
	return out
}

// finish fills an outcome for a call that could not be made at all.
func (c *Caller) finish(out Outcome, hook v1beta1.CanaryWebhook, err error, desc string) Outcome {
	out.Err = err
	out.Message = fmt.Sprintf("%s hook %s: %s", out.Type, hook.Name, desc)
	if isGate(out.Type) {
		out.Message += ", will ask again next interval"
	}
	return out
}

// attempt makes one request. It returns the status and the start of the
// body, or a transport error with a description for the message.
func (c *Caller) attempt(ctx context.Context, client *http.Client, u string, body []byte, timeout time.Duration) (int, string, string, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, "", fmt.Sprintf("POST %s: %v", u, err), fmt.Errorf("building request for %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sluice-webhook")
	resp, err := client.Do(req)
	if err != nil {
		cause := err
		var ue *url.Error
		if errors.As(err, &ue) {
			cause = ue.Err
		}
		desc := cause.Error()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			desc = "no answer within " + timeout.String()
		}
		return 0, "", fmt.Sprintf("POST %s: %s", u, desc), fmt.Errorf("POST %s: %s", u, desc)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody)) // let the connection be reused
	return resp.StatusCode, oneLine(b), "", nil
}

// retryable reports whether a failed attempt is worth repeating: no answer
// (unless the caller gave up), 429, or a 5xx other than 501.
func retryable(ctx context.Context, status int) bool {
	if ctx.Err() != nil {
		return false
	}
	switch {
	case status == 0:
		return true
	case status == http.StatusTooManyRequests:
		return true
	case status >= 500 && status != http.StatusNotImplemented:
		return true
	}
	return false
}

// backoff is the wait before the given retry (1 for the first).
func (c *Caller) backoff(retry int) time.Duration {
	base, limit := c.Backoff, c.MaxBackoff
	if base <= 0 {
		base = DefaultBackoff
	}
	if limit <= 0 {
		limit = DefaultMaxBackoff
	}
	d := base
	for i := 1; i < retry && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Caller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// client returns the HTTP client, without certificate verification when
// insecure.
func (c *Caller) client(insecure bool) *http.Client {
	base := c.HTTPClient
	if base == nil {
		base = http.DefaultClient
	}
	if !insecure {
		return base
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.insecure != nil {
		return c.insecure
	}
	var tr *http.Transport
	if t, ok := base.Transport.(*http.Transport); ok {
		tr = t.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	tr.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // the webhook's disableTLS asks for it
	cl := *base
	cl.Transport = tr
	c.insecure = &cl
	return c.insecure
}

func mergeMetadata(payload, hook map[string]string) map[string]string {
	if len(hook) == 0 {
		return payload
	}
	out := make(map[string]string, len(payload)+len(hook))
	for k, v := range hook {
		out[k] = v
	}
	for k, v := range payload {
		out[k] = v
	}
	return out
}

// isGate reports whether hooks of type t hold a run until they answer 2xx.
func isGate(t v1beta1.HookType) bool {
	switch t {
	case v1beta1.ConfirmRolloutHook, v1beta1.ConfirmTrafficIncreaseHook, v1beta1.ConfirmPromotionHook:
		return true
	}
	return false
}

// message describes an outcome in one sentence, e.g.
// "pre-rollout hook acceptance-test: 200 OK in 35ms".
func message(o Outcome, transport string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s hook %s: ", o.Type, o.Hook)
	attempts := ""
	if o.Attempts > 1 {
		attempts = fmt.Sprintf(" after %d attempts", o.Attempts)
	}
	switch {
	case o.OK:
		fmt.Fprintf(&b, "%s in %s%s", statusText(o.Status, ""), formatDuration(o.Duration), attempts)
		if o.Type == v1beta1.RollbackHook {
			b.WriteString(", rollback requested")
		}
		return b.String()
	case o.Status != 0:
		switch {
		case isGate(o.Type) && o.Status == http.StatusForbidden:
			fmt.Fprintf(&b, "%d (gate closed)%s", o.Status, attempts)
		case isGate(o.Type):
			fmt.Fprintf(&b, "%s (gate treated as closed)%s", statusText(o.Status, ""), attempts)
		case o.Type == v1beta1.RollbackHook:
			fmt.Fprintf(&b, "%d (no rollback requested)%s", o.Status, attempts)
		default:
			fmt.Fprintf(&b, "%s%s", statusText(o.Status, o.Body), attempts)
		}
	default:
		b.WriteString(transport)
		b.WriteString(attempts)
	}
	if isGate(o.Type) {
		b.WriteString(", will ask again next interval")
	}
	return b.String()
}

// statusText is "200 OK", or "500 Internal Server Error: <body>".
func statusText(code int, body string) string {
	s := strconv.Itoa(code)
	if t := http.StatusText(code); t != "" {
		s += " " + t
	}
	if body != "" {
		s += ": " + body
	}
	return s
}

// formatDuration rounds d for a message: 35ms, 1.2s, 850µs.
func formatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// oneLine returns the start of a body on one line, for a message.
func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) <= maxBodyInMessage {
		return s
	}
	s = s[:maxBodyInMessage]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
