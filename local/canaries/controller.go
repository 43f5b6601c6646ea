// Package canaries runs local mode's canaries: for every Canary of the
// manifest directory it ticks a canary.Driver on the canary's interval, with
// local implementations of canary.Workloads (the supervisor: the target,
// serving as the canary, and "<target>-primary" are separate process
// groups) and canary.Router (weights written into the canary's HTTPRoute in
// the local store, which the destination streams to the proxies).
//
// Each canary's status, with the primary's spec and whether the target is
// scaled to zero, is persisted under <state>/canaries/<ns>/<name>.json and
// read back at start, so that a restarted `sluice up` resumes a rollout where
// it was.
package canaries

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/supervisor"
)

// Options configure a Controller.
type Options struct {
	// StateDir is local mode's state directory; statuses are kept under
	// StateDir/canaries (required).
	StateDir string
	// Supervisor runs the workloads and Store holds Services and routes
	// (required).
	Supervisor Supervisor
	Store      Store
	// Analyzer runs the canaries' checks (the built-in provider over the
	// in-process telemetry).
	Analyzer canary.Analyzer
	// Hooks calls the canaries' webhooks (nil: canaries with webhooks
	// other than event webhooks cannot run).
	Hooks canary.Hooks
	// Notifier, if set, receives the canaries' notifications (alerts);
	// AlertTarget resolves their AlertProviders.
	Notifier canary.Notifier
	// Metrics, if set, is updated after each tick.
	Metrics *canary.Metrics
	// Say, if set, receives what people read: each event of a canary.
	Say func(msg string)
	// Logger receives the driver's log (nil: discard).
	Logger *slog.Logger
	// Clock is the time of ticks (nil: time.Now).
	Clock func() time.Time
}

// entry is one canary and its persisted state.
type entry struct {
	c      *v1beta1.Canary // spec from the manifest, status as last ticked
	st     targetState
	manual *canary.ManualAction
	next   time.Time // when to tick next
	gone   bool      // no longer in the manifests
}

// saved is the file a canary's state is persisted in.
type saved struct {
	Status  v1beta1.CanaryStatus         `json:"status"`
	Primary *supervisor.Workload         `json:"primary,omitempty"`
	Down    bool                         `json:"targetScaledToZero,omitempty"`
	Manual  *canary.ManualAction         `json:"manual,omitempty"`
	Target  v1beta1.LocalObjectReference `json:"targetRef"`
}

// Controller runs the canaries of local mode. Create it with New, feed it
// the manifests' objects (SetObjects) and workloads (ApplyWorkload,
// DeleteWorkload), and call Run.
type Controller struct {
	opts   Options
	log    *slog.Logger
	driver *canary.Driver
	kick   chan struct{}

	mu        sync.Mutex
	entries   map[string]*entry              // by "ns/name"
	workloads map[string]supervisor.Workload // the user's, by "ns/name"
	loaded    map[string]saved               // read at start, by "ns/name", until the canary appears

	sup supporting // AlertProviders and MetricTemplates, see objects.go
}

// New returns a controller, having read the states persisted by a previous
// run. Nothing runs until Run.
func New(opts Options) (*Controller, error) {
	if opts.StateDir == "" || opts.Supervisor == nil || opts.Store == nil {
		return nil, errors.New("canaries: StateDir, Supervisor and Store are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		opts:      opts,
		log:       log,
		kick:      make(chan struct{}, 1),
		entries:   map[string]*entry{},
		workloads: map[string]supervisor.Workload{},
		loaded:    map[string]saved{},
	}
	c.driver = &canary.Driver{
		Analyzer: opts.Analyzer,
		Hooks:    opts.Hooks,
		Notifier: opts.Notifier,
		Metrics:  opts.Metrics,
		Events:   events{c},
		Clock:    opts.Clock,
		Logger:   log,
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir is where canary states are persisted, under the state directory.
func Dir(stateDir string) string { return filepath.Join(stateDir, "canaries") }

func (c *Controller) path(ns, name string) string {
	return filepath.Join(Dir(c.opts.StateDir), ns, name+".json")
}

// load reads the persisted states.
func (c *Controller) load() error {
	root := Dir(c.opts.StateDir)
	nss, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading canary states: %w", err)
	}
	for _, ns := range nss {
		files, err := os.ReadDir(filepath.Join(root, ns.Name()))
		if err != nil {
			continue
		}
		for _, f := range files {
			name, ok := cutSuffix(f.Name(), ".json")
			if !ok {
				continue
			}
			data, err := os.ReadFile(filepath.Join(root, ns.Name(), f.Name()))
			if err != nil {
				return fmt.Errorf("reading canary state: %w", err)
			}
			var s saved
			if err := json.Unmarshal(data, &s); err != nil {
				c.log.Warn("ignoring an unreadable canary state", "file", f.Name(), "error", err)
				continue
			}
			c.loaded[ns.Name()+"/"+name] = s
		}
	}
	return nil
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) <= len(suffix) || s[len(s)-len(suffix):] != suffix {
		return "", false
	}
	return s[:len(s)-len(suffix)], true
}

// persist writes an entry's state. c.mu must be held.
func (c *Controller) persist(e *entry) {
	s := saved{Status: e.c.Status, Primary: e.st.Primary, Down: e.st.Down, Manual: e.manual,
		Target: v1beta1.LocalObjectReference{Kind: e.c.Spec.TargetRef.Kind, Name: e.c.Spec.TargetRef.Name}}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		c.log.Error("encoding canary state", "canary", e.c.Namespace+"/"+e.c.Name, "error", err)
		return
	}
	path := c.path(e.c.Namespace, e.c.Name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		c.log.Error("saving canary state", "error", err)
		return
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		c.log.Error("saving canary state", "error", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		c.log.Error("saving canary state", "error", err)
	}
}

// targetKey is the workload key of a canary's target.
func targetKey(c *v1beta1.Canary) string { return c.Namespace + "/" + c.Spec.TargetRef.Name }

// owner returns the entry that manages the workload key, if any. c.mu must
// be held.
func (c *Controller) owner(key string) *entry {
	var best *entry
	for _, k := range slices.Sorted(maps.Keys(c.entries)) {
		e := c.entries[k]
		if !e.gone && targetKey(e.c) == key {
			if best == nil {
				best = e
			}
		}
	}
	return best
}

// ApplyWorkload takes a Deployment of the manifests: a canary's target is
// run as the canary controller decides (scaled to zero between rollouts, a
// new revision starting a rollout); any other workload goes to the
// supervisor as it is.
func (c *Controller) ApplyWorkload(w supervisor.Workload) {
	c.mu.Lock()
	c.workloads[w.Key()] = cloneWorkload(w)
	e := c.owner(w.Key())
	if e == nil {
		var restored *saved
		for _, k := range slices.Sorted(maps.Keys(c.loaded)) {
			if s := c.loaded[k]; strings.HasPrefix(k, w.Namespace+"/") && s.Target.Name == w.Name {
				restored = &s
				break
			}
		}
		c.mu.Unlock()
		if restored != nil {
			// A rollout of a previous run: until its Canary is read,
			// run what it ran.
			if restored.Down {
				w.Replicas = 0
			}
			if restored.Primary != nil {
				c.opts.Supervisor.Apply(cloneWorkload(*restored.Primary))
			}
		}
		c.opts.Supervisor.Apply(w)
		return
	}
	u := cloneWorkload(w)
	e.st.User = &u
	c.world(e).applyTarget()
	c.mu.Unlock()
	c.poke()
}

// DeleteWorkload takes the deletion of a Deployment of the manifests.
func (c *Controller) DeleteWorkload(namespace, name string) {
	c.mu.Lock()
	key := namespace + "/" + name
	delete(c.workloads, key)
	if e := c.owner(key); e != nil {
		e.st.User = nil
	}
	c.mu.Unlock()
	c.opts.Supervisor.Delete(namespace, name)
	c.poke()
}

// SetObjects takes the sluice.dev objects of the manifests; the Canaries
// among them are run, the AlertProviders and MetricTemplates kept for them
// (AlertTarget, MetricTemplate). Other objects are ignored; a Canary
// that cannot be decoded is logged and skipped.
func (c *Controller) SetObjects(objs []*unstructured.Unstructured) {
	c.setSupporting(objs)
	seen := map[string]*v1beta1.Canary{}
	for _, o := range objs {
		if o.GetKind() != "Canary" || o.GroupVersionKind().Group != v1beta1.GroupName {
			continue
		}
		var cn v1beta1.Canary
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &cn); err != nil {
			c.log.Warn("skipping a Canary that cannot be decoded", "canary", o.GetNamespace()+"/"+o.GetName(), "error", err)
			c.say(fmt.Sprintf("Canary %s/%s cannot be decoded: %v", o.GetNamespace(), o.GetName(), err))
			continue
		}
		if cn.Namespace == "" {
			cn.Namespace = "default"
		}
		seen[cn.Namespace+"/"+cn.Name] = &cn
	}
	c.mu.Lock()
	for key, cn := range seen {
		e, ok := c.entries[key]
		if !ok {
			e = &entry{c: cn}
			if s, ok := c.loaded[key]; ok && s.Target.Name == cn.Spec.TargetRef.Name {
				e.c.Status = s.Status
				e.st.Primary = s.Primary
				e.st.Down = s.Down
				e.manual = s.Manual
			}
			c.entries[key] = e
		} else {
			st := e.c.Status
			e.c = cn
			e.c.Status = st
			e.gone = false
		}
		if e.st.User == nil {
			if w, ok := c.workloads[targetKey(cn)]; ok {
				u := cloneWorkload(w)
				e.st.User = &u
			}
		}
		e.next = time.Time{}
	}
	var released []supervisor.Workload
	for key, e := range c.entries {
		if _, ok := seen[key]; ok {
			continue
		}
		// A Canary removed from the manifests: its primary and generated
		// objects go, the target runs as the user wrote it.
		c.releaseLocked(e)
		if e.st.User != nil {
			released = append(released, *e.st.User)
		}
		delete(c.entries, key)
		_ = os.Remove(c.path(e.c.Namespace, e.c.Name))
	}
	// Take over the targets of new canaries now.
	for _, e := range c.entries {
		if c.owner(targetKey(e.c)) == e {
			c.world(e).applyTarget()
			if p := e.st.Primary; p != nil {
				c.opts.Supervisor.Apply(cloneWorkload(*p))
			}
		}
	}
	c.mu.Unlock()
	for _, w := range released {
		c.opts.Supervisor.Apply(w)
	}
	c.poke()
}

// releaseLocked removes what the controller created for a canary.
func (c *Controller) releaseLocked(e *entry) {
	if e.st.Primary != nil {
		c.opts.Supervisor.Delete(e.st.Primary.Namespace, e.st.Primary.Name)
	}
	apex, ps, cs := e.c.GetServiceNames()
	if rt, ok := c.opts.Store.HTTPRoute(e.c.Namespace, apex); ok && isManaged(rt.Labels) {
		c.opts.Store.DeleteHTTPRoute(e.c.Namespace, apex)
	}
	for _, n := range []string{ps, cs} {
		if svc, ok := c.opts.Store.ServiceObject(e.c.Namespace, n); ok && isManaged(svc.Labels) {
			c.opts.Store.DeleteService(e.c.Namespace, n)
		}
	}
}

func (c *Controller) world(e *entry) *world {
	return &world{sup: c.opts.Supervisor, store: c.opts.Store, st: &e.st, save: func() { c.persist(e) }}
}

func (c *Controller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Controller) say(msg string) {
	if c.opts.Say != nil {
		c.opts.Say(msg)
	}
}

// ErrNotFound is returned (wrapped) for a canary that does not exist.
var ErrNotFound = errors.New("no such canary")

// Request records a manual action for a canary; the next tick applies it,
// once.
func (c *Controller) Request(namespace, name string, kind canary.ManualKind) error {
	switch kind {
	case canary.ManualPromote, canary.ManualAbort, canary.ManualRetry, canary.ManualPause, canary.ManualResume:
	default:
		return fmt.Errorf("unknown action %q (promote, abort, retry, pause, resume)", kind)
	}
	c.mu.Lock()
	e, ok := c.entries[namespace+"/"+name]
	if !ok {
		c.mu.Unlock()
		return fmt.Errorf("%w: %s/%s", ErrNotFound, namespace, name)
	}
	at := c.now().Truncate(time.Second)
	if e.manual != nil && !at.After(e.manual.RequestedAt) {
		// Two requests in one second: keep them apart.
		at = e.manual.RequestedAt.Add(time.Second)
	}
	e.manual = &canary.ManualAction{Kind: kind, RequestedAt: at}
	e.next = time.Time{}
	c.persist(e)
	c.mu.Unlock()
	c.poke()
	return nil
}

// List returns every canary with its status, ordered by namespace and name.
func (c *Controller) List() []v1beta1.Canary {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]v1beta1.Canary, 0, len(c.entries))
	for _, e := range c.entries {
		cn := e.c.DeepCopy()
		cn.APIVersion = v1beta1.GroupVersion.String()
		cn.Kind = "Canary"
		out = append(out, *cn)
	}
	slices.SortFunc(out, func(a, b v1beta1.Canary) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Get returns one canary; ok is false when it does not exist.
func (c *Controller) Get(namespace, name string) (v1beta1.Canary, bool) {
	for _, cn := range c.List() {
		if cn.Namespace == namespace && cn.Name == name {
			return cn, true
		}
	}
	return v1beta1.Canary{}, false
}

func (c *Controller) now() time.Time {
	if c.opts.Clock != nil {
		return c.opts.Clock()
	}
	return time.Now()
}

// maxWait bounds the time between two ticks of a canary. Step's own polls
// (10 s) are for a cluster; here the world is in-process and cheap to
// observe, and Step keeps the analysis to its interval however often it is
// called.
const maxWait = 2 * time.Second

// Run ticks the canaries until ctx ends: each on the requeue its last tick
// asked for (at most maxWait), and all of them when the manifests, a
// target or a manual request change.
func (c *Controller) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		case <-timer.C:
		}
		next := c.tickDue(ctx)
		wait := time.Until(next)
		if wait < 0 {
			wait = 0
		}
		timer.Reset(wait)
	}
}

// tickDue ticks every canary that is due and returns when the next is.
func (c *Controller) tickDue(ctx context.Context) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	next := now.Add(maxWait)
	for _, key := range slices.Sorted(maps.Keys(c.entries)) {
		e := c.entries[key]
		if ctx.Err() != nil {
			return next
		}
		if !e.next.After(now) {
			c.tickLocked(ctx, e)
		}
		if e.next.Before(next) {
			next = e.next
		}
	}
	return next
}

// tickLocked runs one tick of a canary. c.mu must be held.
func (c *Controller) tickLocked(ctx context.Context, e *entry) {
	conflict := ""
	if o := c.owner(targetKey(e.c)); o != nil && o != e {
		conflict = o.c.Namespace + "/" + o.c.Name
	}
	d := *c.driver
	w := c.world(e)
	d.Workloads, d.Router = w, router{w}
	if conflict != "" {
		// Refused: it must touch nothing.
		d.Workloads, d.Router = readOnly{w}, readOnlyRouter{w}
	}
	before := e.c.Status
	st, after, err := d.Tick(ctx, e.c, e.manual, conflict)
	if err != nil {
		c.log.Warn("canary tick failed", "canary", e.c.Namespace+"/"+e.c.Name, "error", err)
	}
	e.c.Status = st
	if after <= 0 || after > maxWait {
		after = maxWait
	}
	e.next = time.Now().Add(after)
	if err == nil {
		if b, _ := json.Marshal(before); string(b) != mustJSON(st) {
			c.persist(e)
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// events records a canary's events for people.
type events struct{ c *Controller }

func (ev events) Event(cn *v1beta1.Canary, eventType, reason, message string) {
	mark := "•"
	if eventType == canary.EventTypeWarning {
		mark = "!"
	}
	ev.c.say(fmt.Sprintf("%s canary %s/%s: %s: %s", mark, cn.Namespace, cn.Name, reason, message))
}

// readOnly refuses every change: the world of a Canary that was refused.
type readOnly struct{ w *world }

func (r readOnly) Observe(ctx context.Context, c *v1beta1.Canary) (canary.Workload, canary.Workload, bool, error) {
	return r.w.Observe(ctx, c)
}
func (readOnly) EnsurePrimary(context.Context, *v1beta1.Canary) error  { return errRefused }
func (readOnly) EnsureServices(context.Context, *v1beta1.Canary) error { return errRefused }
func (readOnly) PromotePrimary(context.Context, *v1beta1.Canary, string) error {
	return errRefused
}
func (readOnly) ScaleCanary(context.Context, *v1beta1.Canary, bool) error { return errRefused }
func (readOnly) ScaleTarget(context.Context, *v1beta1.Canary, bool) error { return errRefused }

type readOnlyRouter struct{ w *world }

func (r readOnlyRouter) Observe(ctx context.Context, c *v1beta1.Canary) (canary.Route, error) {
	return r.w.routeObserve(ctx, c)
}
func (readOnlyRouter) EnsureRoute(context.Context, *v1beta1.Canary) error { return errRefused }
func (readOnlyRouter) SetWeights(context.Context, *v1beta1.Canary, canary.SetWeights) error {
	return errRefused
}

var errRefused = errors.New("this Canary's target is owned by another Canary")
