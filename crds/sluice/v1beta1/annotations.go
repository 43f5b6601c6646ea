package v1beta1

// RevisionAnnotation on a pod (and on the pod template of a canary's
// primary and of its scaled-up target, which the canary controller writes)
// is the revision the pod runs. The mesh telemetry labels the metrics of
// the pod's proxy with it (revision), which is how the built-in analysis
// tells the canary's traffic from the primary's.
const RevisionAnnotation = "sluice.dev/revision"
