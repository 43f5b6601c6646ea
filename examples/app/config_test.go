package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    func(c *config)
		wantErr string
	}{
		{
			name: "defaults",
			env:  map[string]string{"POD_NAME": "p"},
			want: func(c *config) {},
		},
		{
			name: "env sets values whose flags are defaults",
			env: map[string]string{
				"POD_NAME": "p", "SERVICE_NAME": "podinfo", "VERSION": "v2", "ERROR_RATE": "0.25",
				"LATENCY": "300ms", "LATENCY_JITTER": "50ms", "PORT": "9898",
				"BACKEND_SERVICE_HOST": "10.0.0.7", "BACKEND_SERVICE_PORT": "80",
			},
			want: func(c *config) {
				c.Name, c.Version, c.ErrorRate = "podinfo", "v2", 0.25
				c.Latency, c.LatencyJitter = 300*time.Millisecond, 50*time.Millisecond
				c.Listen, c.Backend = ":9898", "http://10.0.0.7:80"
			},
		},
		{
			name: "explicit flags win over env",
			args: []string{"--version", "v3", "--error-rate", "0.5", "--listen", "127.0.0.1:7000", "--backend", "b:81", "--latency", "1s"},
			env: map[string]string{
				"POD_NAME": "p", "VERSION": "v2", "ERROR_RATE": "0.25", "PORT": "9898", "LATENCY": "2s",
				"BACKEND_SERVICE_HOST": "10.0.0.7", "BACKEND_SERVICE_PORT": "80",
			},
			want: func(c *config) {
				c.Version, c.ErrorRate, c.Listen, c.Backend, c.Latency = "v3", 0.5, "127.0.0.1:7000", "http://b:81", time.Second
			},
		},
		{
			name: "flag equal to its default still wins",
			args: []string{"--version=v1"},
			env:  map[string]string{"POD_NAME": "p", "VERSION": "v9"},
			want: func(c *config) {},
		},
		{
			name: "PORT with a host",
			env:  map[string]string{"POD_NAME": "p", "PORT": "127.0.0.1:1234"},
			want: func(c *config) { c.Listen = "127.0.0.1:1234" },
		},
		{
			name: "backend URL keeps scheme, drops trailing slash",
			args: []string{"--backend", "http://svc.ns:8080/"},
			env:  map[string]string{"POD_NAME": "p"},
			want: func(c *config) { c.Backend = "http://svc.ns:8080" },
		},
		{name: "error rate above 1", args: []string{"--error-rate", "1.5"}, wantErr: "outside 0..1"},
		{name: "error rate from env below 0", env: map[string]string{"ERROR_RATE": "-0.1"}, wantErr: "outside 0..1"},
		{name: "bad env float", env: map[string]string{"ERROR_RATE": "lots"}, wantErr: "ERROR_RATE"},
		{name: "bad env duration", env: map[string]string{"LATENCY": "300"}, wantErr: "LATENCY"},
		{name: "negative latency", args: []string{"--latency", "-1s"}, wantErr: "negative"},
		{name: "bad PORT", env: map[string]string{"PORT": "http"}, wantErr: "PORT"},
		{name: "backend host without port", env: map[string]string{"BACKEND_SERVICE_HOST": "x"}, wantErr: "both must be set"},
		{name: "https backend", args: []string{"--backend", "https://x:1"}, wantErr: "want host:port"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			got, err := parseConfig(tc.args, getenv, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := config{Name: "demo", Version: "v1", Listen: ":8080", Pod: "p", ShutdownTimeout: 10 * time.Second}
			tc.want(&want)
			if got != want {
				t.Errorf("config =\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func TestParseConfigHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseConfig([]string{"-h"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(out.String(), "-error-rate") {
		t.Errorf("usage does not list flags: %q", out.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a poller.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRunServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs lockedBuffer
	env := map[string]string{"VERSION": "v5", "PORT": "127.0.0.1:0", "POD_NAME": "p"}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &logs) }()

	addrRE := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; {
		if m := addrRE.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v; logs: %s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no serving log line: %s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := do(t, newClient(t), "GET", "http://"+addr+"/", nil, nil)
	if r.status != 200 || r.header.Get("X-Version") != "v5" {
		t.Errorf("GET / = %d, x-version %q", r.status, r.header.Get("X-Version"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	if _, err := http.Get("http://" + addr + "/"); err == nil {
		t.Error("still serving after run returned")
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	err := run(context.Background(), []string{"--error-rate", "2"}, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "error rate") {
		t.Errorf("run = %v, want an error rate error", err)
	}
}
