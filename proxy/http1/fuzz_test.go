package http1

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

// FuzzParseRequest feeds arbitrary bytes to the request reader, parser and
// chunked decoder. They must never panic, and a request they accept must come
// out as a head that parses again to the same method, path and query.
func FuzzParseRequest(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: web\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: w\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"GET http://h:1/x HTTP/1.1\r\nHost: o\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: w\r\n\r\n",
		"PUT / HTTP/1.1\r\nHost: w\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"GET /ws HTTP/1.1\r\nHost: w\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"\r\nGET / HTTP/1.1\nHost: w\n\n",
		"POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: w\r\nX: a\r\n b\r\n\r\n",
		"0 / HTTP/1.0\nEXpeCt:0\n\n", // an HTTP/1.0 expectation must not be forwarded as 1.1
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 64)
		raw, _, err := readHead(br, nil, 4096, true)
		if err != nil {
			return
		}
		var h requestHead
		if err := h.parse(raw); err != nil {
			return
		}
		host := h.authority
		if host == "" {
			host = "fallback"
		}
		out := h.appendHead(nil, h.headers, h.path, h.rawQuery, host, "id", true)
		var again requestHead
		if err := again.parse(string(out)); err != nil {
			t.Fatalf("forwarded head does not parse: %v\nin:  %q\nout: %q", err, raw, out)
		}
		if again.method != h.method || again.path != h.path || again.rawQuery != h.rawQuery || again.authority != host {
			t.Fatalf("forwarded head changed the request:\nin:  %q\nout: %q", raw, out)
		}
		if again.chunked != h.chunked || (again.contentLength != h.contentLength && !(h.contentLength == 0 && again.contentLength == 0)) {
			t.Fatalf("forwarded head changed the framing:\nin:  %q\nout: %q", raw, out)
		}
		if h.chunked {
			dst := bufio.NewWriter(io.Discard)
			copyChunked(dst, br, true, true, 1024)
		}
	})
}
