package http1

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestCopyChunked(t *testing.T) {
	tests := []struct {
		name         string
		in           string
		chunkOut     bool
		keepTrailers bool
		want         string
		rest         string
		bad          bool
	}{
		{name: "re-chunked", in: "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT", chunkOut: true, keepTrailers: true,
			want: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", rest: "NEXT"},
		{name: "trailers kept", in: "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Two: 2\r\n\r\n", chunkOut: true, keepTrailers: true,
			want: "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Two: 2\r\n\r\n"},
		{name: "forbidden trailers dropped", in: "0\r\nContent-Length: 5\r\nX-Ok: 1\r\n\r\n", chunkOut: true, keepTrailers: true,
			want: "0\r\nX-Ok: 1\r\n\r\n"},
		{name: "raw out drops framing and trailers", in: "A\r\n0123456789\r\n0\r\nX: y\r\n\r\n", want: "0123456789"},
		{name: "upper-case hex", in: "B\r\nhello world\r\n0\r\n\r\n", want: "hello world"},
		{name: "missing CRLF after data", in: "3\r\nabcX\r\n0\r\n\r\n", bad: true},
		{name: "LF only size line", in: "3\nabc\r\n0\r\n\r\n", bad: true},
		{name: "not hex", in: "zz\r\nabc\r\n0\r\n\r\n", bad: true},
		{name: "overflow", in: "fffffffffffffffffff\r\n", bad: true},
		{name: "truncated data", in: "10\r\nshort", bad: true},
		{name: "missing last chunk", in: "3\r\nabc\r\n", bad: true},
		{name: "bad trailer", in: "0\r\nno colon\r\n\r\n", bad: true},
		{name: "control in extension", in: "3;\x01\r\nabc\r\n0\r\n\r\n", bad: true},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			name := tt.name
			if oneByte {
				name += "/one byte reads"
			}
			t.Run(name, func(t *testing.T) {
				var src *bufio.Reader
				if oneByte {
					src = bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(tt.in)), 32)
				} else {
					src = bufio.NewReader(strings.NewReader(tt.in))
				}
				var out bytes.Buffer
				dst := bufio.NewWriterSize(&out, 16)
				ce := copyChunked(dst, src, tt.chunkOut, tt.keepTrailers, 1024)
				dst.Flush()
				if tt.bad {
					if ce.readErr == nil {
						t.Fatalf("no error; wrote %q", out.String())
					}
					return
				}
				if ce.err() != nil {
					t.Fatal(ce.err())
				}
				eq(t, out.String(), tt.want)
				rest, _ := io.ReadAll(src)
				eq(t, string(rest), tt.rest)
			})
		}
	}
}

func TestCopyN(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 10000) // 160 KB: exercises the big-buffer path
	for _, size := range []int{0, 1, 100, 4096, 5000, len(big)} {
		src := bufio.NewReaderSize(strings.NewReader(big+"TAIL"), 4096)
		var out bytes.Buffer
		dst := bufio.NewWriterSize(&out, 4096)
		if ce := copyN(dst, src, int64(size)); ce.err() != nil {
			t.Fatalf("size %d: %v", size, ce.err())
		}
		dst.Flush()
		if out.String() != big[:size] {
			t.Fatalf("size %d: copied %d bytes, not the prefix", size, out.Len())
		}
	}
	src := bufio.NewReader(strings.NewReader("abc"))
	dst := bufio.NewWriter(&bytes.Buffer{})
	if ce := copyN(dst, src, 10); ce.readErr == nil {
		t.Fatal("short body: no read error")
	}
}

func TestCopyUntilEOF(t *testing.T) {
	var out bytes.Buffer
	dst := bufio.NewWriterSize(&out, 16)
	src := bufio.NewReaderSize(iotest.HalfReader(strings.NewReader("hello world")), 16)
	if ce := copyUntilEOF(dst, src, true); ce.err() != nil {
		t.Fatal(ce.err())
	}
	dst.Flush()
	// Re-read the chunked output: it must decode to the input.
	var dec bytes.Buffer
	dw := bufio.NewWriter(&dec)
	if ce := copyChunked(dw, bufio.NewReader(&out), false, false, 1024); ce.err() != nil {
		t.Fatalf("output is not valid chunked: %v", ce.err())
	}
	dw.Flush()
	eq(t, dec.String(), "hello world")
}
