package main

import (
	"bytes"
	"strings"
	"testing"
)

// These tests only use --dry-run or invalid flags: nothing here may run
// iptables in the host's network namespace. test/netns runs the real thing.

func TestInitDryRun(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    []string // lines that must appear
		notWant []string
	}{
		{
			name: "defaults",
			args: []string{"--dry-run", "--iptables-mode", "nft"},
			want: []string{
				"iptables-nft -w -t nat -A SLUICE_PROXY_INBOUND -p tcp --dport 4191 -j RETURN -m comment --comment sluice-proxy/ignore-admin-port",
				"iptables-nft -w -t nat -A SLUICE_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143 -m comment --comment sluice-proxy/redirect-inbound",
				"iptables-nft -w -t nat -A SLUICE_PROXY_OUTBOUND -m owner --uid-owner 2102 -j RETURN -m comment --comment sluice-proxy/ignore-proxy-uid",
				"iptables-nft -w -t nat -A SLUICE_PROXY_OUTBOUND -p tcp -j REDIRECT --to-ports 4140 -m comment --comment sluice-proxy/redirect-outbound",
			},
			notWant: []string{"ip6tables"},
		},
		{
			name: "flags",
			args: []string{"--dry-run", "--iptables-mode=legacy", "--ipv6", "--proxy-uid=1337", "--inbound-port=15006",
				"--outbound-port=15001", "--admin-port=15020", "--inbound-ports-to-ignore=25", "--outbound-ports-to-ignore=443,9000-9010",
				"--subnets-to-ignore=10.96.0.0/12,fd00::/8"},
			want: []string{
				"iptables-legacy -w -t nat -A SLUICE_PROXY_OUTBOUND -m owner --uid-owner 1337 -j RETURN",
				"iptables-legacy -w -t nat -A SLUICE_PROXY_INBOUND -p tcp -m multiport --dports 25 -j RETURN",
				"iptables-legacy -w -t nat -A SLUICE_PROXY_OUTBOUND -p tcp -m multiport --dports 443,9000:9010 -j RETURN",
				"iptables-legacy -w -t nat -A SLUICE_PROXY_OUTBOUND -d 10.96.0.0/12 -j RETURN",
				"ip6tables-legacy -w -t nat -A SLUICE_PROXY_OUTBOUND -d fd00::/8 -j RETURN",
				"ip6tables-legacy -w -t nat -A SLUICE_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 15006",
			},
			notWant: []string{"iptables-legacy -w -t nat -A SLUICE_PROXY_OUTBOUND -d fd00::/8"},
		},
		{
			name: "environment, command line wins",
			args: []string{"--dry-run", "--proxy-uid=3000"},
			env:  map[string]string{"SLUICE_INIT_PROXY_UID": "1000", "SLUICE_INIT_OUTBOUND_PORTS_TO_IGNORE": "5432", "SLUICE_INIT_IPTABLES_MODE": "legacy"},
			want: []string{
				"iptables-legacy -w -t nat -A SLUICE_PROXY_OUTBOUND -m owner --uid-owner 3000 -j RETURN",
				"--dports 5432 -j RETURN",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string { return tc.env[k] }
			if code := runInit(tc.args, getenv, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
			}
			out := stdout.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestInitBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad port", []string{"--dry-run", "--outbound-ports-to-ignore=44x"}, nil, `--outbound-ports-to-ignore: port "44x"`},
		{"bad subnet", []string{"--dry-run", "--subnets-to-ignore=10.0.0.0"}, nil, `--subnets-to-ignore: subnet "10.0.0.0"`},
		{"bad mode", []string{"--dry-run", "--iptables-mode=bpf"}, nil, `--iptables-mode: iptables mode "bpf"`},
		{"ipv6 subnet", []string{"--dry-run", "--subnets-to-ignore=fd00::/8"}, nil, "fd00::/8 is IPv6"},
		{"uid 0", []string{"--dry-run", "--proxy-uid=0"}, nil, "proxy UID 0"},
		{"bad env", []string{"--dry-run"}, map[string]string{"SLUICE_INIT_PROXY_UID": "proxy"}, `SLUICE_INIT_PROXY_UID="proxy"`},
		{"extra args", []string{"--dry-run", "now"}, nil, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string { return tc.env[k] }
			if code := runInit(tc.args, getenv, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed commands despite the error:\n%s", stdout.String())
			}
		})
	}
}
