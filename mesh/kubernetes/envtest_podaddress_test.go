package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
	"github.com/sluicehq/sluice/mesh/destination"
)

// testPodAddresses checks, through the destination API over the Source on a
// real API server, what a proxy hears about a pod address: the meshed pod's
// identity, none for an unmeshed pod or a pod on the host's network, no
// endpoints once the pod is deleted, and the identity of the pod that gets
// the IP next.
func (s *apiServer) testPodAddresses(t *testing.T) {
	ctx := context.Background()
	const ns = "pods"
	s.namespace(t, ns)
	for _, sa := range []string{"db", "cache"} {
		s.create(t, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
	}
	db := s.runningPod(t, ns, "db", "5d8f", "db", "10.2.0.1", true)
	s.runningPod(t, ns, "legacy", "1a2b", "default", "10.2.0.2", false)
	host := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "agent"},
		Spec: corev1.PodSpec{
			HostNetwork:        true,
			ServiceAccountName: "db",
			InitContainers: []corev1.Container{{
				Name: ProxyContainerName, Image: "sluice-proxy", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways),
			}},
			Containers: []corev1.Container{{Name: "agent", Image: "agent"}},
		},
	}
	s.create(t, host)
	host.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.2.0.3", PodIPs: []corev1.PodIP{{IP: "10.2.0.3"}}}
	if err := s.c.Status().Update(ctx, host); err != nil {
		t.Fatalf("set the status of pod %s/%s: %v", ns, host.Name, err)
	}

	eventually(t, s.src, "the pods in the Source's cache", func() (bool, string) {
		var missing []string
		for _, name := range []string{db.Name, "legacy-1a2b-x", host.Name} {
			if p := s.src.pod(ns, name); p == nil || p.Status.PodIP == "" {
				missing = append(missing, name)
			}
		}
		return len(missing) == 0, fmt.Sprintf("missing %q", missing)
	})

	client := startDestination(t, s.src)
	streamCtx, cancel := context.WithTimeout(ctx, waitTimeout)
	t.Cleanup(cancel)
	watch := func(target string) grpc.ServerStreamingClient[meshv1.EndpointUpdate] {
		t.Helper()
		st, err := client.GetEndpoints(streamCtx, &meshv1.GetDestination{Service: target, ClientNamespace: "client"})
		if err != nil {
			t.Fatalf("GetEndpoints(%s): %v", target, err)
		}
		return st
	}
	// next waits for the stream's answer to be want, skipping the answers
	// before it (the Source catches up with the objects just written).
	next := func(st grpc.ServerStreamingClient[meshv1.EndpointUpdate], target, want string) {
		t.Helper()
		var saw []string
		for {
			u, err := st.Recv()
			if err != nil {
				t.Fatalf("%s: stream ended (%v) before %s; saw %q", target, err, want, saw)
			}
			got := describeUpdate(u)
			if got == want {
				return
			}
			saw = append(saw, got)
		}
	}

	const dbID = "db.pods.serviceaccount.identity.sluice.cluster.local"
	const cacheID = "cache.pods.serviceaccount.identity.sluice.cluster.local"
	// The Source holds every pod: the first answer is the whole truth.
	for target, want := range map[string]string{
		"10.2.0.2:8080": "add 10.2.0.2:8080 id= pod=legacy-1a2b-x", // unmeshed: plain text
		"10.2.0.3:4191": "none exists=false",                       // host network: never an identity
		"10.2.0.9:8080": "none exists=false",                       // nobody's
	} {
		u, err := watch(target).Recv()
		if err != nil {
			t.Fatalf("GetEndpoints(%s): %v", target, err)
		}
		if got := describeUpdate(u); got != want {
			t.Errorf("GetEndpoints(%s) answered %q, want %q", target, got, want)
		}
	}

	dbStream := watch("10.2.0.1:8080")
	if u, err := dbStream.Recv(); err != nil || describeUpdate(u) != "add 10.2.0.1:8080 id="+dbID+" pod=db-5d8f-x" {
		t.Fatalf("GetEndpoints(10.2.0.1:8080) answered %q (%v), want the meshed pod with identity %s", describeUpdate(u), err, dbID)
	}

	// The pod is deleted: its address has no endpoints.
	if err := s.kube.CoreV1().Pods(ns).Delete(ctx, db.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	next(dbStream, "10.2.0.1:8080", "none exists=false")

	// Another pod, of another service account, gets the IP.
	s.runningPod(t, ns, "cache", "9e8d", "cache", "10.2.0.1", true)
	next(dbStream, "10.2.0.1:8080", "add 10.2.0.1:8080 id="+cacheID+" pod=cache-9e8d-x")
}

// startDestination serves the destination API over src on a loopback port
// until the test ends, and returns a client of it.
func startDestination(t *testing.T, src destination.Source) meshv1.DestinationClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	dest := destination.NewServer(src, slog.New(slog.DiscardHandler))
	meshv1.RegisterDestinationServer(srv, dest)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		dest.Close()
		srv.Stop()
		<-served
	})
	return meshv1.NewDestinationClient(conn)
}

// describeUpdate is an endpoint update in short: "add addr id=… pod=…"
// for each endpoint added, "remove addr", or "none exists=…".
func describeUpdate(u *meshv1.EndpointUpdate) string {
	switch x := u.GetUpdate().(type) {
	case *meshv1.EndpointUpdate_Add:
		out := "add"
		for i, e := range x.Add.GetEndpoints() {
			if i > 0 {
				out += ";"
			}
			out += fmt.Sprintf(" %s id=%s pod=%s", e.GetAddress(), e.GetIdentity(), e.GetLabels()["pod"])
		}
		return out
	case *meshv1.EndpointUpdate_Remove:
		return fmt.Sprintf("remove %v", x.Remove.GetAddresses())
	case *meshv1.EndpointUpdate_NoEndpoints:
		return fmt.Sprintf("none exists=%v", x.NoEndpoints.GetExists())
	}
	return fmt.Sprintf("%v", u)
}
