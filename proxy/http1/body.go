package http1

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"sync"
)

// Body copying. Every copy reads from a bufio.Reader and writes to a
// bufio.Writer; before a read that would block, it flushes what the writer holds,
// so that a streamed body (server-sent events, a slow upload) reaches its reader
// as it arrives, while a small body that arrived with its head goes out in the
// same write. Errors say which side failed: readErr for the source, writeErr for
// the destination.

var (
	errChunkLine     = errors.New("malformed chunk size line")
	errChunkTooLarge = errors.New("chunk size too large")
	errChunkCRLF     = errors.New("missing CRLF after chunk data")
	errTrailer       = errors.New("malformed trailer section")
)

// bigBuf is the pooled buffer for copying large bodies past a bufio.Writer.
const bigBufSize = 32 << 10

var bigBufs = sync.Pool{New: func() any { b := make([]byte, bigBufSize); return &b }}

// copyError records which side of a copy failed.
type copyError struct {
	readErr, writeErr error
}

func (e copyError) err() error {
	if e.readErr != nil {
		return e.readErr
	}
	return e.writeErr
}

// flushIfIdle flushes dst when src has nothing buffered: the next read would block.
func flushIfIdle(dst *bufio.Writer, src *bufio.Reader) error {
	if src.Buffered() == 0 && dst.Buffered() > 0 {
		return dst.Flush()
	}
	return nil
}

// copyN copies exactly n bytes.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64) copyError {
	for n > 0 {
		if err := flushIfIdle(dst, src); err != nil {
			return copyError{writeErr: err}
		}
		if src.Buffered() == 0 && n >= int64(dst.Size()) {
			// Large and nothing buffered: read straight into a big buffer and
			// write it past dst's (empty) buffer.
			bp := bigBufs.Get().(*[]byte)
			m, err := src.Read((*bp)[:min(int64(len(*bp)), n)])
			if m > 0 {
				if _, werr := dst.Write((*bp)[:m]); werr != nil {
					bigBufs.Put(bp)
					return copyError{writeErr: werr}
				}
				n -= int64(m)
			}
			bigBufs.Put(bp)
			if err != nil && n > 0 {
				return copyError{readErr: eofUnexpected(err)}
			}
			continue
		}
		if dst.Available() == 0 {
			if err := dst.Flush(); err != nil {
				return copyError{writeErr: err}
			}
		}
		buf := dst.AvailableBuffer()
		buf = buf[:min(int64(cap(buf)), n)]
		m, err := src.Read(buf)
		if m > 0 {
			dst.Write(buf[:m]) // fits: it is dst's own free space
			n -= int64(m)
		}
		if err != nil && n > 0 {
			return copyError{readErr: eofUnexpected(err)}
		}
	}
	return copyError{}
}

// copyUntilEOF copies until src ends. With chunk set, every piece is written as
// one chunk and the body ends with the last chunk, re-framing a body delimited by
// connection close for a client that keeps its connection.
func copyUntilEOF(dst *bufio.Writer, src *bufio.Reader, chunk bool) copyError {
	bp := bigBufs.Get().(*[]byte)
	defer bigBufs.Put(bp)
	buf := *bp
	for {
		if err := flushIfIdle(dst, src); err != nil {
			return copyError{writeErr: err}
		}
		m, err := src.Read(buf)
		if m > 0 {
			if chunk {
				writeChunkHeader(dst, int64(m))
			}
			dst.Write(buf[:m])
			if chunk {
				dst.WriteString("\r\n")
			}
		}
		if err == io.EOF {
			if chunk {
				dst.WriteString("0\r\n\r\n")
			}
			return copyError{}
		}
		if err != nil {
			return copyError{readErr: err}
		}
	}
}

// writeChunkHeader writes "<hex size>\r\n".
func writeChunkHeader(dst *bufio.Writer, n int64) {
	var tmp [20]byte
	b := strconv.AppendInt(tmp[:0], n, 16)
	b = append(b, '\r', '\n')
	dst.Write(b)
}

// readLine reads one line that must fit src's buffer and end in CRLF; it returns
// it without the CRLF.
func readLine(src *bufio.Reader) ([]byte, error) {
	line, err := src.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, errChunkLine
	}
	if err != nil {
		return nil, eofUnexpected(err)
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, errChunkLine
	}
	return line[:len(line)-2], nil
}

// parseChunkSize parses "<hex>[;ext]". Extensions are dropped.
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto rest
		}
		if n >= 1<<55 {
			return 0, errChunkTooLarge
		}
		n = n<<4 | int64(d)
	}
rest:
	if i == 0 {
		return 0, errChunkLine
	}
	// Optional whitespace, then extensions; no control characters anywhere.
	for ; i < len(line); i++ {
		if c := line[i]; c == ' ' || c == '\t' {
			continue
		}
		break
	}
	if i < len(line) && line[i] != ';' {
		return 0, errChunkLine
	}
	for ; i < len(line); i++ {
		if c := line[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return 0, errChunkLine
		}
	}
	return n, nil
}

// copyChunked copies a chunked body from src. With chunkOut the body is written
// chunked (same chunk sizes, extensions dropped) with its trailer fields,
// unless keepTrailers is false; without it the data is written raw (for an
// HTTP/1.0 client) and the trailers are dropped. Trailer sections longer than
// maxTrailer are refused.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, chunkOut, keepTrailers bool, maxTrailer int) copyError {
	for {
		if err := flushIfIdle(dst, src); err != nil {
			return copyError{writeErr: err}
		}
		line, err := readLine(src)
		if err != nil {
			return copyError{readErr: err}
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return copyError{readErr: err}
		}
		if size == 0 {
			break
		}
		if chunkOut {
			writeChunkHeader(dst, size)
		}
		if ce := copyN(dst, src, size); ce.readErr != nil || ce.writeErr != nil {
			return ce
		}
		if err := flushIfIdle(dst, src); err != nil {
			return copyError{writeErr: err}
		}
		crlf, err := src.Peek(2)
		if err != nil {
			return copyError{readErr: eofUnexpected(err)}
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return copyError{readErr: errChunkCRLF}
		}
		src.Discard(2)
		if chunkOut {
			dst.WriteString("\r\n")
		}
	}
	// Trailer section: header fields until an empty line.
	if chunkOut {
		dst.WriteString("0\r\n")
	}
	total := 0
	for {
		if err := flushIfIdle(dst, src); err != nil {
			return copyError{writeErr: err}
		}
		line, err := readLine(src)
		if err != nil {
			if err == errChunkLine {
				err = errTrailer
			}
			return copyError{readErr: err}
		}
		if len(line) == 0 {
			break
		}
		total += len(line) + 2
		if total > maxTrailer {
			return copyError{readErr: errTrailer}
		}
		name, _, ok := parseHeaderLine(string(line))
		if !ok || line[0] == ' ' || line[0] == '\t' {
			return copyError{readErr: errTrailer}
		}
		switch classify(name) {
		case kContentLength, kTransferEncoding, kHost, kConnection, kTrailer:
			continue // not allowed in trailers
		}
		if chunkOut && keepTrailers {
			dst.Write(line)
			dst.WriteString("\r\n")
		}
	}
	if chunkOut {
		dst.WriteString("\r\n")
	}
	return copyError{}
}

// discardN drops n bytes from src.
func discardN(src *bufio.Reader, n int64) error {
	for n > 0 {
		m, err := src.Discard(int(min(n, 1<<30)))
		n -= int64(m)
		if err != nil {
			return eofUnexpected(err)
		}
	}
	return nil
}
