// Package v1beta1 holds Sluice's progressive-delivery API, group sluice.dev,
// version v1beta1: Canary, MetricTemplate and AlertProvider.
//
// The kinds keep the field names and meanings of Flagger's flagger.app/v1beta1,
// so a Flagger manifest works after changing its apiVersion to
// sluice.dev/v1beta1:
//
//   - A Canary names a workload (targetRef). When the workload's pod template
//     or a ConfigMap or Secret it uses changes, the new version runs beside the
//     old one (the "-primary" copy), gets a growing share of traffic
//     (stepWeight or stepWeights up to maxWeight), or a fixed number of
//     iterations for A/B testing (match + iterations) and blue/green
//     (iterations alone), and is promoted or rolled back from the checks in
//     its analysis.
//   - A MetricTemplate is a query a Canary's metric check runs against a
//     metric provider, by reference.
//   - An AlertProvider is where a Canary's alerts are sent.
//
// Sluice adds to Flagger's Canary: analysis.noDataPolicy (whether a check
// without data fails), analysis.windows and analysis.windowPolicy (when a run
// may advance), and in the status a Ready condition, a message naming the
// failing check with its value and threshold, the results of the last checks,
// and observedRevision and lastPromotedRevision so that CI can tell that this
// revision, not the previous one, was promoted.
//
// Rules the API server enforces are kubebuilder markers: OpenAPI where a rule
// concerns one field, CEL (x-kubernetes-validations) where it spans fields.
// The same rules, and those a schema cannot express (time zones, templates),
// are in the Validate methods, which local mode and the engine apply to
// objects that never passed through an API server. Defaults are applied by
// SetDefaults and the Get methods, as Flagger applies them, not by the schema.
//
// +kubebuilder:object:generate=true
// +groupName=sluice.dev
package v1beta1
