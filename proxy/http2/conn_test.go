package http2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// settingsFrame encodes a SETTINGS frame.
func settingsFrame(flags byte, settings ...http2.Setting) []byte {
	b := []byte{0, 0, byte(6 * len(settings)), frameTypeSettings, flags, 0, 0, 0, 0}
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

// pingFrame encodes a PING frame, a frame the filter passes through.
func pingFrame() []byte {
	return append([]byte{0, 0, 8, 0x6, 0, 0, 0, 0, 0}, []byte("pingpong")...)
}

// readerConn is a net.Conn reading from r, at most max bytes a read (0: no limit).
type readerConn struct {
	net.Conn
	r   io.Reader
	max int
}

func (c *readerConn) Read(p []byte) (int, error) {
	if c.max > 0 && len(p) > c.max {
		p = p[:c.max]
	}
	return c.r.Read(p)
}

func TestSettingsFilter(t *testing.T) {
	iws := func(v uint32) http2.Setting { return http2.Setting{ID: http2.SettingInitialWindowSize, Val: v} }
	mfs := func(v uint32) http2.Setting { return http2.Setting{ID: http2.SettingMaxFrameSize, Val: v} }
	hts := func(v uint32) http2.Setting { return http2.Setting{ID: http2.SettingHeaderTableSize, Val: v} }
	cases := []struct {
		name string
		in   []byte
		want []byte
	}{
		{"no duplicates pass", settingsFrame(0, iws(100), mfs(1<<15)), settingsFrame(0, iws(100), mfs(1<<15))},
		{"duplicates keep the last value", settingsFrame(0, iws(100), mfs(1<<15), iws(1)), settingsFrame(0, mfs(1<<15), iws(1))},
		{"ack passes", settingsFrame(flagSettingsAck), settingsFrame(flagSettingsAck)},
		{"invalid value kept for x/net to reject", settingsFrame(0, iws(1<<31), iws(1)), settingsFrame(0, iws(1<<31), iws(1))},
		{"header table size duplicates kept", settingsFrame(0, hts(0), hts(4096)), settingsFrame(0, hts(0), hts(4096))},
		{"other frames untouched around it",
			append(append(pingFrame(), settingsFrame(0, iws(5), iws(6))...), pingFrame()...),
			append(append(pingFrame(), settingsFrame(0, iws(6))...), pingFrame()...)},
	}
	for _, tc := range cases {
		for _, oneByte := range []bool{false, true} {
			name := tc.name
			if oneByte {
				name += " (one byte reads)"
			}
			t.Run(name, func(t *testing.T) {
				c := &readerConn{r: bytes.NewReader(tc.in)}
				if oneByte {
					c.max = 1
				}
				f := filterConn(c)
				var got []byte
				buf := make([]byte, 7)
				for {
					n, err := f.Read(buf)
					got = append(got, buf[:n]...)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				if !bytes.Equal(got, tc.want) {
					t.Fatalf("got  %x\nwant %x", got, tc.want)
				}
			})
		}
	}
}

func TestReadPreface(t *testing.T) {
	for _, tc := range []struct {
		name    string
		send    string
		wantErr bool
	}{
		{"valid", http2.ClientPreface + "rest", false},
		{"invalid", "INVALID CONNECTION PREFACE\r\n\r\n", true},
		{"short", "PRI * HTTP/2.0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				_, _ = b.Write([]byte(tc.send))
				b.Close()
			}()
			_ = a.SetDeadline(time.Now().Add(guard))
			err := readPreface(a)
			if (err != nil) != tc.wantErr {
				t.Fatalf("readPreface = %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr {
				rest, _ := io.ReadAll(a)
				if string(rest) != "rest" {
					t.Fatalf("after the preface read %q, want %q", rest, "rest")
				}
			}
		})
	}
}
