package v1beta1

import (
	"fmt"
	"math"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CanaryPhase is the stage of a canary's current or last run.
//
// +kubebuilder:validation:Enum=Initializing;Initialized;Waiting;Progressing;WaitingPromotion;Promoting;Finalising;Succeeded;Failed;Terminating;Terminated
type CanaryPhase string

const (
	// PhaseInitializing means the canary is new; the primary, the Services and the
	// route are being created.
	PhaseInitializing CanaryPhase = "Initializing"
	// PhaseInitialized means the primary serves all traffic and the target is
	// scaled to zero; the canary waits for a new revision.
	PhaseInitialized CanaryPhase = "Initialized"
	// PhaseWaiting means a new revision waits for a confirm-rollout webhook (or an
	// analysis window).
	PhaseWaiting CanaryPhase = "Waiting"
	// PhaseProgressing means a run is shifting traffic and checking.
	PhaseProgressing CanaryPhase = "Progressing"
	// PhaseWaitingPromotion means the run reached its end and waits for a
	// confirm-promotion webhook; checks keep running.
	PhaseWaitingPromotion CanaryPhase = "WaitingPromotion"
	// PhasePromoting means the primary is being updated to the new revision.
	PhasePromoting CanaryPhase = "Promoting"
	// PhaseFinalising means the promoted primary takes all traffic back and the
	// target is scaled to zero.
	PhaseFinalising CanaryPhase = "Finalising"
	// PhaseSucceeded means the revision was promoted.
	PhaseSucceeded CanaryPhase = "Succeeded"
	// PhaseFailed means the run was rolled back; the primary still runs the
	// previous revision.
	PhaseFailed CanaryPhase = "Failed"
	// PhaseTerminating means the Canary is being deleted and what Sluice changed
	// is being reverted.
	PhaseTerminating CanaryPhase = "Terminating"
	// PhaseTerminated means the revert on deletion is done.
	PhaseTerminated CanaryPhase = "Terminated"
)

// Phases lists every phase, in the order of a run.
var Phases = []CanaryPhase{
	PhaseInitializing, PhaseInitialized, PhaseWaiting, PhaseProgressing,
	PhaseWaitingPromotion, PhasePromoting, PhaseFinalising, PhaseSucceeded,
	PhaseFailed, PhaseTerminating, PhaseTerminated,
}

// Condition types of a Canary.
const (
	// ConditionPromoted is Flagger's condition: True once the last revision
	// is promoted (and after initialization), False after a rollback,
	// Unknown while a run is under way. Its reason is the phase.
	ConditionPromoted = "Promoted"
	// ConditionReady is True when the Canary is valid and its objects (the
	// primary, the Services and the route) are in place, so that a new
	// revision can run; False names the reason, e.g. an invalid field.
	ConditionReady = "Ready"
)

// Reasons of the Ready condition set by Sluice.
const (
	// ReasonInvalidSpec means the spec fails validation; the message names the
	// field.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonReconciled means the canary's objects are in place.
	ReasonReconciled = "Reconciled"
)

// CanaryStatus is the state of a canary's current or last run, written by
// Sluice.
type CanaryStatus struct {
	// ObservedGeneration is the metadata.generation of the spec this status
	// was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Phase is the stage of the current or last run.
	// +optional
	Phase CanaryPhase `json:"phase,omitempty"`

	// FailedChecks is how many checks of the current run failed; it resets
	// when a new revision starts a run.
	// +optional
	FailedChecks int `json:"failedChecks"`

	// CanaryWeight is the weight currently routed to the canary (0-100).
	// +optional
	CanaryWeight int `json:"canaryWeight"`

	// Iterations is how many iterations of an A/B or blue/green run are done.
	// +optional
	Iterations int `json:"iterations"`

	// PreviousSessionAffinityCookie is the session-affinity cookie of the
	// previous run, which is expired on clients that still send it.
	// +optional
	PreviousSessionAffinityCookie string `json:"previousSessionAffinityCookie,omitempty"`

	// SessionAffinityCookie is the cookie that sticks clients to the canary in
	// the current run.
	// +optional
	SessionAffinityCookie string `json:"sessionAffinityCookie,omitempty"`

	// PrimarySessionAffinityCookie is the cookie that sticks clients to the
	// primary in the current run.
	// +optional
	PrimarySessionAffinityCookie string `json:"primarySessionAffinityCookie,omitempty"`

	// TrackedConfigs maps each ConfigMap and Secret the target uses
	// ("configmap/<name>", "secret/<name>") to a checksum of its data; a
	// change starts a run as a pod-template change does.
	// +optional
	TrackedConfigs map[string]string `json:"trackedConfigs,omitempty"`

	// LastAppliedSpec is the hash of the target's pod template last seen.
	// +optional
	LastAppliedSpec string `json:"lastAppliedSpec,omitempty"`

	// LastPromotedSpec is the hash of the pod template last promoted.
	// +optional
	LastPromotedSpec string `json:"lastPromotedSpec,omitempty"`

	// ObservedRevision identifies the revision of the target (pod template
	// and tracked configs) that the current or last run is about. Once it
	// equals the revision CI applied, the phase and conditions describe that
	// revision.
	// +optional
	ObservedRevision string `json:"observedRevision,omitempty"`

	// LastAnalysisTime is when the current step was last judged.
	// +optional
	LastAnalysisTime *metav1.Time `json:"lastAnalysisTime,omitempty"`

	// LastProgressTime is when the run last made progress; the progress
	// deadline counts from it.
	// +optional
	LastProgressTime *metav1.Time `json:"lastProgressTime,omitempty"`

	// Paused is true while a user holds the run at its current weight.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// LastManualAction is the last manual action applied (promote, abort,
	// retry, pause, resume), and LastManualActionTime when it was requested:
	// a request is applied once.
	// +optional
	LastManualAction string `json:"lastManualAction,omitempty"`
	// +optional
	LastManualActionTime *metav1.Time `json:"lastManualActionTime,omitempty"`

	// LastPromotedRevision identifies the revision last promoted. CI that
	// waits for a promotion waits until it equals the revision it applied.
	// +optional
	LastPromotedRevision string `json:"lastPromotedRevision,omitempty"`

	// LastTransitionTime is when the phase last changed.
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`

	// Message says what the run is doing or why it stopped, naming the
	// failing check with its value and threshold, e.g.
	// "request-success-rate 91.3% < min 99% (3/5 failed checks)".
	// +optional
	Message string `json:"message,omitempty"`

	// Checks are the results of the checks of the last step.
	// +optional
	// +kubebuilder:validation:MaxItems=128
	Checks []CheckResult `json:"checks,omitempty"`

	// Conditions are Promoted and Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CheckVerdict is the outcome of one check.
//
// +kubebuilder:validation:Enum=pass;fail;no-data;error
type CheckVerdict string

const (
	// VerdictPass means the value is inside the threshold range.
	VerdictPass CheckVerdict = "pass"
	// VerdictFail means the value is outside the threshold range, or a webhook
	// check answered with a failure.
	VerdictFail CheckVerdict = "fail"
	// VerdictNoData means the query returned no value (e.g. no traffic).
	VerdictNoData CheckVerdict = "no-data"
	// VerdictError means the check could not be run (provider unreachable, bad
	// query, webhook timeout).
	VerdictError CheckVerdict = "error"
)

// CheckResult is the outcome of one check at the last step.
type CheckResult struct {
	// Name of the check: the metric's or the webhook's name.
	// +required
	Name string `json:"name"`

	// Value measured; unset when there was none.
	// +optional
	Value *Number `json:"value,omitempty"`

	// Min is the smallest value that passes, if bounded below.
	// +optional
	Min *Number `json:"min,omitempty"`

	// Max is the largest value that passes, if bounded above.
	// +optional
	Max *Number `json:"max,omitempty"`

	// Unit of the value and bounds, for display: "%" or "ms" for the
	// built-in metrics.
	// +optional
	Unit string `json:"unit,omitempty"`

	// Verdict is pass, fail, no-data or error.
	// +required
	Verdict CheckVerdict `json:"verdict"`

	// Message gives details, e.g. the error of a check that could not run.
	// +optional
	Message string `json:"message,omitempty"`

	// Time is when the check ran.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// Summary describes the result in one line, naming the check, its value and
// the bound it crossed, e.g. "request-success-rate 91.3% < min 99%".
func (r CheckResult) Summary() string {
	switch r.Verdict {
	case VerdictNoData:
		return r.Name + " no data"
	case VerdictError:
		if r.Message != "" {
			return r.Name + " error: " + r.Message
		}
		return r.Name + " error"
	}
	if r.Value == nil {
		if r.Message != "" {
			return fmt.Sprintf("%s %s: %s", r.Name, r.Verdict, r.Message)
		}
		return fmt.Sprintf("%s %s", r.Name, r.Verdict)
	}
	v := r.Value.Float64()
	value := formatMeasure(v, r.Unit)
	switch {
	case r.Min != nil && v < r.Min.Float64():
		return fmt.Sprintf("%s %s < min %s", r.Name, value, formatMeasure(r.Min.Float64(), r.Unit))
	case r.Max != nil && v > r.Max.Float64():
		return fmt.Sprintf("%s %s > max %s", r.Name, value, formatMeasure(r.Max.Float64(), r.Unit))
	case r.Verdict == VerdictFail && r.Message != "":
		return fmt.Sprintf("%s %s: %s", r.Name, value, r.Message)
	default:
		return fmt.Sprintf("%s %s %s", r.Name, value, r.Verdict)
	}
}

// FailureMessage is the status message of a failing check: its summary and
// the run's failed-check count against the threshold, e.g.
// "request-success-rate 91.3% < min 99% (3/5 failed checks)".
func FailureMessage(r CheckResult, failedChecks, threshold int) string {
	return fmt.Sprintf("%s (%d/%d failed checks)", r.Summary(), failedChecks, threshold)
}

// formatMeasure writes v with at most two decimals, then its unit.
func formatMeasure(v float64, unit string) string {
	rounded := math.Round(v*100) / 100
	if math.IsInf(rounded, 0) || math.IsNaN(rounded) {
		rounded = v
	}
	return strconv.FormatFloat(rounded, 'f', -1, 64) + unit
}
