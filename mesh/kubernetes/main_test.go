package kubernetes

import (
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/mesh/destination"
	"github.com/sluicehq/sluice/mesh/policy"
)

// Source is what the destination and inbound policy services stream from.
var (
	_ destination.Source  = (*Source)(nil)
	_ policy.PolicySource = (*Source)(nil)
)

func TestMain(m *testing.M) {
	// A test's output is what it reports, not the source's progress.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m)
}
