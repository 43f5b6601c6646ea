package routing

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenResult is what a golden file holds for one client namespace.
type goldenResult struct {
	ClientNamespace string            `json:"clientNamespace"`
	Rules           []routetable.Rule `json:"rules"`
	Errors          []string          `json:"errors"`
}

func TestCompileGolden(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "realistic.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	routes := parseRoutes(t, string(src))
	svc := ServicePort{Name: "podinfo", Namespace: "test", Port: 9898, PortName: "http", ClusterIPs: []string{"10.96.0.42"}, AppProtocol: "http"}
	var results []goldenResult
	for _, client := range []string{"", "frontend"} {
		rules, errs := Compile(svc, routes, client)
		results = append(results, goldenResult{ClientNamespace: client, Rules: rules, Errors: errStrings(errs)})
	}
	got, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')

	// The compiled rules must survive a round trip through the JSON the proxy reads.
	var back []goldenResult
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("golden JSON does not read back: %v", err)
	}
	again, _ := json.MarshalIndent(back, "", "  ")
	if !bytes.Equal(append(again, '\n'), got) {
		t.Fatal("JSON round trip changed the rules")
	}

	path := filepath.Join("testdata", "realistic.golden.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./routing -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("compiled rules differ from %s (rerun with -update if intended):\n%s", path, got)
	}
}
