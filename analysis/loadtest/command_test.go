package loadtest_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/analysis/loadtest"
)

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		cmd     string
		want    loadtest.Spec
		wantErr string
	}{
		// Flagger's documented load test.
		{cmd: "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/", want: loadtest.Spec{
			Kind: "http", URL: "http://podinfo-canary.test:9898/", Method: "GET", Concurrency: 2, Rate: 20,
			Duration: time.Minute, Timeout: 20 * time.Second, Insecure: true,
			Headers: map[string]string{"Content-Type": "text/html"},
		}},
		{cmd: `hey -z=30s -q=5 -c=4 -m POST -d '{"a": 1}' -T application/json -H "X-Canary: always" -H 'X-Multi: a' -H 'X-Multi: b' -A '*/*' -a user:pass -t 3 -host podinfo.example.com -h2 --disable-keepalive -disable-compression -disable-redirects -o csv -cpus 2 https://podinfo:9898/api/echo`,
			want: loadtest.Spec{
				Kind: "http", URL: "https://podinfo:9898/api/echo", Method: "POST", Concurrency: 4, Rate: 20,
				Duration: 30 * time.Second, Timeout: 3 * time.Second, Body: `{"a": 1}`, Host: "podinfo.example.com",
				Insecure: true, HTTP2: true, DisableKeepAlives: true, DisableCompression: true, DisableRedirects: true,
				Headers: map[string]string{
					"Content-Type": "application/json", "X-Canary": "always", "X-Multi": "a, b", "Accept": "*/*",
					"Authorization": "Basic dXNlcjpwYXNz",
				},
			}},
		{cmd: "/usr/local/bin/hey -n 100 -c 10 http://x/", want: loadtest.Spec{
			Kind: "http", URL: "http://x/", Method: "GET", Concurrency: 10, Requests: 100, Timeout: 20 * time.Second, Insecure: true,
			Headers: map[string]string{"Content-Type": "text/html"},
		}},
		{cmd: "hey http://x/", want: loadtest.Spec{
			Kind: "http", URL: "http://x/", Method: "GET", Concurrency: 50, Requests: 200, Timeout: 20 * time.Second, Insecure: true,
			Headers: map[string]string{"Content-Type": "text/html"},
		}},
		// Flagger's gRPC example, with single-dash long flags (older ghz).
		{cmd: "ghz -z 1m -q 10 -i /tmp/ghz/protos -proto /tmp/ghz/protos/grpc_health.proto -call grpc.health.v1.Health/Check --insecure podinfo-canary.test:9999",
			want: loadtest.Spec{Kind: "grpc", URL: "podinfo-canary.test:9999", Method: "grpc.health.v1.Health/Check", Concurrency: 50, Rate: 10,
				Duration: time.Minute, Timeout: 20 * time.Second}},
		{cmd: `ghz --insecure --call=grpc.testing.TestService.UnaryCall -d '{"responseSize": 10}' -m '{"x-canary": "yes"}' -n 500 -c 5 --rps 50 -t 2s -x 20s --authority podinfo --connections 2 --name smoke 127.0.0.1:8080`,
			want: loadtest.Spec{Kind: "grpc", URL: "127.0.0.1:8080", Method: "grpc.testing.TestService.UnaryCall", Concurrency: 5, Rate: 50,
				Requests: 500, Duration: 20 * time.Second, Timeout: 2 * time.Second, Body: `{"responseSize": 10}`, Host: "podinfo",
				Headers: map[string]string{"x-canary": "yes"}}},
		{cmd: "ghz --skipTLS --call a.B/C -z 10s -x 5s h:1", want: loadtest.Spec{Kind: "grpc", URL: "h:1", Method: "a.B/C", Concurrency: 50,
			Duration: 5 * time.Second, Timeout: 20 * time.Second, TLS: true, Insecure: true}},

		{cmd: "", wantErr: "command is empty"},
		{cmd: "curl http://x/", wantErr: "curl is not supported: the built-in load tester understands hey and ghz"},
		{cmd: "hey -z 1m http://x/ | tee out", wantErr: `shell syntax "|" is not supported`},
		{cmd: "hey -z 1m http://x/ && hey http://y/", wantErr: `shell syntax "&"`},
		{cmd: "hey -z $DURATION http://x/", wantErr: `shell syntax "$"`},
		{cmd: `hey -z "$(date)" http://x/`, wantErr: "shell substitution"},
		{cmd: "hey -z 1m 'http://x/", wantErr: "unterminated single quote"},
		{cmd: "hey -y 1 http://x/", wantErr: "hey flag -y is not supported"},
		{cmd: "hey -D body.json http://x/", wantErr: "a body file is not supported"},
		{cmd: "hey -z soon http://x/", wantErr: `hey flag -z "soon": not a duration`},
		{cmd: "hey -z 1m", wantErr: "hey needs exactly one URL, got 0"},
		{cmd: "hey -z 1m http://x/ http://y/", wantErr: "hey needs exactly one URL, got 2"},
		{cmd: "hey -n 5 -c 10 http://x/", wantErr: "-n cannot be less than -c"},
		{cmd: "hey -H nocolon http://x/", wantErr: `not a "Name: value" header`},
		{cmd: "hey -c", wantErr: "hey flag -c needs a value"},
		{cmd: "ghz --insecure -n 10 h:1", wantErr: "ghz needs --call"},
		{cmd: "ghz --insecure --call a.B/C -n 10", wantErr: "ghz needs exactly one target"},
		{cmd: "ghz --insecure --call a.B/C -D data.json h:1", wantErr: "only -d/--data"},
		{cmd: "ghz --insecure --call a.B/C -d '[{}, {}]' h:1", wantErr: "JSON array"},
		{cmd: "ghz --insecure --call a.B/C -m 'x=y' h:1", wantErr: "ghz -m is not a JSON object"},
		{cmd: "ghz --cacert ca.pem --call a.B/C h:1", wantErr: "custom CAs are not supported"},
		{cmd: "ghz --load-schedule=step --call a.B/C h:1", wantErr: "ghz flag --load-schedule=step is not supported"},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			got, err := loadtest.ParseCommand(tc.cmd)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("parsed as %+v, want an error", got)
				}
				if !errors.Is(err, loadtest.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %q does not contain %q (or is not ErrInvalid)", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

// TestParseCommandQuoting covers the shell word splitting.
func TestParseCommandQuoting(t *testing.T) {
	for cmd, body := range map[string]string{
		`hey -d 'a b' http://x/`:            "a b",
		`hey -d "a \"b\" \\ c" http://x/`:   `a "b" \ c`,
		`hey -d a\ b http://x/`:             "a b",
		`hey -d 'it'"'"'s' http://x/`:       "it's",
		`hey -d "" http://x/`:               "",
		"hey \\\n -d x \\\n http://x/":      "x",
		`hey -d '{"k": "$v|&;"}' http://x/`: `{"k": "$v|&;"}`,
	} {
		spec, err := loadtest.ParseCommand(cmd)
		if err != nil {
			t.Errorf("%s: %v", cmd, err)
			continue
		}
		if spec.Body != body || spec.URL != "http://x/" {
			t.Errorf("%s: body %q url %q, want %q http://x/", cmd, spec.Body, spec.URL, body)
		}
	}
}
