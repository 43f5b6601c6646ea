package http1

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		status int // 0: valid
		check  func(t *testing.T, h *requestHead)
	}{
		{name: "simple get", raw: "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: web:8080\r\nAccept: */*\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.Method(), "GET")
			eq(t, h.Path(), "/a/b")
			eq(t, h.RawQuery(), "x=1&y=2")
			eq(t, h.authority, "web:8080")
			v, ok := h.Header("ACCEPT")
			eq(t, v, "*/*")
			eq(t, ok, true)
			v, _ = h.Header("host")
			eq(t, v, "web:8080")
			eq(t, h.keepAlive, true)
			eq(t, h.hasBody(), false)
		}},
		{name: "bare LF line ends", raw: "GET / HTTP/1.1\nHost: web\n\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.authority, "web")
		}},
		{name: "content length", raw: "POST /p HTTP/1.1\r\nHost: w\r\nContent-Length: 12\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.contentLength, int64(12))
			eq(t, h.hasBody(), true)
		}},
		{name: "identical duplicate content length", raw: "POST /p HTTP/1.1\r\nHost: w\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.contentLength, int64(3))
		}},
		{name: "chunked", raw: "POST /p HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: Chunked\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.chunked, true)
			eq(t, h.contentLength, int64(-1))
		}},
		{name: "connection close", raw: "GET / HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.keepAlive, false)
		}},
		{name: "http/1.0 default close", raw: "GET / HTTP/1.0\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.keepAlive, false)
			eq(t, h.authority, "")
		}},
		{name: "http/1.0 keep-alive", raw: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.keepAlive, true)
		}},
		{name: "connection options are hop-by-hop", raw: "GET / HTTP/1.1\r\nHost: w\r\nX-A: 1\r\nConnection: x-a, keep-alive\r\nX-B: 2\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			for _, f := range h.headers {
				if equalFold(f.name, "x-a") && !f.hop {
					t.Error("X-A named by Connection is not marked hop-by-hop")
				}
				if equalFold(f.name, "x-b") && f.hop {
					t.Error("X-B is marked hop-by-hop")
				}
			}
		}},
		{name: "expect with body", raw: "PUT / HTTP/1.1\r\nHost: w\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.expectContinue, true)
		}},
		{name: "expect without body is dropped", raw: "GET / HTTP/1.1\r\nHost: w\r\nExpect: 100-continue\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.expectContinue, false)
			_, ok := h.Header("expect")
			eq(t, ok, false)
		}},
		{name: "upgrade", raw: "GET /ws HTTP/1.1\r\nHost: w\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.upgrade, "websocket")
		}},
		{name: "upgrade without connection option", raw: "GET /ws HTTP/1.1\r\nHost: w\r\nUpgrade: websocket\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.upgrade, "")
		}},
		{name: "absolute form", raw: "GET http://other:81/x?q HTTP/1.1\r\nHost: ignored\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.authority, "other:81")
			eq(t, h.path, "/x")
			eq(t, h.rawQuery, "q")
		}},
		{name: "absolute form without path", raw: "GET http://other HTTP/1.1\r\nHost: other\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.path, "/")
		}},
		{name: "asterisk options", raw: "OPTIONS * HTTP/1.1\r\nHost: w\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			eq(t, h.path, "*")
		}},
		{name: "value whitespace trimmed", raw: "GET / HTTP/1.1\r\nHost: w\r\nX-A: \t v w \t\r\n\r\n", check: func(t *testing.T, h *requestHead) {
			v, _ := h.Header("x-a")
			eq(t, v, "v w")
		}},

		{name: "missing version", raw: "GET /\r\nHost: w\r\n\r\n", status: 400},
		{name: "extra space in request line", raw: "GET  / HTTP/1.1\r\nHost: w\r\n\r\n", status: 400},
		{name: "bad method", raw: "G(T / HTTP/1.1\r\nHost: w\r\n\r\n", status: 400},
		{name: "bad version", raw: "GET / HTTX/1.1\r\nHost: w\r\n\r\n", status: 400},
		{name: "http/2 version", raw: "GET / HTTP/2.0\r\nHost: w\r\n\r\n", status: 505},
		{name: "control char in target", raw: "GET /a\x01 HTTP/1.1\r\nHost: w\r\n\r\n", status: 400},
		{name: "space before colon", raw: "GET / HTTP/1.1\r\nHost : w\r\n\r\n", status: 400},
		{name: "no colon", raw: "GET / HTTP/1.1\r\nHost w\r\n\r\n", status: 400},
		{name: "empty name", raw: "GET / HTTP/1.1\r\n: w\r\nHost: w\r\n\r\n", status: 400},
		{name: "obs-fold", raw: "GET / HTTP/1.1\r\nHost: w\r\nX-A: 1\r\n 2\r\n\r\n", status: 400},
		{name: "NUL in value", raw: "GET / HTTP/1.1\r\nHost: w\r\nX-A: a\x00b\r\n\r\n", status: 400},
		{name: "bare CR in value", raw: "GET / HTTP/1.1\r\nHost: w\r\nX-A: a\rb\r\n\r\n", status: 400},
		{name: "invalid content length", raw: "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 1x\r\n\r\n", status: 400},
		{name: "negative content length", raw: "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: -1\r\n\r\n", status: 400},
		{name: "huge content length", raw: "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 99999999999999999999\r\n\r\n", status: 400},
		{name: "conflicting content lengths", raw: "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", status: 400},
		{name: "content length list", raw: "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 1, 1\r\n\r\n", status: 400},
		{name: "smuggling: length and chunked", raw: "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{name: "unsupported transfer coding", raw: "POST / HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 400},
		{name: "two transfer-encoding fields", raw: "POST / HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{name: "transfer-encoding in 1.0", raw: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", status: 400},
		{name: "missing host", raw: "GET / HTTP/1.1\r\nX: y\r\n\r\n", status: 400},
		{name: "two hosts", raw: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400},
		{name: "asterisk with get", raw: "GET * HTTP/1.1\r\nHost: w\r\n\r\n", status: 400},
		{name: "connect", raw: "CONNECT w:443 HTTP/1.1\r\nHost: w:443\r\n\r\n", status: 405},
		{name: "unknown expectation", raw: "POST / HTTP/1.1\r\nHost: w\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", status: 417},
		{name: "bad absolute form", raw: "GET ftp://x/ HTTP/1.1\r\nHost: w\r\n\r\n", status: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h requestHead
			err := h.parse(tt.raw)
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				tt.check(t, &h)
				return
			}
			var re *requestError
			if !errors.As(err, &re) {
				t.Fatalf("parse = %v, want a %d", err, tt.status)
			}
			if re.status != tt.status {
				t.Fatalf("status = %d (%s), want %d", re.status, re.reason, tt.status)
			}
		})
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		method  string
		bad     bool
		status  int
		framing framing
		close   bool
	}{
		{name: "length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", status: 200, framing: frameLength},
		{name: "no reason", raw: "HTTP/1.1 204\r\n\r\n", status: 204, framing: frameNone},
		{name: "chunked", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", status: 200, framing: frameChunked},
		{name: "both: chunked wins and closes", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", status: 200, framing: frameChunked, close: true},
		{name: "read until close", raw: "HTTP/1.1 200 OK\r\n\r\n", status: 200, framing: frameClose},
		{name: "1.0 closes", raw: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", status: 200, framing: frameLength, close: true},
		{name: "1.0 keep-alive", raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", status: 200, framing: frameLength},
		{name: "connection close", raw: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", status: 200, framing: frameLength, close: true},
		{name: "head has no body", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", method: "HEAD", status: 200, framing: frameNone},
		{name: "304 has no body", raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", status: 304, framing: frameNone},
		{name: "100 continue", raw: "HTTP/1.1 100 Continue\r\n\r\n", status: 100, framing: frameNone},
		{name: "zero length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", status: 200, framing: frameNone},
		{name: "bad status", raw: "HTTP/1.1 2x0 OK\r\n\r\n", bad: true},
		{name: "short status", raw: "HTTP/1.1 20\r\n\r\n", bad: true},
		{name: "bad version", raw: "HTTP/2.0 200 OK\r\n\r\n", bad: true},
		{name: "bad length", raw: "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", bad: true},
		{name: "gzip coding", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", bad: true},
		{name: "bad field", raw: "HTTP/1.1 200 OK\r\nX Y: z\r\n\r\n", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h responseHead
			err := h.parse(tt.raw)
			if tt.bad {
				if !errors.Is(err, errBadResponse) {
					t.Fatalf("parse = %v, want errBadResponse", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			method := tt.method
			if method == "" {
				method = "GET"
			}
			eq(t, h.status, tt.status)
			eq(t, h.bodyFraming(method), tt.framing)
			eq(t, h.close, tt.close)
		})
	}
}

func TestReadHead(t *testing.T) {
	long := "GET / HTTP/1.1\r\nHost: w\r\nX-Long: " + strings.Repeat("a", 6000) + "\r\n\r\nBODY"
	tests := []struct {
		name     string
		in       string
		bufSize  int
		max      int
		want     string
		wantErr  error
		leftover string
	}{
		{name: "buffered", in: "GET / HTTP/1.1\r\nHost: w\r\n\r\nBODY", bufSize: 4096, max: 1 << 16, want: "GET / HTTP/1.1\r\nHost: w\r\n\r\n", leftover: "BODY"},
		{name: "leading blank lines", in: "\r\n\r\nGET / HTTP/1.1\r\nHost: w\r\n\r\n", bufSize: 4096, max: 1 << 16, want: "GET / HTTP/1.1\r\nHost: w\r\n\r\n"},
		{name: "larger than the buffer", in: long, bufSize: 64, max: 1 << 16, want: long[:len(long)-4], leftover: "BODY"},
		{name: "too large buffered", in: long, bufSize: 8192, max: 1024, wantErr: errHeadTooLarge},
		{name: "too large streamed", in: long, bufSize: 64, max: 1024, wantErr: errHeadTooLarge},
		{name: "LF only", in: "GET / HTTP/1.1\nHost: w\n\nX", bufSize: 4096, max: 1 << 16, want: "GET / HTTP/1.1\nHost: w\n\n", leftover: "X"},
		{name: "LF head before CRLF in body", in: "GET / HTTP/1.1\nHost: w\n\nA\r\n\r\n", bufSize: 4096, max: 1 << 16, want: "GET / HTTP/1.1\nHost: w\n\n", leftover: "A\r\n\r\n"},
		{name: "truncated", in: "GET / HTTP/1.1\r\nHost: w\r\n", bufSize: 4096, max: 1 << 16, wantErr: errAnyErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), tt.bufSize)
			got, _, err := readHead(br, nil, tt.max, true)
			if tt.wantErr != nil {
				if err == nil || (tt.wantErr != errAnyErr && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			eq(t, got, tt.want)
			rest := make([]byte, 64)
			n, _ := br.Read(rest)
			eq(t, string(rest[:n]), tt.leftover)
		})
	}
}

var errAnyErr = errors.New("any error")

func TestHeaderList(t *testing.T) {
	var hl headerList
	hl.add("X-A", "1")
	hl.add("x-b", "2")
	hl.add("X-a", "3")
	hl.set("x-A", "4")
	if v, _ := hl.get("X-A"); v != "4" {
		t.Fatalf("get after set = %q", v)
	}
	if len(hl) != 2 || hl[0].name != "x-A" || hl[1].name != "x-b" {
		t.Fatalf("set did not replace in place: %+v", hl)
	}
	hl.del("X-B")
	if _, ok := hl.get("x-b"); ok || len(hl) != 1 {
		t.Fatalf("del: %+v", hl)
	}
	hl.set("Content-Length", "9")
	if hl[1].kind != kContentLength {
		t.Fatalf("set did not classify: %+v", hl[1])
	}
}

func eq[T comparable](t *testing.T, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}
