package canary

import (
	"time"

	"github.com/sluicehq/sluice/analysis"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// Observation is everything the world looked like when Step ran. It is pure
// data: the driver fills it in, Step only reads it.
//
// Within one tick the driver keeps Now and the observed world fixed and
// accumulates the answers (Analysis, Gates) to the inputs Step asked for, so
// that Step called again with them sees the same world plus the answers.
type Observation struct {
	// Now is the time of the tick; the only clock Step reads.
	Now time.Time

	// Target is the user's workload (e.g. podinfo), which also serves as the
	// canary during a run.
	Target Workload
	// Primary is the "<target>-primary" copy that serves the promoted
	// revision.
	Primary Workload

	// ServicesReady is true when the apex, "-primary" and "-canary" Services
	// exist as the spec asks.
	ServicesReady bool
	// Route is the HTTPRoute that splits the apex Service's traffic.
	Route Route

	// Analysis holds the results of the checks Step asked for with
	// RunAnalysis; nil when no analysis ran in this tick.
	Analysis *AnalysisResults
	// Gates holds, by webhook type, the answers of the webhooks Step asked
	// for with CallHook in this tick.
	Gates map[v1beta1.HookType]GateAnswer

	// Manual is the last promote, abort, retry, pause or resume a user
	// requested (sluice promote|abort|retry|pause|resume); nil when none.
	// Step applies a request once: it records the request time in the
	// status and ignores a request no newer than the one recorded.
	Manual *ManualAction

	// Conflict, when not empty, names another Canary that already owns this
	// Canary's target; this one is refused.
	Conflict string

	// InWindow says whether Now is inside one of analysis.windows; nil when
	// the canary has no windows.
	InWindow *bool
}

// Workload is the observed state of a Deployment (or other workload kind).
type Workload struct {
	// Exists is false when the workload is not found.
	Exists bool
	// Revision identifies what the workload runs: a hash of its pod template
	// plus checksums of the ConfigMaps and Secrets it references, computed by
	// the driver in the same way for the target and the primary, so that a
	// promoted primary has the revision of the target it was copied from.
	// Empty when unknown.
	Revision string
	// Ready is true when the workload's pods of its current revision are
	// available (as many as its ready threshold asks for).
	Ready bool
	// Replicas is the workload's desired replica count.
	Replicas int32
	// Message says why the workload is not ready, for status messages (e.g.
	// "0/2 replicas available: ImagePullBackOff"); may be empty.
	Message string
}

// Route is the observed state of the canary's HTTPRoute.
type Route struct {
	// Exists is false when the route is not found.
	Exists bool
	// Accepted is true when the route's parent status says Accepted=True
	// for the route's current generation.
	Accepted bool
	// PrimaryWeight and CanaryWeight are the weights of the primary and
	// canary backends of the canary's rules.
	PrimaryWeight, CanaryWeight int
	// Mirrored is true when the route mirrors requests to the canary.
	Mirrored bool
	// Matched is true when the weights apply only to the requests matching
	// analysis.match (A/B testing), the others going to the primary.
	Matched bool
}

// AnalysisResults are the results of one analysis run, in the order the
// analysis package returns them (Flagger's order).
type AnalysisResults struct {
	// Results has one entry per check of analysis.metrics.
	Results []analysis.Result
}

// GateAnswer is what the webhooks of one type answered in this tick.
type GateAnswer struct {
	// Answers has one entry per webhook called, in any order.
	Answers []HookAnswer
}

// HookAnswer is one webhook's answer.
type HookAnswer struct {
	// Name is the webhook's name in analysis.webhooks.
	Name string
	// OK is true when the webhook answered with success (HTTP 200-202); a
	// call that failed (timeout, refused connection) is not OK.
	OK bool
	// Message is the answer's body or the call's error, for status messages.
	Message string
}

// ManualKind is what a user asked for.
type ManualKind string

// Manual actions a user can request.
const (
	// ManualPromote skips the rest of the analysis and promotes the run's
	// revision now; after a failed run it promotes the failed revision.
	ManualPromote ManualKind = "promote"
	// ManualAbort rolls the run back now.
	ManualAbort ManualKind = "abort"
	// ManualRetry starts a new run of the revision that failed, without
	// the workload being edited.
	ManualRetry ManualKind = "retry"
	// ManualPause holds everything where it is: the weights stay, no check
	// runs and the progress deadline stops running, until resume.
	ManualPause ManualKind = "pause"
	// ManualResume undoes pause.
	ManualResume ManualKind = "resume"
)

// ManualAction is a user's request.
type ManualAction struct {
	// Kind is what was asked for.
	Kind ManualKind
	// RequestedAt is when it was asked for; Step records it (to the second,
	// as the API stores times) so that a request is applied once.
	RequestedAt time.Time
}
