package detect

import (
	"slices"
	"testing"
)

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		str     string
		wantErr string
	}{
		{in: "", want: nil, str: ""},
		{in: " , ", want: nil, str: ""},
		{in: "80", want: []int{80}, str: "80"},
		{in: "25,587,8000-8003", want: []int{25, 587, 8000, 8001, 8002, 8003}, str: "25,587,8000-8003"},
		{in: " 3306 , 1-3,65535", want: []int{1, 2, 3, 3306, 65535}, str: "1-3,3306,65535"},
		{in: "5-5,5", want: []int{5}, str: "5"},
		{in: "63,64,65", want: []int{63, 64, 65}, str: "63-65"},
		{in: "0", wantErr: `ports "0": invalid port "0": must be a number from 1 to 65535`},
		{in: "65536", wantErr: `ports "65536": invalid port "65536": must be a number from 1 to 65535`},
		{in: "80,http", wantErr: `ports "80,http": invalid port "http": must be a number from 1 to 65535`},
		{in: "10-", wantErr: `ports "10-": invalid port "": must be a number from 1 to 65535`},
		{in: "10-5", wantErr: `ports "10-5": range "10-5" ends before it starts`},
		{in: "-3", wantErr: `ports "-3": invalid port "": must be a number from 1 to 65535`},
	}
	for _, tt := range tests {
		p, err := ParsePorts(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParsePorts(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePorts(%q): %v", tt.in, err)
			continue
		}
		if got := p.Ports(); !slices.Equal(got, tt.want) {
			t.Errorf("ParsePorts(%q).Ports() = %v, want %v", tt.in, got, tt.want)
		}
		if p.Len() != len(tt.want) {
			t.Errorf("ParsePorts(%q).Len() = %d, want %d", tt.in, p.Len(), len(tt.want))
		}
		if got := p.String(); got != tt.str {
			t.Errorf("ParsePorts(%q).String() = %q, want %q", tt.in, got, tt.str)
		}
		for port := -1; port <= 70000; port++ {
			if p.Has(port) != slices.Contains(tt.want, port) {
				t.Fatalf("ParsePorts(%q).Has(%d) = %v", tt.in, port, p.Has(port))
			}
		}
	}
}

func TestNewPortSet(t *testing.T) {
	p := NewPortSet(append([]int{0, -1, 70000}, DefaultOpaquePorts...)...)
	if got := p.Ports(); !slices.Equal(got, DefaultOpaquePorts) {
		t.Errorf("Ports() = %v, want %v", got, DefaultOpaquePorts)
	}
	if got := p.String(); got != "25,587,3306,4444,5432,6379,9300,11211" {
		t.Errorf("String() = %q", got)
	}
	var zero PortSet
	if zero.Has(80) || zero.Len() != 0 || zero.Ports() != nil || zero.String() != "" {
		t.Error("the zero PortSet is not empty")
	}
}

func BenchmarkPortSetHas(b *testing.B) {
	p := NewPortSet(DefaultOpaquePorts...)
	n := 0
	for i := range b.N {
		if p.Has(i & 0xffff) {
			n++
		}
	}
	_ = n
}
