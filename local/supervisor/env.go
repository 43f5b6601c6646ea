package supervisor

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/mesh/api/routetable"
)

// ServicePort is one port of a Service that replicas of its namespace may
// call through their sidecar.
type ServicePort struct {
	Namespace, Name string
	// PortName is the port's name ("" for a Service's only, unnamed port).
	PortName string
	Port     int
	// Index is the port's position in the Service's ports: the first one
	// (0) is the one <NAME>_SERVICE_PORT gives.
	Index int
}

// Key is the service key the proxies know the port by ("name.ns:port").
func (p ServicePort) Key() string { return routetable.ServiceKey(p.Name, p.Namespace, p.Port) }

// EnvName turns a name into the form Kubernetes uses in environment
// variable names: upper case, dashes (and dots) to underscores.
func EnvName(name string) string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(name))
}

// ServiceEnv returns the variables that tell an application where the
// Services of its namespace are, as Kubernetes sets them, pointing at the
// sidecar's outbound listeners: for every Service <NAME>_SERVICE_HOST
// (127.0.0.1) and <NAME>_SERVICE_PORT (the listener of its first port), and
// <NAME>_SERVICE_PORT_<PORTNAME> for each named port. listeners maps service
// keys to local ports; ports without a listener are left out. The result is
// sorted.
func ServiceEnv(ports []ServicePort, listeners map[string]int) []string {
	var out []string
	firstDone := map[string]bool{}
	sorted := slices.Clone(ports)
	slices.SortFunc(sorted, func(a, b ServicePort) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return a.Index - b.Index
	})
	for _, p := range sorted {
		lp, ok := listeners[p.Key()]
		if !ok {
			continue
		}
		prefix := EnvName(p.Name)
		if !firstDone[p.Name] {
			firstDone[p.Name] = true
			out = append(out, prefix+"_SERVICE_HOST=127.0.0.1", prefix+"_SERVICE_PORT="+strconv.Itoa(lp))
		}
		if p.PortName != "" {
			out = append(out, prefix+"_SERVICE_PORT_"+EnvName(p.PortName)+"="+strconv.Itoa(lp))
		}
	}
	slices.Sort(out)
	return out
}

// Expand replaces $(VAR) references in s as Kubernetes does in env values,
// command and args: $(VAR) becomes VAR's value when lookup knows it and is
// left as written otherwise; $$ is an escaped $ (so $$(VAR) is the literal
// $(VAR)); any other $ is kept.
func Expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// EnvVar is one variable of a container's env, in order.
type EnvVar struct {
	Name string
	// Value may refer to earlier variables as $(NAME).
	Value string
	// FieldPath, when set, takes the value from the replica instead: one of
	// metadata.name, metadata.uid, spec.nodeName, status.podIP, status.podIPs,
	// status.hostIP, status.hostIPs (the supervisor fills these; other
	// downward-API fields are resolved before the workload is applied).
	FieldPath string
}

// podField returns the value of a per-replica downward-API field.
func podField(path, pod, uid string) (string, error) {
	switch path {
	case "metadata.name":
		return pod, nil
	case "metadata.uid":
		return uid, nil
	case "spec.nodeName":
		return "localhost", nil
	case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
		return "127.0.0.1", nil
	}
	return "", fmt.Errorf("field %q cannot be set by local mode", path)
}

// buildEnv is a replica's application environment, later entries winning:
// base (the supervisor's own), the Service variables, POD_NAME,
// POD_NAMESPACE and PORT, the container's env (expanded), and finally PORT,
// POD_NAME and POD_NAMESPACE again, which local mode needs to be right. It
// also returns the lookup that command and args are expanded with.
func buildEnv(base, serviceEnv []string, pod, namespace, uid string, port int, env []EnvVar) ([]string, func(string) (string, bool), error) {
	vals := map[string]string{}
	var order []string
	set := func(kv string) {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range base {
		set(kv)
	}
	// Only what Kubernetes would give the container is used for $(VAR).
	visible := map[string]string{}
	own := func(kv string) {
		set(kv)
		k, v, _ := strings.Cut(kv, "=")
		visible[k] = v
	}
	for _, kv := range serviceEnv {
		own(kv)
	}
	fixed := []string{"POD_NAME=" + pod, "POD_NAMESPACE=" + namespace, "PORT=" + strconv.Itoa(port)}
	for _, kv := range fixed {
		own(kv)
	}
	lookup := func(name string) (string, bool) { v, ok := visible[name]; return v, ok }
	for _, e := range env {
		v := Expand(e.Value, lookup)
		if e.FieldPath != "" {
			fv, err := podField(e.FieldPath, pod, uid)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			v = fv
		}
		own(e.Name + "=" + v)
	}
	for _, kv := range fixed {
		own(kv)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out, lookup, nil
}
