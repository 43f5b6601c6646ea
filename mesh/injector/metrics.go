package injector

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the webhook's decisions. Every pod creation reviewed is
// admitted (the webhook fails open), and then injected, skipped (not asked
// for, or already injected) or errored (an invalid annotation, a pod that
// could not be decoded or patched). A nil *Metrics counts nothing.
type Metrics struct {
	// Admitted counts the pod creations reviewed.
	Admitted prometheus.Counter
	// Injected counts the pods the sidecar was added to.
	Injected prometheus.Counter
	// Skipped counts the pods left alone by Inject's rules.
	Skipped prometheus.Counter
	// Errored counts the pods admitted unmodified because of an error.
	Errored prometheus.Counter
}

// NewMetrics makes the counters sluice_injector_pods_{admitted,injected,
// skipped,errored}_total and registers them with reg (when not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "sluice", Subsystem: "injector", Name: "pods_" + name + "_total", Help: help,
		})
	}
	m := &Metrics{
		Admitted: counter("admitted", "Pod creations reviewed by the injector webhook (all are admitted)."),
		Injected: counter("injected", "Pods the sidecar was added to."),
		Skipped:  counter("skipped", "Pods left unmodified because injection was not asked for, or they were injected already."),
		Errored:  counter("errored", "Pods admitted unmodified because of an error, such as an invalid config.sluice.dev annotation."),
	}
	if reg != nil {
		reg.MustRegister(m.Admitted, m.Injected, m.Skipped, m.Errored)
	}
	return m
}

func (m *Metrics) admitted() {
	if m != nil {
		m.Admitted.Inc()
	}
}

func (m *Metrics) injected() {
	if m != nil {
		m.Injected.Inc()
	}
}

func (m *Metrics) skipped() {
	if m != nil {
		m.Skipped.Inc()
	}
}

func (m *Metrics) errored() {
	if m != nil {
		m.Errored.Inc()
	}
}
