package up

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/sluicehq/sluice/local/manifest"
	"github.com/sluicehq/sluice/local/supervisor"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  annotations:
    config.sluice.dev/default-inbound-policy: all-authenticated
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, tier: front}
      annotations: {team: blue}
    spec:
      enableServiceLinks: false
      containers:
      - name: app
        command: [web-server]
        args: ["--port=$(PORT)"]
        workingDir: sub
        ports: [{name: http, containerPort: 8080}]
        env:
        - {name: A, value: "1"}
        - name: NS
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - name: TIER
          valueFrom: {fieldRef: {fieldPath: "metadata.labels['tier']"}}
        - name: TEAM
          valueFrom: {fieldRef: {fieldPath: "metadata.annotations['team']"}}
        - name: SA
          valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}
        - name: POD
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
`

func parseOne(t *testing.T, path, content string) manifest.Object {
	t.Helper()
	f := manifest.Parse(path, []byte(content))
	if len(f.Problems) > 0 || len(f.Objects) != 1 {
		t.Fatalf("parse: %v, %d objects", f.Problems, len(f.Objects))
	}
	return f.Objects[0]
}

func TestWorkloadOf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "web.yaml")
	o := parseOne(t, path, deployment)
	w, err := workloadOf(&o)
	if err != nil {
		t.Fatal(err)
	}
	if w.Namespace != "shop" || w.Name != "web" || w.Replicas != 1 || w.ServiceAccount != "default" {
		t.Errorf("workload = %+v", w)
	}
	if w.Dir != filepath.Join(filepath.Dir(path), "sub") {
		t.Errorf("Dir = %q, want the manifest's directory joined with workingDir", w.Dir)
	}
	if !slices.Equal(w.Command, []string{"web-server"}) || !slices.Equal(w.Args, []string{"--port=$(PORT)"}) {
		t.Errorf("command %q args %q", w.Command, w.Args)
	}
	if !w.NoServiceLinks || w.PortName != "http" || w.ContainerPort != 8080 || w.DefaultInboundPolicy != "all-authenticated" {
		t.Errorf("links %v port %q/%d policy %q", !w.NoServiceLinks, w.PortName, w.ContainerPort, w.DefaultInboundPolicy)
	}
	want := []supervisor.EnvVar{
		{Name: "A", Value: "1"},
		{Name: "NS", Value: "shop"},
		{Name: "TIER", Value: "front"},
		{Name: "TEAM", Value: "blue"},
		{Name: "SA", Value: "default"},
		{Name: "POD", FieldPath: "metadata.name"},
	}
	if !slices.Equal(w.Env, want) {
		t.Errorf("env = %+v\nwant %+v", w.Env, want)
	}
	if len(w.Revision) != 10 {
		t.Errorf("revision %q", w.Revision)
	}
}

func TestRevision(t *testing.T) {
	dir := t.TempDir()
	a := parseOne(t, filepath.Join(dir, "a.yaml"), deployment)
	b := parseOne(t, filepath.Join(dir, "b.yaml"), deployment+"  replicas: 3\n")
	c := parseOne(t, filepath.Join(dir, "c.yaml"), deployment[:len(deployment)-len("        - name: POD\n          valueFrom: {fieldRef: {fieldPath: metadata.name}}\n")])
	wa, _ := workloadOf(&a)
	wb, _ := workloadOf(&b)
	wc, _ := workloadOf(&c)
	if wa.Revision != wb.Revision {
		t.Errorf("scaling changed the revision: %s, %s", wa.Revision, wb.Revision)
	}
	if wb.Replicas != 3 {
		t.Errorf("replicas = %d", wb.Replicas)
	}
	if wa.Revision == wc.Revision {
		t.Errorf("a template change kept the revision %s", wa.Revision)
	}
}
