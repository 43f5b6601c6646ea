package analysis

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// formatNumber writes v with at most decimals decimals and no trailing
// zeros: 91.25 with 1 → "91.3", 99.0 → "99".
func formatNumber(v float64, decimals int) string {
	s := strconv.FormatFloat(v, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

// formatBound writes a threshold as short as it reads exactly: 99, 99.5,
// 0.001.
func formatBound(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// formatAgainst writes v with decimals decimals, or more (up to 6) when that
// is what it takes for the written number to stand on the same side of bound
// as v does, so that "99.95% < min 99.96%" never reads "100% < min 99.96%".
func formatAgainst(v, bound float64, decimals int) string {
	for d := decimals; ; d++ {
		s := formatNumber(v, d)
		r, err := strconv.ParseFloat(s, 64)
		if d >= 6 || err != nil || (r < bound) == (v < bound) && (r > bound) == (v > bound) {
			return s
		}
	}
}

// formatP writes a p-value with two significant digits: 0.041, 3.1e-40.
func formatP(p float64) string {
	return strconv.FormatFloat(p, 'g', 2, 64)
}

// formatDuration writes d as a Canary spec would: 1m, 30s, 1m30s, 1h.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// finite reports whether v is neither NaN nor infinite.
func finite(v float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0)
}
