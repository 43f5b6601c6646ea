// Package charts holds Sluice's Helm chart, charts/sluice, embedded in the
// sluice binary: `sluice install` renders it, so the chart and the CLI
// install the same objects.
package charts

import "embed"

// FS holds the chart's files under the directory "sluice" (Chart.yaml,
// values.yaml, templates/...), as Helm's chart loader reads them.
//
//go:embed all:sluice
var FS embed.FS

// Dir is the chart's directory inside FS.
const Dir = "sluice"
