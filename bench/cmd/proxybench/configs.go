package main

import (
	"bytes"
	"text/template"
)

// proxyAddrs are the addresses one proxy under test listens on and forwards to.
type proxyAddrs struct {
	// HTTP is the proxy's HTTP/1.1 listener, forwarding to Backend.
	HTTP string
	// GRPC is the proxy's h2c/gRPC listener, forwarding to App.
	GRPC string
	// Admin is the proxy's admin listener (sluice-proxy only).
	Admin string
	// Backend is the fast HTTP backend; App is the demo app (gRPC).
	Backend string
	App     string
	// Dir is a scratch directory for the proxy's files (nginx only).
	Dir string
}

// The configurations follow reference B.6b: one worker thread, keep-alive
// to the upstream, and no access logs.
var (
	haproxyTmpl = template.Must(template.New("haproxy").Parse(`global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always

frontend fe_http
    bind {{.HTTP}}
    default_backend be_http

backend be_http
    server backend {{.Backend}} maxconn 1000

frontend fe_grpc
    bind {{.GRPC}} proto h2
    default_backend be_grpc

backend be_grpc
    server app {{.App}} proto h2 maxconn 1000
`))

	nginxTmpl = template.Must(template.New("nginx").Parse(`daemon off;
worker_processes 1;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    # As haproxy: no limit on requests per connection (nginx's default of
    # 1000 sends HTTP/2 GOAWAY mid-run, which gRPC clients see as errors).
    keepalive_requests 1000000;
    client_body_temp_path {{.Dir}}/client_body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;

    upstream backend {
        server {{.Backend}};
        keepalive 256;
        keepalive_requests 1000000;
    }
    upstream app {
        server {{.App}};
        keepalive 256;
        keepalive_requests 1000000;
    }

    server {
        listen {{.HTTP}};
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }

    server {
        listen {{.GRPC}} http2;
        location / {
            grpc_pass grpc://app;
        }
    }
}
`))

	sluiceTmpl = template.Must(template.New("sluice").Parse(`admin: {{.Admin}}
inbound: {listen: "off"}
outbound: {listen: "off"}
listeners:
  - listen: {{.HTTP}}
    service: backend.default:80
  - listen: {{.GRPC}}
    service: app.default:80
table:
  services:
    - name: backend
      namespace: default
      port: 80
      endpoints:
        - address: {{.Backend}}
    - name: app
      namespace: default
      port: 80
      endpoints:
        - address: {{.App}}
`))
)

func render(t *template.Template, a proxyAddrs) []byte {
	var b bytes.Buffer
	if err := t.Execute(&b, a); err != nil {
		panic(err) // the templates are fixed; only a programming error fails
	}
	return b.Bytes()
}

func haproxyConfig(a proxyAddrs) []byte { return render(haproxyTmpl, a) }
func nginxConfig(a proxyAddrs) []byte   { return render(nginxTmpl, a) }
func sluiceConfig(a proxyAddrs) []byte  { return render(sluiceTmpl, a) }
