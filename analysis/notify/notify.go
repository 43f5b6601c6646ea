// Package notify sends a canary's alerts to chat services and HTTP sinks:
// Slack, Microsoft Teams, Discord, Rocket.Chat and Google Chat in Flagger's
// payload shapes, and a generic JSON document with every field of an Event.
//
// A Sender posts one Event to one Target (an AlertProvider, the severity the
// canary's alert asks for, and an optional message template). A Dispatcher
// wraps a Sender so that the canary engine never waits for a receiver: it
// queues events per provider, delivers them from background goroutines, and
// drops (counting and logging) what does not fit, so a slow or failing
// receiver never blocks or fails a rollout.
//
// Severity filtering follows Flagger: a target of severity info receives
// every event, warn receives warnings and errors, error receives errors only.
package notify

import (
	"errors"
	"time"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Severity is how serious an Event is; it is also the least severe event a
// Target receives.
type Severity = v1beta1.AlertSeverity

// The severities, least severe first.
const (
	// SeverityInfo is routine progress: initialized, new revision, promoted.
	SeverityInfo = v1beta1.SeverityInfo
	// SeverityWarn needs attention: waiting for approval, manual rollback.
	SeverityWarn = v1beta1.SeverityWarn
	// SeverityError is a failed run: rollback, deadline exceeded.
	SeverityError = v1beta1.SeverityError
)

// rank orders severities; an unknown one counts as info.
func rank(s Severity) int {
	switch s {
	case SeverityWarn:
		return 1
	case SeverityError:
		return 2
	}
	return 0
}

// Accepts reports whether a target of severity min receives an event of
// severity sev: info receives all, warn receives warn and error, error
// receives error.
func Accepts(min, sev Severity) bool { return rank(sev) >= rank(min) }

// EventKind is what happened to the canary.
type EventKind string

// The kinds of events alerts fire on.
const (
	// KindInitialized: the canary was set up; the primary serves traffic.
	KindInitialized EventKind = "initialized"
	// KindNewRevision: a new revision was detected and its run starts.
	KindNewRevision EventKind = "new-revision"
	// KindWaitingApproval: a confirm-* webhook holds the run.
	KindWaitingApproval EventKind = "waiting-approval"
	// KindWeightStep: the canary's weight changed. Sent only to targets
	// that opt in (Target.WeightSteps).
	KindWeightStep EventKind = "weight-step"
	// KindPromoted: the run finished and the revision was promoted.
	KindPromoted EventKind = "promoted"
	// KindRolledBack: the run was rolled back; the event says why.
	KindRolledBack EventKind = "rolled-back"
	// KindSkipped: the analysis was skipped and the revision promoted.
	KindSkipped EventKind = "skipped"
)

// Field is a named value shown with a message (Slack attachment fields,
// Teams facts, Google Chat paragraphs).
type Field struct {
	// Name of the field, e.g. "Target".
	Name string `json:"name"`
	// Value of the field, e.g. "Deployment/podinfo.test".
	Value string `json:"value"`
}

// Event is one alert about a canary. Its exported fields are what a message
// template can use: {{.Canary}}, {{.Namespace}}, {{.Phase}}, {{.Revision}},
// {{.Weight}}, {{.FailingCheck}}, {{.Message}}, {{.Severity}}, {{.Cluster}},
// {{.Time}}, {{.Kind}}, {{.Fields}}.
type Event struct {
	// Kind is what happened.
	Kind EventKind
	// Canary is the Canary's name.
	Canary string
	// Namespace is the Canary's namespace.
	Namespace string
	// Phase is the Canary's phase.
	Phase v1beta1.CanaryPhase
	// Revision is the revision the run is about.
	Revision string
	// Weight is the canary's weight (0-100).
	Weight int
	// FailingCheck names the check that failed with its value and threshold,
	// e.g. "request-success-rate 91.3% < min 99%"; empty if none.
	FailingCheck string
	// Message is the default text, e.g. "Canary analysis completed
	// successfully, promotion finished."; when empty, a text for the Kind.
	Message string
	// Severity is info, warn or error.
	Severity Severity
	// Cluster names the cluster; the Sender's when empty.
	Cluster string
	// Time is when it happened.
	Time time.Time
	// Fields are extra facts shown with the message, e.g. Flagger's
	// Target, Failed checks threshold, Progress deadline, Traffic routing.
	Fields []Field
}

// Text returns the event's default message: Message, or a sentence for its
// Kind when Message is empty.
func (e Event) Text() string {
	if e.Message != "" {
		return e.Message
	}
	switch e.Kind {
	case KindInitialized:
		return "New revision detected, initialization completed."
	case KindNewRevision:
		return "New revision detected, progressing canary analysis."
	case KindWaitingApproval:
		return "Canary is waiting for approval."
	case KindWeightStep:
		return "Canary weight changed."
	case KindPromoted:
		return "Canary analysis completed successfully, promotion finished."
	case KindRolledBack:
		if e.FailingCheck != "" {
			return "Canary rolled back: " + e.FailingCheck
		}
		return "Canary rolled back."
	case KindSkipped:
		return "Canary analysis was skipped, promotion finished."
	}
	return string(e.Kind)
}

// Generic is the AlertProvider type of the generic JSON notifier. The
// v1beta1 enum does not list it yet.
const Generic v1beta1.AlertProviderType = "generic"

// SlackAPIURL is where Slack messages go when a provider has a token but no
// address (Slack's chat.postMessage).
const SlackAPIURL = "https://slack.com/api/chat.postMessage"

// Target is where an Event goes: an AlertProvider, with what the canary's
// alert entry asks of it.
type Target struct {
	// Name of the AlertProvider, for logs and queueing; may be empty for a
	// provider configured by flags.
	Name string
	// Namespace of the AlertProvider, where its Secret is read.
	Namespace string
	// Spec is the provider: type, channel, username, address, proxy,
	// secretRef.
	Spec v1beta1.AlertProviderSpec
	// Severity is the least severe event sent (info when empty).
	Severity Severity
	// Template, if set, is a Go text/template producing the message from
	// the Event, e.g. "{{.Canary}} {{.Revision}} in {{.Cluster}}: {{.Message}}".
	// A template that fails is reported and the default text is sent.
	Template string
	// WeightSteps opts in to an event at every weight step.
	WeightSteps bool
}

// NewTarget returns the target of one of a Canary's alerts.
func NewTarget(alert v1beta1.CanaryAlert, provider *v1beta1.AlertProvider) Target {
	return Target{
		Name:      provider.Name,
		Namespace: provider.Namespace,
		Spec:      provider.Spec,
		Severity:  alert.GetSeverity(),
	}
}

// Wants reports whether the target receives ev: its severity passes the
// filter, and weight steps only if opted in.
func (t Target) Wants(ev Event) bool {
	if ev.Kind == KindWeightStep && !t.WeightSteps {
		return false
	}
	return Accepts(t.Severity, ev.Severity)
}

// String names the target for logs: "namespace/name (type)".
func (t Target) String() string {
	name := t.Name
	if t.Namespace != "" {
		name = t.Namespace + "/" + name
	}
	if name == "" {
		return string(t.Spec.Type)
	}
	return name + " (" + string(t.Spec.Type) + ")"
}

// ErrSecretNotFound is returned, wrapped, by a SecretReader when the
// Secret or its key does not exist.
var ErrSecretNotFound = errors.New("secret key not found")

// SecretReader reads one key of a Secret. It returns an error wrapping
// ErrSecretNotFound when the Secret or the key does not exist. In
// Kubernetes it reads Secrets; in local mode DirSecrets or EnvSecrets.
type SecretReader interface {
	Get(namespace, name, key string) (string, error)
}
