package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// logTail is how many lines of each component's log Diagnostics prints.
const logTail = 25

// Diagnostics writes what helps explain a failure: which processes run,
// the nodes, every pod with its containers' states, the latest events, and
// the last lines of each component's log. It writes what it can when the
// API server is down.
func (cl *Cluster) Diagnostics(ctx context.Context, w io.Writer) {
	c := cl.Config
	fmt.Fprintf(w, "== cluster in %s\n", c.WorkDir)
	for _, name := range components {
		pid, _, ok := recordedProcess(c, name)
		state := "not recorded"
		if ok {
			state = fmt.Sprintf("PID %d, exited", pid)
			if processRunning(c, name) {
				state = fmt.Sprintf("PID %d, running", pid)
			}
		}
		fmt.Fprintf(w, "  %-24s %s\n", name, state)
	}
	if cl.Client != nil {
		cl.apiDiagnostics(ctx, w)
	}
	for _, name := range components {
		fmt.Fprintf(w, "== last %d lines of %s\n", logTail, c.path("logs", name+".log"))
		w.Write(tail(c.path("logs", name+".log"), logTail))
	}
}

func (cl *Cluster) apiDiagnostics(ctx context.Context, w io.Writer) {
	cs := cl.Client
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(w, "== API server unreachable: %v\n", err)
		return
	}
	fmt.Fprintln(w, "== nodes")
	for _, n := range nodes.Items {
		var conds []string
		for _, cond := range n.Status.Conditions {
			conds = append(conds, fmt.Sprintf("%s=%s", cond.Type, cond.Status))
		}
		fmt.Fprintf(w, "  %s %s\n", n.Name, strings.Join(conds, " "))
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err == nil {
		fmt.Fprintln(w, "== pods")
		for _, p := range pods.Items {
			fmt.Fprintf(w, "  %s/%s %s ip=%s\n", p.Namespace, p.Name, p.Status.Phase, p.Status.PodIP)
			for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
				fmt.Fprintf(w, "    %s ready=%t restarts=%d %s\n", s.Name, s.Ready, s.RestartCount, containerState(s.State))
			}
		}
	}
	events, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err == nil {
		items := events.Items
		when := func(e corev1.Event) time.Time {
			if !e.LastTimestamp.IsZero() {
				return e.LastTimestamp.Time
			}
			return e.EventTime.Time
		}
		sort.Slice(items, func(i, j int) bool { return when(items[i]).Before(when(items[j])) })
		if len(items) > 40 {
			items = items[len(items)-40:]
		}
		fmt.Fprintln(w, "== latest events")
		for _, e := range items {
			fmt.Fprintf(w, "  %s %s %s/%s %s: %s\n", when(e).Format("15:04:05"), e.Type,
				e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, strings.TrimSpace(e.Message))
		}
	}
}

func containerState(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return fmt.Sprintf("waiting %s: %s", s.Waiting.Reason, s.Waiting.Message)
	case s.Terminated != nil:
		return fmt.Sprintf("terminated %s (exit %d): %s", s.Terminated.Reason, s.Terminated.ExitCode, s.Terminated.Message)
	}
	return "unknown"
}

// tail returns the last n lines of the file at path (or why it cannot).
func tail(path string, n int) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Appendf(nil, "  (%v)\n", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var out bytes.Buffer
	for _, l := range lines {
		out.WriteString("  ")
		out.Write(l)
		out.WriteByte('\n')
	}
	return out.Bytes()
}
