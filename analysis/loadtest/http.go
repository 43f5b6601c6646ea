package loadtest

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// hitter sends one request of a load.
type hitter interface {
	// hit sends one request and returns its outcome code, whether it
	// failed, and the error text of a failure that has one.
	hit(ctx context.Context) (code string, failed bool, errText string)
	close()
}

// maxDrain is how much of a response body is read before the connection is
// given up rather than reused.
const maxDrain = 1 << 20

// httpHitter sends a Spec's HTTP requests.
type httpHitter struct {
	spec      Spec
	client    *http.Client
	transport *http.Transport
}

func newHTTPHitter(s Spec) *httpHitter {
	tr := &http.Transport{
		Proxy:               nil, // only the target; an environment proxy would skew the load
		MaxIdleConns:        s.Concurrency,
		MaxIdleConnsPerHost: s.Concurrency,
		IdleConnTimeout:     30 * time.Second,
		DisableKeepAlives:   s.DisableKeepAlives,
		DisableCompression:  s.DisableCompression,
		ForceAttemptHTTP2:   s.HTTP2,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: s.Insecure}, //nolint:gosec // asked for
	}
	if !s.HTTP2 {
		// A non-nil empty map turns HTTP/2 off, as hey does without -h2.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	c := &http.Client{Transport: tr, Timeout: s.Timeout}
	if s.DisableRedirects {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return &httpHitter{spec: s, client: c, transport: tr}
}

// hit sends one request. A transport error or a status of 500 or more is a
// failure.
func (h *httpHitter) hit(ctx context.Context) (string, bool, string) {
	var body io.Reader
	if h.spec.Body != "" {
		body = strings.NewReader(h.spec.Body)
	}
	req, err := http.NewRequestWithContext(ctx, h.spec.Method, h.spec.URL, body)
	if err != nil {
		return "error", true, err.Error()
	}
	for k, v := range h.spec.Headers {
		req.Header.Set(k, v)
	}
	if h.spec.Host != "" {
		req.Host = h.spec.Host
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return "error", true, err.Error()
	}
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	_ = resp.Body.Close()
	failed := resp.StatusCode >= 500
	text := ""
	if failed {
		text = resp.Status
	}
	return strconv.Itoa(resp.StatusCode), failed, text
}

func (h *httpHitter) close() { h.transport.CloseIdleConnections() }
