package template

import (
	"math"
	"strconv"
	"strings"
)

// formatValue writes a measured value with four significant digits and no
// trailing zeros: 95.12, 0.5, 1235, 0.0001234, 2.5e+07.
func formatValue(v float64) string {
	return formatDigits(v, 4)
}

// formatDigits writes v with n significant digits, in plain notation between
// 1e-4 and 1e6 and in exponent notation outside.
func formatDigits(v float64, n int) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case v == 0:
		return "0"
	}
	a := math.Abs(v)
	if a < 1e-4 || a >= 1e6 {
		return strconv.FormatFloat(v, 'g', n, 64)
	}
	decimals := max(0, n-1-int(math.Floor(math.Log10(a))))
	s := strconv.FormatFloat(v, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

// formatBound writes a threshold as short as it reads exactly: 99, 0.5.
func formatBound(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// formatAgainst writes v with more digits when four are not enough for the
// written number to stand on the same side of bound as v does, so that a
// failing 99.995 against min 99.996 never reads "100 < min 99.996".
func formatAgainst(v, bound float64) string {
	for n := 4; ; n++ {
		s := formatDigits(v, n)
		r, err := strconv.ParseFloat(s, 64)
		if n >= 17 || err != nil || (r < bound) == (v < bound) && (r > bound) == (v > bound) {
			return s
		}
	}
}
