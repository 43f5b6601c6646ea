package up

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/sluicehq/sluice/canary"
	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
	"github.com/sluicehq/sluice/local/canaries"
	"github.com/sluicehq/sluice/local/manifest"
	"github.com/sluicehq/sluice/local/supervisor"
)

// Paths of the canary API.
const (
	// PathCanaries lists the canaries (GET); PathCanaries/{ns}/{name}
	// answers one, and POST PathCanaries/{ns}/{name}/{action} requests
	// promote, abort, retry, pause or resume.
	PathCanaries = "/api/v1/canaries"
	// PathApply takes a manifest (POST, YAML body): its objects are written
	// into the manifest directory, as if the user had edited it.
	PathApply = "/api/v1/apply"
)

// startCanaries creates the canary controller and runs it with goRun until
// ctx ends. Called by run once the supervisor and telemetry exist, before
// the manifests are first read.
func (u *instance) startCanaries(ctx context.Context, goRun func(func())) {
	w := u.wireCanaries(ctx, u.integ)
	opts := canaries.Options{
		StateDir:   u.stateDir,
		Supervisor: u.sup,
		Store:      u.store,
		Analyzer:   w.analyzer,
		Hooks:      w.hooks,
		Notifier:   w.notifier,
		Say:        func(msg string) { u.out.say("%s", msg) },
		Logger:     u.log,
	}
	if u.integ != nil {
		opts.Metrics = u.integ.metrics
	}
	ctrl, err := canaries.New(opts)
	if err != nil {
		w.dispatcher.Close()
		_ = w.runner.Close()
		u.out.event("×", "canaries will not run: "+err.Error(), nil, "")
		return
	}
	w.notifier.Resolve = ctrl.AlertTarget
	u.canaries = ctrl
	goRun(func() {
		defer w.dispatcher.Close()
		defer func() { _ = w.runner.Close() }()
		_ = ctrl.Run(ctx)
	})
}

// applyWorkload hands a Deployment of the manifests to the canary controller
// (which passes on those that no Canary targets), or to the supervisor.
func (u *instance) applyWorkload(w supervisor.Workload) {
	if u.canaries != nil {
		u.canaries.ApplyWorkload(w)
		return
	}
	u.sup.Apply(w)
}

// deleteWorkload is applyWorkload's deletion.
func (u *instance) deleteWorkload(namespace, name string) {
	if u.canaries != nil {
		u.canaries.DeleteWorkload(namespace, name)
		return
	}
	u.sup.Delete(namespace, name)
}

// setCanaryObjects gives the sluice.dev objects to the canary controller.
func (u *instance) setCanaryObjects(objs []manifest.Object) {
	if u.canaries == nil {
		return
	}
	list := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if un, ok := o.Object.(*unstructured.Unstructured); ok {
			list = append(list, un)
		}
	}
	u.canaries.SetObjects(list)
}

// canaryRoutes adds the canary API to mux.
func (u *instance) canaryRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathCanaries, func(w http.ResponseWriter, r *http.Request) {
		if u.canaries == nil {
			writeJSON(w, http.StatusOK, []v1beta1.Canary{})
			return
		}
		writeJSON(w, http.StatusOK, u.canaries.List())
	})
	mux.HandleFunc("GET "+PathCanaries+"/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		if u.canaries != nil {
			if c, ok := u.canaries.Get(r.PathValue("ns"), r.PathValue("name")); ok {
				writeJSON(w, http.StatusOK, c)
				return
			}
		}
		writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no canary %s/%s", r.PathValue("ns"), r.PathValue("name"))})
	})
	mux.HandleFunc("POST "+PathCanaries+"/{ns}/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		if u.canaries == nil {
			writeJSON(w, http.StatusServiceUnavailable, errorBody{"the canary controller is not running"})
			return
		}
		err := u.canaries.Request(r.PathValue("ns"), r.PathValue("name"), canary.ManualKind(r.PathValue("action")))
		switch {
		case errors.Is(err, canaries.ErrNotFound):
			writeJSON(w, http.StatusNotFound, errorBody{err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
		default:
			writeJSON(w, http.StatusOK, CheckResult{OK: true, Message: fmt.Sprintf("%s requested", r.PathValue("action"))})
		}
	})
	mux.HandleFunc("POST "+PathApply, func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{"reading the manifest: " + err.Error()})
			return
		}
		name := r.URL.Query().Get("file")
		if name == "" {
			name = "applied.yaml"
		}
		msgs, err := u.applyManifest(filepath.Base(name), body)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, CheckResult{OK: true, Message: strings.Join(msgs, "\n")})
	})
}

// CheckManifest reads a manifest as `sluice up` would and checks it: a
// document that cannot be read, an object that is not valid (a Canary's
// validation included) or a kind local mode does not run is an error naming
// the file, line and field.
func CheckManifest(name string, data []byte) (manifest.File, error) {
	f := manifest.Parse(name, data)
	var errs []string
	for _, p := range f.Problems {
		if p.Severity != manifest.Warning {
			errs = append(errs, p.Error())
		}
	}
	for _, o := range f.Objects {
		un, ok := o.Object.(*unstructured.Unstructured)
		if !ok || o.Kind != "Canary" {
			continue
		}
		var c v1beta1.Canary
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(un.Object, &c); err != nil {
			errs = append(errs, fmt.Sprintf("%s:%d: %s: %v", name, o.Line, o.Ref(), err))
			continue
		}
		for _, fe := range c.Validate() {
			errs = append(errs, fmt.Sprintf("%s:%d: %s: %v", name, o.Line, o.Ref(), fe))
		}
	}
	if len(f.Objects) == 0 && len(errs) == 0 {
		errs = append(errs, name+": no object")
	}
	if len(errs) > 0 {
		return f, errors.New(strings.Join(errs, "\n"))
	}
	return f, nil
}

// applyManifest writes a checked manifest into the manifest directory: each
// object replaces the file that defines it alone, or goes to a new file
// named after the manifest. The watcher then applies it.
func (u *instance) applyManifest(name string, data []byte) ([]string, error) {
	f, err := CheckManifest(name, data)
	if err != nil {
		return nil, err
	}
	files, err := manifest.ReadDir(u.manifestDir)
	if err != nil {
		return nil, err
	}
	defined := map[string][]string{} // key -> files defining it
	count := map[string]int{}        // file -> objects
	for _, df := range files {
		count[df.Path] = len(df.Objects)
		for _, o := range df.Objects {
			defined[o.Key()] = append(defined[o.Key()], df.Path)
		}
	}
	// One file that defines exactly the objects of the manifest is
	// replaced; otherwise the manifest is written beside the others,
	// unless one of its objects is defined with others in one file.
	target := ""
	for _, o := range f.Objects {
		paths := defined[o.Key()]
		if len(paths) == 0 {
			continue
		}
		if len(paths) > 1 || count[paths[0]] != len(f.Objects) || (target != "" && target != paths[0]) {
			return nil, fmt.Errorf("%s is defined in %s with other objects: edit that file instead", o.Ref(), relPath(paths[0]))
		}
		target = paths[0]
	}
	if target == "" {
		target = filepath.Join(u.manifestDir, name)
		if _, err := os.Stat(target); err == nil {
			return nil, fmt.Errorf("%s exists and defines other objects: apply it under another file name", relPath(target))
		}
	}
	tmp := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return nil, fmt.Errorf("writing %s: %w", target, err)
	}
	if err := os.Rename(tmp, target); err != nil {
		return nil, fmt.Errorf("writing %s: %w", target, err)
	}
	var msgs []string
	for _, o := range f.Objects {
		msgs = append(msgs, fmt.Sprintf("%s applied (%s)", o.Ref(), relPath(target)))
	}
	u.sync.resync()
	return msgs, nil
}

// post sends a request body and decodes the JSON answer into v.
func (c *Client) post(ctx context.Context, path string, body []byte, v any) error {
	u := strings.TrimRight(c.BaseURL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s (it may have stopped): %v", ErrNotRunning, c.BaseURL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			return &APIError{Status: resp.StatusCode, Message: eb.Error}
		}
		return &APIError{Status: resp.StatusCode, Message: resp.Status}
	}
	return json.Unmarshal(data, v)
}

// APIError is an answer of the API that is not 200 OK.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Canaries returns every canary with its status.
func (c *Client) Canaries(ctx context.Context) ([]v1beta1.Canary, error) {
	var out []v1beta1.Canary
	if err := c.get(ctx, PathCanaries, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RequestAction asks for a manual action (promote, abort, retry, pause,
// resume) on a canary.
func (c *Client) RequestAction(ctx context.Context, namespace, name string, action canary.ManualKind) (string, error) {
	var r CheckResult
	p := PathCanaries + "/" + url.PathEscape(namespace) + "/" + url.PathEscape(name) + "/" + url.PathEscape(string(action))
	if err := c.post(ctx, p, nil, &r); err != nil {
		return "", err
	}
	return r.Message, nil
}

// Apply sends a manifest to the running instance, which writes it into its
// manifest directory.
func (c *Client) Apply(ctx context.Context, fileName string, data []byte) (string, error) {
	var r CheckResult
	if err := c.post(ctx, PathApply+"?file="+url.QueryEscape(fileName), data, &r); err != nil {
		return "", err
	}
	return r.Message, nil
}
