package up

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1beta1 "github.com/sluicehq/sluice/crds/policy/v1beta1"
	"github.com/sluicehq/sluice/local/manifest"
	"github.com/sluicehq/sluice/local/supervisor"
	"github.com/sluicehq/sluice/mesh/localstore"
)

// settle is how long file events must stop before DIR is read again, so
// that an editor's several writes are read once.
const settle = 200 * time.Millisecond

// syncer keeps what runs in line with the manifest directory.
type syncer struct {
	u *instance

	mu       sync.Mutex // one resync at a time; guards the fields below
	first    bool       // the next resync is the first
	perFile  map[string][]manifest.Object
	applied  map[string]manifest.Object // by Key
	problems []string                   // current, for the API
	printed  map[string]bool            // problems already printed
	troubled map[string]bool            // files that had problems
	dirErr   string                     // the last error reading DIR
	generic  []manifest.Object
	policies bool              // some policy object is applied
	digest   [sha256.Size]byte // of DIR's manifests at the last resync
}

func newSyncer(u *instance) *syncer {
	return &syncer{
		u:        u,
		first:    true,
		perFile:  map[string][]manifest.Object{},
		applied:  map[string]manifest.Object{},
		printed:  map[string]bool{},
		troubled: map[string]bool{},
	}
}

// currentProblems returns the problems of the manifests and routes now.
func (s *syncer) currentProblems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

// kindOrder is the order objects are applied in: what replicas need before
// they start first. Deletions go the other way.
func kindOrder(o *manifest.Object) int {
	switch {
	case o.Kind == "Service" && o.Group() == "":
		return 0
	case o.Kind == "HTTPRoute":
		return 1
	case o.Group() == policyv1beta1.GroupName:
		return 2
	case o.Kind == "Deployment":
		return 4
	}
	return 3 // sluice.dev objects
}

// resync reads DIR and applies what changed.
func (s *syncer) resync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.u
	files, err := manifest.ReadDir(u.manifestDir)
	if err != nil {
		if msg := err.Error(); msg != s.dirErr {
			s.dirErr = msg
			u.out.event("×", fmt.Sprintf("%s: %v; what runs keeps running", relPath(u.manifestDir), err), nil, "")
		}
		return
	}
	s.dirErr = ""
	s.digest = digestOf(files)

	var problems []*manifest.Problem
	perFile := map[string][]manifest.Object{}
	fileProblems := map[string]int{}
	for _, f := range files {
		problems = append(problems, f.Problems...)
		fileProblems[f.Path] = len(f.Problems)
		if f.Complete() {
			perFile[f.Path] = f.Objects
			continue
		}
		// Part of the file could not be read: keep what it defined before,
		// updated by what could be read now. Nothing is torn down.
		merged := map[string]manifest.Object{}
		var order []string
		for _, o := range s.perFile[f.Path] {
			merged[o.Key()] = o
			order = append(order, o.Key())
		}
		for _, o := range f.Objects {
			if _, ok := merged[o.Key()]; !ok {
				order = append(order, o.Key())
			}
			merged[o.Key()] = o
		}
		for _, k := range order {
			perFile[f.Path] = append(perFile[f.Path], merged[k])
		}
	}

	desired := map[string]manifest.Object{}
	for _, path := range slices.Sorted(maps.Keys(perFile)) {
		for _, o := range perFile[path] {
			if other, dup := desired[o.Key()]; dup {
				problems = append(problems, &manifest.Problem{
					File: o.File, Line: o.Line, Object: o.Ref(), Severity: manifest.Invalid,
					Message: fmt.Sprintf("also defined in %s:%d, which is used", relPath(other.File), other.Line),
				})
				continue
			}
			desired[o.Key()] = o
		}
	}
	s.perFile = perFile

	var applyProblems []string
	s.apply(desired, &applyProblems)

	// Report what is new; a problem fixed and made again is reported again.
	var current []string
	now := map[string]bool{}
	for _, p := range problems {
		p.File = relPath(p.File)
		msg := p.Error()
		current = append(current, msg)
		now[msg] = true
		if !s.printed[msg] {
			mark := "×"
			switch p.Severity {
			case manifest.Unsupported:
				mark = "!"
				msg += " [skipped]"
			case manifest.Warning:
				mark = "!"
			default:
				msg += " [not applied; what runs keeps running]"
			}
			u.out.event(mark, msg, nil, "")
		}
	}
	for _, msg := range applyProblems {
		current = append(current, msg)
		now[msg] = true
		if !s.printed[msg] {
			u.out.event("×", msg, nil, "")
		}
	}
	for _, re := range u.store.RouteErrors() {
		msg := "HTTPRoute " + re.Error()
		current = append(current, msg)
		now[msg] = true
		if !s.printed[msg] {
			u.out.event("×", msg, nil, "")
		}
	}
	for path := range s.troubled {
		if n, ok := fileProblems[path]; ok && n == 0 && !s.first {
			u.out.event("✓", relPath(path)+" is read without problems now", nil, "")
		}
	}
	s.troubled = map[string]bool{}
	for path, n := range fileProblems {
		if n > 0 {
			s.troubled[path] = true
		}
	}
	s.printed = now
	s.problems = current
	s.first = false
}

// apply makes the store, the supervisor and the ingress match desired.
func (s *syncer) apply(desired map[string]manifest.Object, problems *[]string) {
	u := s.u
	first := s.first
	say := func(mark, format string, args ...any) {
		if !first {
			u.out.event(mark, fmt.Sprintf(format, args...), nil, "")
		}
	}
	servicesChanged, policiesChanged, genericChanged := first, first, first

	// Deletions: workloads before what they use.
	gone := slices.Collect(maps.Values(s.applied))
	slices.SortFunc(gone, func(a, b manifest.Object) int {
		return cmp.Or(cmp.Compare(kindOrder(&b), kindOrder(&a)), cmp.Compare(a.Key(), b.Key()))
	})
	for _, o := range gone {
		if _, ok := desired[o.Key()]; ok {
			continue
		}
		switch {
		case o.Kind == "Deployment":
			u.deleteWorkload(o.Namespace, o.Name)
		case o.Kind == "Service":
			u.store.DeleteService(o.Namespace, o.Name)
			servicesChanged = true
		case o.Kind == "HTTPRoute":
			u.store.DeleteHTTPRoute(o.Namespace, o.Name)
		case o.Group() == policyv1beta1.GroupName:
			policiesChanged = true
		default:
			genericChanged = true
		}
		delete(s.applied, o.Key())
		say("-", "deleted %s (no longer in %s)", o.Ref(), relPath(u.manifestDir))
	}

	// Creations and updates: what replicas need before they start first.
	list := slices.Collect(maps.Values(desired))
	slices.SortFunc(list, func(a, b manifest.Object) int {
		return cmp.Or(cmp.Compare(kindOrder(&a), kindOrder(&b)), cmp.Compare(a.Key(), b.Key()))
	})
	var workloads []manifest.Object
	for _, o := range list {
		old, had := s.applied[o.Key()]
		if had && bytes.Equal(old.JSON, o.JSON) {
			continue
		}
		switch obj := o.Object.(type) {
		case *corev1.Service:
			u.store.ApplyService(obj)
			servicesChanged = true
		case *gatewayv1.HTTPRoute:
			u.store.ApplyHTTPRoute(obj)
		case *unstructured.Unstructured:
			genericChanged = true
		default:
			if o.Kind == "Deployment" {
				workloads = append(workloads, o)
				continue
			}
			policiesChanged = true
		}
		s.applied[o.Key()] = o
		if had {
			say("~", "updated %s (%s)", o.Ref(), relPath(o.File))
		} else {
			say("+", "created %s (%s)", o.Ref(), relPath(o.File))
		}
	}

	if servicesChanged {
		var ports []supervisor.ServicePort
		for _, o := range s.applied {
			if svc, ok := o.Object.(*corev1.Service); ok {
				ports = append(ports, servicePorts(svc)...)
			}
		}
		u.sup.SetServices(ports)
		changed, err := u.ingress.setServices(ports)
		if err != nil {
			*problems = append(*problems, "ingress: "+err.Error())
		}
		if changed && !first {
			u.printIngress()
		}
	}
	for _, o := range workloads {
		w, err := workloadOf(&o)
		if err != nil {
			*problems = append(*problems, fmt.Sprintf("%s:%d: %s: %v", relPath(o.File), o.Line, o.Ref(), err))
			continue
		}
		old, had := s.applied[o.Key()]
		u.applyWorkload(w)
		s.applied[o.Key()] = o
		switch {
		case !had:
			say("+", "created %s (%s)", o.Ref(), relPath(o.File))
		case old.Kind == o.Kind:
			prev, _ := workloadOf(&old)
			if prev.Revision != w.Revision {
				say("~", "rolling %s to revision %s: new replicas start, then the old ones stop", o.Ref(), w.Revision)
			} else {
				say("~", "updated %s (%d %s)", o.Ref(), w.Replicas, plural(w.Replicas, "replica", "replicas"))
			}
		}
	}

	if policiesChanged {
		var p localstore.PolicyObjects
		for _, o := range s.applied {
			switch obj := o.Object.(type) {
			case *policyv1beta1.Server:
				p.Servers = append(p.Servers, *obj)
			case *policyv1beta1.AuthorizationPolicy:
				p.AuthorizationPolicies = append(p.AuthorizationPolicies, *obj)
			case *policyv1beta1.MeshTLSAuthentication:
				p.MeshTLSAuthentications = append(p.MeshTLSAuthentications, *obj)
			case *policyv1beta1.NetworkAuthentication:
				p.NetworkAuthentications = append(p.NetworkAuthentications, *obj)
			}
		}
		sortPolicies(&p)
		u.store.ReplacePolicies(p)
	}
	if genericChanged {
		var objs []manifest.Object
		for _, o := range s.applied {
			if _, ok := o.Object.(*unstructured.Unstructured); ok {
				objs = append(objs, o)
			}
		}
		slices.SortFunc(objs, func(a, b manifest.Object) int { return cmp.Compare(a.Key(), b.Key()) })
		s.generic = objs
		if u.opts.Objects != nil {
			u.opts.Objects.SetObjects(objs)
		}
		u.setCanaryObjects(objs)
	}
}

func sortPolicies(p *localstore.PolicyObjects) {
	slices.SortFunc(p.Servers, func(a, b policyv1beta1.Server) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(p.AuthorizationPolicies, func(a, b policyv1beta1.AuthorizationPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(p.MeshTLSAuthentications, func(a, b policyv1beta1.MeshTLSAuthentication) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(p.NetworkAuthentications, func(a, b policyv1beta1.NetworkAuthentication) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

// genericObjects returns the sluice.dev objects as the API serves them.
func (u *instance) genericObjects() []*unstructured.Unstructured {
	u.sync.mu.Lock()
	defer u.sync.mu.Unlock()
	out := make([]*unstructured.Unstructured, 0, len(u.sync.generic))
	for _, o := range u.sync.generic {
		out = append(out, o.Object.(*unstructured.Unstructured).DeepCopy())
	}
	return out
}

// digestOf fingerprints what was read, to tell whether DIR changed.
func digestOf(files []manifest.File) [sha256.Size]byte {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00", f.Path)
		if data, err := os.ReadFile(f.Path); err == nil {
			h.Write(data)
		}
		h.Write([]byte{0})
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// changed reports whether DIR's manifests differ from the last resync.
func (s *syncer) changed() bool {
	paths, err := manifest.Files(s.u.manifestDir)
	if err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		return err.Error() != s.dirErr
	}
	files := make([]manifest.File, len(paths))
	for i, p := range paths {
		files[i].Path = p
	}
	d := digestOf(files)
	s.mu.Lock()
	defer s.mu.Unlock()
	return d != s.digest
}

// watch resyncs whenever DIR changes, until ctx ends: on file system events
// (once they settle) and, as a fallback, when a periodic check finds the
// content changed.
func (s *syncer) watch(ctx context.Context) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		s.u.log.Warn("cannot watch the manifest directory for events; checking it periodically", "error", err)
	} else {
		defer w.Close()
		if err := w.Add(s.u.manifestDir); err != nil {
			s.u.log.Warn("cannot watch the manifest directory for events; checking it periodically", "error", err)
		} else {
			events, errs = w.Events, w.Errors
		}
	}
	poll := time.NewTicker(s.u.opts.WatchInterval)
	defer poll.Stop()
	settleTimer := time.NewTimer(time.Hour)
	settleTimer.Stop()
	defer settleTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if manifest.IsManifest(ev.Name) {
				settleTimer.Reset(settle)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.u.log.Warn("watching the manifest directory", "error", err)
		case <-settleTimer.C:
			s.resync()
		case <-poll.C:
			if s.changed() {
				s.resync()
			}
		}
	}
}
