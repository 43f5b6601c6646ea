package metrics_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/sluicehq/sluice/proxy/metrics"
)

// fill records a known set of series: two HTTP handles (one gRPC), a response
// without a status code and with an error, a TCP handle with both close
// classifications, a counter, a gauge with awkward help text, and a gauge callback.
func fill(r *metrics.Registry) {
	in := r.HTTP("inbound", metrics.Labels{{"authority", "web"}, {"tls", "true"}})
	in.Request()
	in.Request()
	in.Response(200, -1, false, "", 1500*time.Microsecond)
	in.Response(200, -1, false, "", 5*time.Millisecond)
	in.Response(0, -1, true, "loadshed", 25*time.Millisecond)
	out := r.HTTP("outbound", metrics.Labels{{"dst_service", "api"}})
	out.Request()
	out.Response(200, 14, true, "", 70*time.Second)
	tc := r.TCP("inbound", metrics.Labels{{"peer", "src"}})
	tc.Open()
	tc.Open()
	tc.Open()
	tc.Close()
	tc.CloseWith(true)
	tc.AddRead(100)
	tc.AddWrite(42)
	r.Counter("inbound_http_authz_allow_total", "Authorized requests.", metrics.Labels{{"srv_name", "web"}}).Add(3)
	r.Gauge("control_identity_cert_expiration_timestamp_seconds", "Expiry of the\ncert, \\ in seconds.", nil).Set(1.7e9)
	r.GaugeFunc("outbound_http_balancer_endpoints", "Endpoints.", func(emit func(metrics.Labels, float64)) {
		emit(metrics.Labels{{"endpoint_state", "ready"}}, 2)
		emit(metrics.Labels{{"endpoint_state", "pending"}}, 0.5)
	})
}

func staticLabels() metrics.Labels {
	return metrics.Labels{{"namespace", "shop"}, {"pod", "web-0"}}
}

func TestWriteTextGolden(t *testing.T) {
	r := metrics.NewRegistry(staticLabels())
	fill(r)
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatalf("WriteText: %v", err)
	}
	if diff := lineDiff(golden, b.String()); diff != "" {
		t.Errorf("WriteText output differs from golden:\n%s", diff)
	}
	// A second scrape of unchanged series is identical: the order is stable.
	var again bytes.Buffer
	if err := r.WriteText(&again); err != nil {
		t.Fatalf("WriteText: %v", err)
	}
	if again.String() != b.String() {
		t.Errorf("second scrape differs from the first")
	}
}

const golden = `# HELP control_identity_cert_expiration_timestamp_seconds Expiry of the\ncert, \\ in seconds.
# TYPE control_identity_cert_expiration_timestamp_seconds gauge
control_identity_cert_expiration_timestamp_seconds{namespace="shop",pod="web-0"} 1700000000
# HELP inbound_http_authz_allow_total Authorized requests.
# TYPE inbound_http_authz_allow_total counter
inbound_http_authz_allow_total{srv_name="web",namespace="shop",pod="web-0"} 3
# HELP outbound_http_balancer_endpoints Endpoints.
# TYPE outbound_http_balancer_endpoints gauge
outbound_http_balancer_endpoints{endpoint_state="pending",namespace="shop",pod="web-0"} 0.5
outbound_http_balancer_endpoints{endpoint_state="ready",namespace="shop",pod="web-0"} 2
# HELP request_total Total count of HTTP requests.
# TYPE request_total counter
request_total{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0"} 2
request_total{direction="outbound",dst_service="api",namespace="shop",pod="web-0"} 1
# HELP response_latency_ms Elapsed times between a request's headers being received and its response's headers being sent, in milliseconds.
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="1"} 0
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="2"} 0
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="3"} 0
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="4"} 0
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="5"} 0
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="10"} 0
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="20"} 0
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="30"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="40"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="50"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="100"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="200"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="300"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="400"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="500"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="1000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="2000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="3000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="4000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="5000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="10000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="20000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="30000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="40000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="50000"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0",le="+Inf"} 1
response_latency_ms_sum{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0"} 25
response_latency_ms_count{direction="inbound",authority="web",tls="true",namespace="shop",pod="web-0"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="1"} 0
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="2"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="3"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="4"} 1
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="5"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="10"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="20"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="30"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="40"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="50"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="100"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="200"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="300"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="400"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="500"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="1000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="2000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="3000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="4000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="5000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="10000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="20000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="30000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="40000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="50000"} 2
response_latency_ms_bucket{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0",le="+Inf"} 2
response_latency_ms_sum{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0"} 6.5
response_latency_ms_count{direction="inbound",authority="web",tls="true",status_code="200",namespace="shop",pod="web-0"} 2
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="1"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="2"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="3"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="4"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="5"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="10"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="20"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="30"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="40"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="50"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="100"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="200"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="300"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="400"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="500"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="1000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="2000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="3000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="4000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="5000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="10000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="20000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="30000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="40000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="50000"} 0
response_latency_ms_bucket{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0",le="+Inf"} 1
response_latency_ms_sum{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0"} 70000
response_latency_ms_count{direction="outbound",dst_service="api",status_code="200",namespace="shop",pod="web-0"} 1
# HELP response_total Total count of HTTP responses.
# TYPE response_total counter
response_total{direction="inbound",authority="web",tls="true",classification="failure",error="loadshed",namespace="shop",pod="web-0"} 1
response_total{direction="inbound",authority="web",tls="true",status_code="200",classification="success",namespace="shop",pod="web-0"} 2
response_total{direction="outbound",dst_service="api",status_code="200",classification="failure",grpc_status="14",namespace="shop",pod="web-0"} 1
# HELP tcp_close_total Total count of closed connections.
# TYPE tcp_close_total counter
tcp_close_total{direction="inbound",peer="src",classification="failure",namespace="shop",pod="web-0"} 1
tcp_close_total{direction="inbound",peer="src",classification="success",namespace="shop",pod="web-0"} 1
# HELP tcp_open_connections Number of currently open connections.
# TYPE tcp_open_connections gauge
tcp_open_connections{direction="inbound",peer="src",namespace="shop",pod="web-0"} 1
# HELP tcp_open_total Total count of opened connections.
# TYPE tcp_open_total counter
tcp_open_total{direction="inbound",peer="src",namespace="shop",pod="web-0"} 3
# HELP tcp_read_bytes_total Total count of bytes read from peers.
# TYPE tcp_read_bytes_total counter
tcp_read_bytes_total{direction="inbound",peer="src",namespace="shop",pod="web-0"} 100
# HELP tcp_write_bytes_total Total count of bytes written to peers.
# TYPE tcp_write_bytes_total counter
tcp_write_bytes_total{direction="inbound",peer="src",namespace="shop",pod="web-0"} 42
`
