package routing

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

func TestProtocolOf(t *testing.T) {
	tests := map[string]routetable.Protocol{
		"":                  routetable.ProtocolDetect,
		"http":              routetable.ProtocolHTTP1,
		"HTTP":              routetable.ProtocolHTTP1,
		"kubernetes.io/h2c": routetable.ProtocolHTTP2,
		"grpc":              routetable.ProtocolGRPC,
		"linkerd.io/opaque": routetable.ProtocolOpaque,
		"tcp":               routetable.ProtocolOpaque,
		"https":             routetable.ProtocolOpaque,
	}
	for in, want := range tests {
		if got := ProtocolOf(in); got != want {
			t.Errorf("ProtocolOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestServicePortsOf(t *testing.T) {
	h2c := "kubernetes.io/h2c"
	tests := []struct {
		name string
		svc  corev1.Service
		want []ServicePort
	}{
		{
			name: "dual stack, TCP ports only, first duplicate wins",
			svc: corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
				Spec: corev1.ServiceSpec{
					ClusterIP:  "10.96.0.20",
					ClusterIPs: []string{"10.96.0.20", "fd00::20"},
					Ports: []corev1.ServicePort{
						{Name: "http", Port: 80},
						{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
						{Name: "h2", Port: 8080, Protocol: corev1.ProtocolTCP, AppProtocol: &h2c},
						{Name: "again", Port: 80, Protocol: corev1.ProtocolTCP},
					},
				},
			},
			want: []ServicePort{
				{Name: "web", Namespace: "shop", Port: 80, PortName: "http", ClusterIPs: []string{"10.96.0.20", "fd00::20"}},
				{Name: "web", Namespace: "shop", Port: 8080, PortName: "h2", ClusterIPs: []string{"10.96.0.20", "fd00::20"}, AppProtocol: h2c},
			},
		},
		{
			name: "headless",
			svc: corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"},
				Spec: corev1.ServiceSpec{
					ClusterIP: "None",
					Ports:     []corev1.ServicePort{{Port: 5432}},
				},
			},
			want: []ServicePort{{Name: "db", Namespace: "shop", Port: 5432}},
		},
		{
			name: "clusterIP only, mapped address unmapped",
			svc: corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"},
				Spec: corev1.ServiceSpec{
					ClusterIP: "::ffff:10.0.0.1",
					Ports:     []corev1.ServicePort{{Port: 9090}},
				},
			},
			want: []ServicePort{{Name: "api", Namespace: "shop", Port: 9090, ClusterIPs: []string{"10.0.0.1"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ServicePortsOf(&tt.svc)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ServicePortsOf = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestVirtualAddresses(t *testing.T) {
	sp := ServicePort{Port: 8080, ClusterIPs: []string{"10.96.0.20", "fd00::20"}}
	want := []string{"10.96.0.20:8080", "[fd00::20]:8080"}
	if got := sp.VirtualAddresses(); !reflect.DeepEqual(got, want) {
		t.Errorf("VirtualAddresses = %q, want %q", got, want)
	}
	if got := (ServicePort{Port: 80}).VirtualAddresses(); got != nil {
		t.Errorf("VirtualAddresses without cluster IPs = %q, want none", got)
	}
}
