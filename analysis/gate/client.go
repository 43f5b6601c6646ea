package gate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client sets and reads gates on a Server, for `sluice gate open|close`.
type Client struct {
	// BaseURL is where the Server is mounted, e.g. "http://127.0.0.1:8086".
	BaseURL string
	// HTTPClient makes the requests; http.DefaultClient when nil.
	HTTPClient *http.Client
	// By is recorded as who set a switch; the client's address when empty.
	By string
}

// OpenGate opens the canary's gate: gated steps may proceed.
func (c *Client) OpenGate(ctx context.Context, namespace, name string) (State, error) {
	return c.post(ctx, "/gate/open", namespace, name)
}

// CloseGate closes the canary's gate: gated steps wait.
func (c *Client) CloseGate(ctx context.Context, namespace, name string) (State, error) {
	return c.post(ctx, "/gate/close", namespace, name)
}

// OpenRollback asks for the canary's run to be rolled back (through its
// rollback webhook pointed at /rollback/check).
func (c *Client) OpenRollback(ctx context.Context, namespace, name string) (State, error) {
	return c.post(ctx, "/rollback/open", namespace, name)
}

// CloseRollback withdraws a rollback request.
func (c *Client) CloseRollback(ctx context.Context, namespace, name string) (State, error) {
	return c.post(ctx, "/rollback/close", namespace, name)
}

// Status returns the canary's gates.
func (c *Client) Status(ctx context.Context, namespace, name string) (State, error) {
	q := url.Values{"namespace": {namespace}, "name": {name}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/gate/status")+"?"+q.Encode(), nil)
	if err != nil {
		return State{}, fmt.Errorf("gate status of %s/%s: %w", namespace, name, err)
	}
	return c.do(req, "gate status of "+namespace+"/"+name)
}

func (c *Client) post(ctx context.Context, path, namespace, name string) (State, error) {
	what := strings.TrimPrefix(path, "/") + " " + namespace + "/" + name
	body, err := json.Marshal(Request{Namespace: namespace, Name: name, By: c.By})
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", what, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(path), bytes.NewReader(body))
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", what, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, what)
}

func (c *Client) do(req *http.Request, what string) (State, error) {
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return State{}, fmt.Errorf("%s: reading answer: %w", what, err)
	}
	if resp.StatusCode/100 != 2 {
		return State{}, fmt.Errorf("%s: %s answered %d: %s", what, req.URL.Redacted(), resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("%s: answer is not a gate status: %w", what, err)
	}
	return st.State.Normalize(), nil
}

func (c *Client) url(path string) string {
	return strings.TrimSuffix(c.BaseURL, "/") + path
}

// Open opens the gate of namespace/name on the Server at baseURL.
func Open(ctx context.Context, baseURL, namespace, name string) error {
	_, err := (&Client{BaseURL: baseURL}).OpenGate(ctx, namespace, name)
	return err
}

// Close closes the gate of namespace/name on the Server at baseURL.
func Close(ctx context.Context, baseURL, namespace, name string) error {
	_, err := (&Client{BaseURL: baseURL}).CloseGate(ctx, namespace, name)
	return err
}

// RequestRollback asks the Server at baseURL to roll namespace/name back.
func RequestRollback(ctx context.Context, baseURL, namespace, name string) error {
	_, err := (&Client{BaseURL: baseURL}).OpenRollback(ctx, namespace, name)
	return err
}

// CancelRollback withdraws a rollback request for namespace/name.
func CancelRollback(ctx context.Context, baseURL, namespace, name string) error {
	_, err := (&Client{BaseURL: baseURL}).CloseRollback(ctx, namespace, name)
	return err
}
