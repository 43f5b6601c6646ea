package canary

import (
	"time"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Action is something Step asks the driver to do. Each is a small struct;
// the driver type-switches on them and executes them in the order given.
//
// RunAnalysis and CallHook need input: the driver executes them, puts the
// answers in the Observation (Analysis, Gates), sets the Canary's status to
// the status Step returned, and calls Step again in the same tick, until
// Step returns no action that needs input (NeedsInput). Then it persists the
// last status and comes back after the last Requeue. If an action fails, the
// driver does not persist the status of that tick and retries the tick, so
// that Step asks again for what it still needs.
type Action interface{ isAction() }

// NeedsInput reports whether a is answered through the Observation of a
// following call to Step (RunAnalysis and CallHook).
func NeedsInput(a Action) bool {
	switch a.(type) {
	case RunAnalysis, CallHook:
		return true
	}
	return false
}

// EnsurePrimary asks for "<target>-primary" to exist: created as a clone of
// the target (with "-primary" labels and selector) when missing. An
// existing primary is left as it is (PromotePrimary updates it).
type EnsurePrimary struct{}

// EnsureServices asks for the apex "<service>", "<service>-primary" and
// "<service>-canary" Services to exist as the spec asks; the apex Service
// selects the primary's pods.
type EnsureServices struct{}

// EnsureRoute asks for the canary's HTTPRoute to exist, parented on the apex
// Service; a missing route is created with all traffic on the primary
// (100/0), an existing one keeps its weights.
type EnsureRoute struct{}

// SetWeights asks for the route's weights to be set.
type SetWeights struct {
	// Primary and Canary are the weights of the primary and canary
	// backends; they add up to 100.
	Primary, Canary int
	// Mirror copies the primary's requests to the canary (responses
	// dropped).
	Mirror bool
	// Match applies the weights only to requests matching analysis.match
	// (A/B testing); every other request goes to the primary.
	Match bool
}

// ScaleCanary asks for the target, which serves as the canary during a run,
// to be scaled up (from zero, to its own replicas or the primary's) at the
// start of a run, or down to zero at its end.
type ScaleCanary struct {
	// Up scales up when true, to zero when false.
	Up bool
}

// ScaleTarget asks for the target's replicas to be set at initialization:
// Zero scales it to zero once the primary serves its traffic. It acts on
// the same workload as ScaleCanary.
type ScaleTarget struct {
	// Zero scales the target to zero when true; when false it gives the
	// target its replicas back.
	Zero bool
}

// PromotePrimary asks for the target's spec (pod template and referenced
// ConfigMaps and Secrets) to be copied to the primary, which then rolls out
// the run's revision.
type PromotePrimary struct {
	// Revision is the revision being promoted (status.observedRevision).
	Revision string
}

// RunAnalysis asks for the checks of analysis.metrics to be run against the
// canary; the driver calls Step again with Observation.Analysis set.
type RunAnalysis struct {
	// Revision is the canary revision under analysis, so that the driver
	// can leave out the metrics of older revisions.
	Revision string
}

// CallHook asks for one webhook to be called; the driver calls Step again
// with its answer appended to Observation.Gates[Type].
type CallHook struct {
	// Type is the webhook's type (never empty: rollout when unset).
	Type v1beta1.HookType
	// Name is the webhook's name in analysis.webhooks.
	Name string
	// Phase is the phase to send in the webhook's payload.
	Phase v1beta1.CanaryPhase
}

// Notify asks for an event to be recorded and, when Alert is set, for an
// alert to be sent to the canary's alert providers (filtered by their
// severity). Event webhooks receive every Notify.
type Notify struct {
	// Event names what happened (the Event* constants).
	Event string
	// Severity is info, warn or error.
	Severity v1beta1.AlertSeverity
	// Message says what happened, for people.
	Message string
	// Alert is true for the events Flagger sends to alert providers;
	// false for the others (each step), which are only recorded.
	Alert bool
}

// Requeue asks for Step to be called again after a while, even if nothing
// changes. Step returns at most one, last.
type Requeue struct {
	// After is how long to wait.
	After time.Duration
}

func (EnsurePrimary) isAction()  {}
func (EnsureServices) isAction() {}
func (EnsureRoute) isAction()    {}
func (SetWeights) isAction()     {}
func (ScaleCanary) isAction()    {}
func (ScaleTarget) isAction()    {}
func (PromotePrimary) isAction() {}
func (RunAnalysis) isAction()    {}
func (CallHook) isAction()       {}
func (Notify) isAction()         {}
func (Requeue) isAction()        {}

// Events of Notify.
const (
	// EventInitialized: the primary, Services and route are in place.
	EventInitialized = "Initialized"
	// EventNewRevision: a run started for a new revision.
	EventNewRevision = "NewRevision"
	// EventWaitingApproval: a confirm-rollout webhook holds a new revision.
	EventWaitingApproval = "WaitingApproval"
	// EventWaitingTrafficIncrease: a confirm-traffic-increase webhook holds
	// the next step.
	EventWaitingTrafficIncrease = "WaitingTrafficIncrease"
	// EventWaitingPromotion: a confirm-promotion webhook holds promotion.
	EventWaitingPromotion = "WaitingPromotion"
	// EventAdvanced: the canary's weight or iteration advanced.
	EventAdvanced = "Advanced"
	// EventCheckFailed: a check failed; the run goes on until the threshold.
	EventCheckFailed = "CheckFailed"
	// EventRestarted: a new revision arrived during a run, which restarts.
	EventRestarted = "Restarted"
	// EventPromoting: the primary is being updated to the run's revision.
	EventPromoting = "Promoting"
	// EventSucceeded: the revision was promoted.
	EventSucceeded = "Succeeded"
	// EventRolledBack: the run failed and was rolled back.
	EventRolledBack = "RolledBack"
	// EventPromotionFailed: the primary did not roll out the revision in time.
	EventPromotionFailed = "PromotionFailed"
	// EventManual: a user's promote, abort, retry, pause or resume was
	// applied or refused.
	EventManual = "Manual"
)
