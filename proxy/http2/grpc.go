package http2

import (
	"net/http"
	"strconv"
	"strings"
)

// gRPC over HTTP/2 details the proxy needs (the wire protocol, not grpc-go).
const (
	headerGRPCStatus  = "Grpc-Status"
	headerGRPCMessage = "Grpc-Message"
)

// isGRPC reports whether a content type is gRPC's (application/grpc, +proto, ...).
func isGRPC(contentType string) bool {
	return strings.HasPrefix(contentType, "application/grpc")
}

// grpcStatus parses the grpc-status field of h; ok is false when absent or malformed.
func grpcStatus(h http.Header) (int, bool) {
	v := h[headerGRPCStatus]
	if len(v) == 0 {
		return 0, false
	}
	code, err := strconv.Atoi(v[0])
	if err != nil || code < 0 {
		return 0, false
	}
	return code, true
}

// encodeGRPCMessage percent-encodes a grpc-message value as the gRPC HTTP/2
// protocol requires: every byte outside printable ASCII, and '%' itself.
func encodeGRPCMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(msg) + 16)
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// grpc status codes the adaptor itself uses.
const (
	grpcDeadlineExceeded = 4
	grpcInternal         = 13
	grpcUnavailable      = 14
)
