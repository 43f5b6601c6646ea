package up

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/local/supervisor"
)

// printer writes what people read, one message at a time.
type printer struct {
	mu sync.Mutex
	w  io.Writer
	// tailShown remembers the processes whose log tail was shown, so that a
	// crash loop shows it once.
	tailShown map[string]bool
}

// say prints one message and a newline.
func (p *printer) say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

// event prints a timestamped line.
func (p *printer) event(mark, msg string, tail []string, tailOf string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s %s %s\n", time.Now().Format("15:04:05"), mark, msg)
	if len(tail) > 0 {
		fmt.Fprintf(p.w, "    last lines of %s:\n", tailOf)
		for _, l := range tail {
			fmt.Fprintf(p.w, "    | %s\n", l)
		}
	}
}

// firstTail reports whether the tail of this process's log is to be shown
// (the first time it exits).
func (p *printer) firstTail(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tailShown == nil {
		p.tailShown = map[string]bool{}
	}
	if p.tailShown[key] {
		return false
	}
	p.tailShown[key] = true
	return true
}

// relPath shows a path relative to the working directory when it is below it.
func relPath(path string) string {
	wd, err := filepath.Abs(".")
	if err != nil {
		return path
	}
	if rel, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}

// onEvent prints what the supervisor reports.
func (u *instance) onEvent(e supervisor.Event) {
	switch e.Type {
	case supervisor.ReplicaStarted:
		u.out.event("+", e.Message, nil, "")
	case supervisor.ReplicaReady:
		u.out.event("✓", e.Message, nil, "")
	case supervisor.ReplicaNotReady:
		u.out.event("!", e.Message, nil, "")
	case supervisor.ReplicaStopped:
		u.out.event("-", e.Message, nil, "")
	case supervisor.ProcessExited:
		var tail []string
		log := ""
		if e.Exit != nil && u.out.firstTail(e.Namespace+"/"+e.Pod+"/"+e.Container) {
			tail = e.Exit.LogTail
			log = relPath(filepath.Join(u.stateDir, "logs", e.Namespace, e.Pod, e.Container+".log"))
		}
		u.out.event("×", e.Message, tail, log)
	}
}

// onIngressExit prints an exit of the ingress proxy.
func (u *instance) onIngressExit(e supervisor.Exit) {
	var tail []string
	log := ""
	if u.out.firstTail("ingress") {
		tail = e.LogTail
		log = relPath(u.ingress.logFile)
	}
	u.out.event("×", fmt.Sprintf("ingress proxy: %v; restarting in %v (restarts: %d)", describe(e.Err), e.RestartIn, e.Restarts), tail, log)
}

func describe(err error) string {
	if err == nil {
		return "exited"
	}
	return err.Error()
}

// printBanner says where everything is.
func (u *instance) printBanner() {
	u.out.say("Sluice is up: control plane on %s, state in %s.", u.cpAddr, relPath(u.stateDir))
	u.printIngress()
	var names []string
	for _, w := range u.sup.Workloads() {
		n := fmt.Sprintf("%s/%s (%d %s)", w.Namespace, w.Name, w.Replicas, plural(w.Replicas, "replica", "replicas"))
		names = append(names, n)
	}
	if len(names) > 0 {
		u.out.say("Workloads: %s. Logs: %s.", strings.Join(names, ", "), relPath(filepath.Join(u.stateDir, "logs", "<namespace>", "<pod>", "{app,proxy}.log")))
	} else {
		u.out.say("No Deployment in %s yet; add one and it starts.", relPath(u.manifestDir))
	}
	u.out.say("Canary integrations on %s: gates at %s/gate/check (`sluice gate open NAME`), rollback at %s/rollback/check, load tester at %s%s, metrics at %s%s.",
		u.apiURL, u.apiURL, u.apiURL, u.apiURL, PathLoadTest, u.apiURL, PathMetrics)
	u.out.say("`sluice stat` shows golden metrics, `sluice check` checks the mesh. Ctrl-C stops everything.\n")
}

// printIngress prints the table of published Service ports.
func (u *instance) printIngress() {
	ports := u.ingress.list()
	u.out.mu.Lock()
	defer u.out.mu.Unlock()
	if len(ports) == 0 {
		fmt.Fprintln(u.out.w, "\nNo Service is published (there is none in the manifests).")
		return
	}
	fmt.Fprintln(u.out.w)
	tw := tabwriter.NewWriter(u.out.w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tNAMESPACE\tPORT\tURL")
	for _, p := range ports {
		port := fmt.Sprint(p.Port)
		if p.PortName != "" {
			port += " (" + p.PortName + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Service, p.Namespace, port, p.URL)
	}
	tw.Flush()
	fmt.Fprintln(u.out.w)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
