package destination

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/mesh/api/meshv1"
)

// endpointView is the endpoint set a GetEndpoints client holds, as far as
// the stream has told it. Its zero value is a client that has heard nothing.
type endpointView struct {
	// started is set once the first message is sent.
	started bool
	// empty is set when the client's set is empty because of a NoEndpoints,
	// and exists is what that NoEndpoints said.
	empty, exists bool
	// sent are the endpoints the client holds, by address.
	sent map[string]*meshv1.Endpoint
}

// update returns the messages that bring the client from what it holds to the
// given state (whether the service exists, and its endpoints; for two
// endpoints with one address the last wins, as it would at the client), and
// records that the client now holds it. The first call always returns one
// complete message: an Add of every endpoint, or NoEndpoints. Later calls
// return nothing when nothing changed; NoEndpoints when the set becomes empty
// or the service disappears; an Add of everything after a NoEndpoints;
// otherwise an Add of the new and changed endpoints followed by a Remove of
// the addresses gone. Adding first means the client never sees an empty set
// while one set replaces another.
func (v *endpointView) update(exists bool, endpoints []*meshv1.Endpoint) []*meshv1.EndpointUpdate {
	if !exists || len(endpoints) == 0 {
		if v.started && v.empty && v.exists == exists {
			return nil
		}
		v.started, v.empty, v.exists, v.sent = true, true, exists, nil
		return []*meshv1.EndpointUpdate{{Update: &meshv1.EndpointUpdate_NoEndpoints{
			NoEndpoints: &meshv1.NoEndpoints{Exists: exists},
		}}}
	}

	next := make(map[string]*meshv1.Endpoint, len(endpoints))
	var order []string
	for _, e := range endpoints {
		if _, dup := next[e.GetAddress()]; !dup {
			order = append(order, e.GetAddress())
		}
		next[e.GetAddress()] = e
	}

	var added []*meshv1.Endpoint
	var removed []string
	if !v.started || v.empty {
		for _, a := range order {
			added = append(added, next[a])
		}
	} else {
		for _, a := range order {
			if old, ok := v.sent[a]; !ok || !proto.Equal(old, next[a]) {
				added = append(added, next[a])
			}
		}
		for a := range v.sent {
			if _, ok := next[a]; !ok {
				removed = append(removed, a)
			}
		}
		slices.Sort(removed)
	}
	v.started, v.empty, v.exists, v.sent = true, false, true, next

	var out []*meshv1.EndpointUpdate
	if len(added) > 0 {
		out = append(out, &meshv1.EndpointUpdate{Update: &meshv1.EndpointUpdate_Add{
			Add: &meshv1.AddEndpoints{Endpoints: added},
		}})
	}
	if len(removed) > 0 {
		out = append(out, &meshv1.EndpointUpdate{Update: &meshv1.EndpointUpdate_Remove{
			Remove: &meshv1.RemoveEndpoints{Addresses: removed},
		}})
	}
	return out
}
