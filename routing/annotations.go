package routing

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// Route annotations that configure retries and timeouts on clusters whose Gateway
// API CRDs (standard channel) cannot store spec.rules[].retry. They apply to every
// rule of the annotated HTTPRoute; a rule's own spec field wins.
const (
	// AnnotationRetryHTTP lists HTTP statuses to retry: "5xx", "gateway-error",
	// "503", "500-504", comma separated.
	AnnotationRetryHTTP = "retry.sluice.dev/http"
	// AnnotationRetryGRPC lists gRPC statuses to retry by name ("unavailable,internal").
	AnnotationRetryGRPC = "retry.sluice.dev/grpc"
	// AnnotationRetryLimit is the maximum number of retries (default 1; 0 disables).
	AnnotationRetryLimit = "retry.sluice.dev/limit"
	// AnnotationRetryTimeout is the per-attempt timeout ("500ms").
	AnnotationRetryTimeout = "retry.sluice.dev/timeout"
	// AnnotationRequestTimeout is the whole-request timeout ("10s").
	AnnotationRequestTimeout = "timeout.sluice.dev/request"
)

// routeAnnotations is what a route's annotations contribute to each of its rules.
type routeAnnotations struct {
	retry      *routetable.Retry // nil: no retry annotation, or the limit is 0
	request    time.Duration
	hasRequest bool
	perTry     time.Duration
	hasPerTry  bool
}

// retryCopy returns a copy of the annotation retry so that rules share nothing.
func (a *routeAnnotations) retryCopy() *routetable.Retry {
	if a.retry == nil {
		return nil
	}
	r := *a.retry
	r.Codes = slices.Clone(r.Codes)
	r.CodeRanges = slices.Clone(r.CodeRanges)
	r.GRPCCodes = slices.Clone(r.GRPCCodes)
	return &r
}

func annotationField(key string) string { return "metadata.annotations[" + key + "]" }

// parseAnnotations reads the retry and timeout annotations of the route. A value
// that does not parse is reported and ignored.
func (c *compiler) parseAnnotations() routeAnnotations {
	var a routeAnnotations
	ann := c.route.Annotations
	retryAnnotated := false
	var codes []int
	var ranges [][2]int
	var grpc []string
	limit := 1

	if v, ok := ann[AnnotationRetryHTTP]; ok {
		retryAnnotated = true
		var err error
		if codes, ranges, err = parseHTTPRetryConditions(v); err != nil {
			c.errorf(annotationField(AnnotationRetryHTTP), "%v; annotation ignored", err)
			codes, ranges = nil, nil
		}
	}
	if v, ok := ann[AnnotationRetryGRPC]; ok {
		retryAnnotated = true
		var err error
		if grpc, err = parseGRPCRetryConditions(v); err != nil {
			c.errorf(annotationField(AnnotationRetryGRPC), "%v; annotation ignored", err)
			grpc = nil
		}
	}
	if v, ok := ann[AnnotationRetryLimit]; ok {
		retryAnnotated = true
		n, err := strconv.Atoi(strings.TrimSpace(v))
		switch {
		case err != nil:
			c.errorf(annotationField(AnnotationRetryLimit), "invalid retry limit %q: want an integer; using 1", v)
		case n < 0 || n > 65535:
			c.errorf(annotationField(AnnotationRetryLimit), "retry limit %d out of range 0-65535; using 1", n)
		default:
			limit = n
		}
	}
	if v, ok := ann[AnnotationRetryTimeout]; ok {
		retryAnnotated = true
		if d, err := parseDuration(strings.TrimSpace(v)); err != nil {
			c.errorf(annotationField(AnnotationRetryTimeout), "%v; annotation ignored", err)
		} else {
			a.perTry, a.hasPerTry = d, true
		}
	}
	if v, ok := ann[AnnotationRequestTimeout]; ok {
		if d, err := parseDuration(strings.TrimSpace(v)); err != nil {
			c.errorf(annotationField(AnnotationRequestTimeout), "%v; annotation ignored", err)
		} else {
			a.request, a.hasRequest = d, true
		}
	}
	if retryAnnotated && limit > 0 {
		if len(codes) == 0 && len(ranges) == 0 && len(grpc) == 0 {
			ranges = [][2]int{{500, 599}}
		}
		a.retry = &routetable.Retry{Codes: codes, CodeRanges: ranges, GRPCCodes: grpc, Attempts: limit}
	}
	return a
}

// parseHTTPRetryConditions parses "5xx,gateway-error,429,500-504".
func parseHTTPRetryConditions(v string) (codes []int, ranges [][2]int, err error) {
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		switch strings.ToLower(item) {
		case "":
			continue
		case "5xx":
			ranges = append(ranges, [2]int{500, 599})
			continue
		case "gateway-error":
			ranges = append(ranges, [2]int{502, 504})
			continue
		}
		if from, to, isRange := strings.Cut(item, "-"); isRange {
			lo, err1 := parseStatus(from)
			hi, err2 := parseStatus(to)
			if err1 != nil || err2 != nil || lo > hi {
				return nil, nil, fmt.Errorf("invalid status range %q: want NNN-MMM with 100 <= NNN <= MMM <= 599", item)
			}
			ranges = append(ranges, [2]int{lo, hi})
			continue
		}
		code, err := parseStatus(item)
		if err != nil {
			return nil, nil, fmt.Errorf("invalid retry condition %q: want 5xx, gateway-error, a status or a range", item)
		}
		codes = append(codes, code)
	}
	return codes, ranges, nil
}

func parseStatus(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 100 || n > 599 {
		return 0, fmt.Errorf("invalid status %q", s)
	}
	return n, nil
}

// grpcCodeNames are the gRPC status names by number, in the kebab-case form used
// by the annotation. 0 (ok) is not retryable.
var grpcCodeNames = []string{
	"ok", "cancelled", "unknown", "invalid-argument", "deadline-exceeded", "not-found",
	"already-exists", "permission-denied", "resource-exhausted", "failed-precondition",
	"aborted", "out-of-range", "unimplemented", "internal", "unavailable", "data-loss",
	"unauthenticated",
}

// parseGRPCRetryConditions parses "unavailable, deadline-exceeded, 13" into names.
func parseGRPCRetryConditions(v string) ([]string, error) {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name := strings.ReplaceAll(strings.ToLower(item), "_", "-")
		if n, err := strconv.Atoi(name); err == nil && n >= 0 && n < len(grpcCodeNames) {
			name = grpcCodeNames[n]
		}
		if name == "canceled" {
			name = "cancelled"
		}
		i := slices.Index(grpcCodeNames, name)
		if i <= 0 {
			return nil, fmt.Errorf("invalid gRPC retry condition %q: want a status name such as unavailable", item)
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}
