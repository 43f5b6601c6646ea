package http1

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func TestExpectContinue(t *testing.T) {
	p := simpleProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			w.WriteHeader(401) // without reading the body: no 100 Continue
			return
		}
		b, _ := io.ReadAll(r.Body) // net/http sends 100 Continue here
		fmt.Fprintf(w, "got %s", b)
	}))

	t.Run("continue relayed before the body is sent", func(t *testing.T) {
		c := dial(t, p.addr)
		for i := 0; i < 2; i++ {
			c.send("PUT /upload HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
			interim, _ := c.read("PUT")
			eq(t, interim.StatusCode, 100)
			c.send("hello") // only now
			resp, body := c.read("PUT")
			eq(t, resp.StatusCode, 200)
			eq(t, body, "got hello")
		}
	})
	t.Run("final answer without continue", func(t *testing.T) {
		c := dial(t, p.addr)
		resp, _ := c.do("PUT", "PUT /reject HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		eq(t, resp.StatusCode, 401)
		eq(t, resp.Close, true) // the client still holds its body: the connection cannot be reused
		c.expectClosed()
	})
}

// TestExpectIgnoredByUpstream: an upstream that never sends 100 Continue gets
// the body anyway after a while, from a client that stopped waiting.
func TestExpectIgnoredByUpstream(t *testing.T) {
	addr := startRaw(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		b := make([]byte, req.ContentLength)
		io.ReadFull(req.Body, b) // no 100 Continue: just wait for the body
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
	})
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{service("web", addr)}}, "web")
	c := dial(t, p.addr)
	resp, body := c.do("PUT", "PUT / HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody")
	eq(t, resp.StatusCode, 200)
	eq(t, body, "body")
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsServe is a minimal WebSocket echo server: it answers the handshake and
// echoes every frame (short, unfragmented) until a close frame.
func wsServe(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") || !strings.Contains(strings.ToLower(req.Header.Get("Connection")), "upgrade") {
		io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return
	}
	fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		wsAccept(req.Header.Get("Sec-WebSocket-Key")))
	for {
		op, payload, err := wsRead(br)
		if err != nil {
			return
		}
		if err := wsWrite(c, op, payload, false); err != nil || op == 8 {
			return
		}
	}
}

func wsRead(br *bufio.Reader) (op byte, payload []byte, err error) {
	var hdr [2]byte
	if _, err = io.ReadFull(br, hdr[:]); err != nil {
		return 0, nil, err
	}
	op = hdr[0] & 0x0f
	masked := hdr[1]&0x80 != 0
	n := int(hdr[1] & 0x7f)
	if n >= 126 {
		return 0, nil, fmt.Errorf("long frames not supported")
	}
	var mask [4]byte
	if masked {
		if _, err = io.ReadFull(br, mask[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
	}
	return op, payload, nil
}

func wsWrite(w io.Writer, op byte, payload []byte, mask bool) error {
	b := []byte{0x80 | op, byte(len(payload))}
	if mask {
		key := [4]byte{1, 2, 3, 4}
		b[1] |= 0x80
		b = append(b, key[:]...)
		for i, c := range payload {
			b = append(b, c^key[i%4])
		}
	} else {
		b = append(b, payload...)
	}
	_, err := w.Write(b)
	return err
}

func TestWebSocketUpgrade(t *testing.T) {
	addr := startRaw(t, wsServe)
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{service("web", addr)}}, "web")
	c := dial(t, p.addr)
	const key = "dGhlIHNhbXBsZSBub25jZQ=="
	c.send("GET /chat HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, resp.StatusCode, 101)
	eq(t, resp.Header.Get("Sec-WebSocket-Accept"), wsAccept(key))
	eq(t, strings.ToLower(resp.Header.Get("Upgrade")), "websocket")
	eq(t, strings.ToLower(resp.Header.Get("Connection")), "upgrade")

	for _, msg := range []string{"hello", "", "second message"} {
		if err := wsWrite(c.c, 1, []byte(msg), true); err != nil {
			t.Fatal(err)
		}
		op, payload, err := wsRead(c.br)
		if err != nil {
			t.Fatalf("reading echo: %v", err)
		}
		eq(t, op, byte(1))
		eq(t, string(payload), msg)
	}
	wsWrite(c.c, 8, nil, true)
	if op, _, err := wsRead(c.br); err != nil || op != 8 {
		t.Fatalf("close frame: op %d, %v", op, err)
	}
	c.expectClosed()
	eq(t, p.pool.idleCount(addr), 0) // an upgraded connection never returns to the pool
}

func TestUpgradeDeclined(t *testing.T) {
	rec := &recorder{}
	p := simpleProxy(t, rec) // answers 200: no switch
	c := dial(t, p.addr)
	resp, _ := c.do("GET", "GET /ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	eq(t, resp.StatusCode, 200)
	eq(t, rec.last(t).header.Get("Upgrade"), "websocket")
	resp, _ = c.do("GET", get("/after"))
	eq(t, resp.StatusCode, 200)
}

func TestUnaskedSwitchingProtocols(t *testing.T) {
	addr := startRaw(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	})
	p := startProxy(t, &routetable.Table{Services: []routetable.Service{service("web", addr)}}, "web")
	c := dial(t, p.addr)
	resp, _ := c.do("GET", get("/"))
	eq(t, resp.StatusCode, 502)
}
