package v1beta1

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Number is a JSON number, integer or decimal, such as a threshold (99,
// 0.5) or a measured value.
//
// It is a float64 that marshals as a plain JSON number; it exists as its own
// type because the CRD generator refuses bare Go floats. NaN and infinities
// cannot be written: a measurement without a value is left unset instead.
//
// +kubebuilder:validation:Type=number
type Number float64

// NewNumber returns a pointer to f as a Number, for optional fields.
func NewNumber(f float64) *Number {
	n := Number(f)
	return &n
}

// Float64 returns n as a float64.
func (n Number) Float64() float64 { return float64(n) }

// String formats n in the shortest form that reads back to the same value.
func (n Number) String() string { return strconv.FormatFloat(float64(n), 'f', -1, 64) }

// MarshalJSON writes n as a JSON number.
func (n Number) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("number %v cannot be written as JSON", f)
	}
	return json.Marshal(f)
}

// UnmarshalJSON reads a JSON number into n; a string or any other JSON type
// is an error.
func (n *Number) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("want a number, got %s: %w", b, err)
	}
	*n = Number(f)
	return nil
}
