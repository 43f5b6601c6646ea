package kubernetes

import (
	"k8s.io/client-go/tools/events"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// maxEventNote is the longest note the events.k8s.io API takes.
const maxEventNote = 1024

// eventAction is the action of the Events Sluice records about a Canary.
const eventAction = "Reconcile"

// Events records a canary's events as Kubernetes Events (events.k8s.io/v1)
// about the Canary.
type Events struct {
	// Recorder records the Events; a manager's GetEventRecorder.
	Recorder events.EventRecorder
}

var _ canary.Events = Events{}

// Event records an event of type canary.EventTypeNormal or
// canary.EventTypeWarning about c, its message cut to the API's limit.
func (e Events) Event(c *v1beta1.Canary, eventType, reason, message string) {
	if e.Recorder == nil || c == nil {
		return
	}
	e.Recorder.Eventf(c, nil, eventType, reason, eventAction, "%s", clipNote(message))
}

// clipNote cuts msg to maxEventNote bytes, on a rune boundary.
func clipNote(msg string) string {
	if len(msg) <= maxEventNote {
		return msg
	}
	cut := maxEventNote - len("…")
	for cut > 0 && msg[cut]&0xC0 == 0x80 {
		cut--
	}
	return msg[:cut] + "…"
}
