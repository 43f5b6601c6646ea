// Package manifest reads the Kubernetes-style YAML that local mode runs from a
// directory: Deployments (apps/v1), Services (v1), HTTPRoutes
// (gateway.networking.k8s.io/v1), the inbound policy kinds
// (policy.sluice.dev/v1beta1) and, kept as generic objects for the engines
// that read them, every kind of the sluice.dev groups (Canary, ...).
//
// A file holds one or more documents separated by "---". Every document is
// decoded strictly, as `kubectl apply` with strict field validation does: an
// unknown or duplicate field is an error naming the field's path and line.
// Each document is then checked for what local mode needs (a Deployment's
// containers[0].command, a Service's ports, ...). Problems never stop the rest
// of a file from being read: the valid documents of a file are returned with
// the errors of the others, and a kind local mode does not run is reported
// (Unsupported) and skipped.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Severity says what a Problem means for the document it is about.
type Severity int

const (
	// Invalid: the document could not be read or is not valid; it is not
	// returned.
	Invalid Severity = iota
	// Unsupported: the document is of a kind local mode does not run; it is
	// skipped.
	Unsupported
	// Warning: the document is returned, but part of it is ignored.
	Warning
)

// String names the severity.
func (s Severity) String() string {
	switch s {
	case Invalid:
		return "invalid"
	case Unsupported:
		return "skipped"
	case Warning:
		return "warning"
	}
	return fmt.Sprintf("Severity(%d)", int(s))
}

// Problem is something wrong in a manifest file, located as precisely as
// possible: the file, the line, the object and the field.
type Problem struct {
	// File is the path of the file, as given to ReadFile or ReadDir.
	File string
	// Line is the 1-based line of the field at fault, or of the document's
	// start; 0 when unknown.
	Line int
	// Object names the document ("Deployment default/web"), when known.
	Object string
	// Field is the path of the field at fault ("spec.replicas"), if any.
	Field string
	// Message says what is wrong.
	Message string
	// Severity says whether the document was dropped, skipped or kept.
	Severity Severity
}

// Error formats the problem as "file:line: object: field: message".
func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Object != "" {
		b.WriteString(p.Object)
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Object is one document of a manifest file that local mode uses.
type Object struct {
	// File and Line locate the document's start.
	File string
	Line int
	// APIVersion and Kind are the document's type.
	APIVersion, Kind string
	// Namespace ("default" when the document names none) and Name identify it.
	Namespace, Name string
	// Object is the decoded document: *appsv1.Deployment, *corev1.Service,
	// *gatewayv1.HTTPRoute, *policyv1beta1.Server, *policyv1beta1.AuthorizationPolicy,
	// *policyv1beta1.MeshTLSAuthentication, *policyv1beta1.NetworkAuthentication,
	// or *unstructured.Unstructured for the kinds of sluice.dev groups. Its
	// namespace is set.
	Object any
	// JSON is the document as JSON, its namespace set: a stable form to
	// compare two versions of an object by.
	JSON []byte
}

// Group returns the API group of the object's apiVersion ("" for the core group).
func (o *Object) Group() string {
	g, _, ok := strings.Cut(o.APIVersion, "/")
	if !ok {
		return ""
	}
	return g
}

// Key identifies the object among all others: "Kind.group/namespace/name".
func (o *Object) Key() string {
	return Key(o.Group(), o.Kind, o.Namespace, o.Name)
}

// Key formats an object key as Object.Key does.
func Key(group, kind, namespace, name string) string {
	if group == "" {
		return kind + "/" + namespace + "/" + name
	}
	return kind + "." + group + "/" + namespace + "/" + name
}

// Ref names the object for people: "Deployment default/web".
func (o *Object) Ref() string { return o.Kind + " " + o.Namespace + "/" + o.Name }

// File is what was read from one manifest file.
type File struct {
	// Path is the file's path.
	Path string
	// Objects are the valid documents, in file order.
	Objects []Object
	// Problems are what was wrong, in file order.
	Problems []*Problem
}

// Complete reports whether every document of the file was read: no Problem is
// Invalid. (Unsupported kinds and warnings do not make a file incomplete.)
func (f *File) Complete() bool {
	for _, p := range f.Problems {
		if p.Severity == Invalid {
			return false
		}
	}
	return true
}

// Extensions are the file name extensions ReadDir reads.
var Extensions = []string{".yaml", ".yml", ".json"}

// IsManifest reports whether ReadDir reads a file of this name: one with a
// manifest extension that is not hidden (editors' swap and backup files are).
func IsManifest(name string) bool {
	base := filepath.Base(name)
	if strings.HasPrefix(base, ".") || strings.HasSuffix(base, "~") {
		return false
	}
	return slices.Contains(Extensions, strings.ToLower(filepath.Ext(base)))
}

// Files lists the manifest files directly in dir (not in subdirectories, as
// `kubectl apply -f DIR` without -R), sorted by name.
func Files(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading manifest directory: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !IsManifest(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		info, err := os.Stat(p) // follows symlinks
		if err != nil || info.IsDir() {
			continue
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// ReadDir reads every manifest file directly in dir, sorted by name. Its error
// is about the directory itself; problems within files are in each File.
func ReadDir(dir string) ([]File, error) {
	paths, err := Files(dir)
	if err != nil {
		return nil, err
	}
	out := make([]File, 0, len(paths))
	for _, p := range paths {
		out = append(out, ReadFile(p))
	}
	return out, nil
}

// ReadFile reads and parses one manifest file. A file that cannot be read is
// a File with one Invalid problem.
func ReadFile(path string) File {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return File{Path: path, Problems: []*Problem{{File: path, Message: fmt.Sprintf("cannot read: %v", err)}}}
	}
	return Parse(path, data)
}

// Parse reads the documents of a manifest file's content; path names the file
// in Objects and Problems.
func Parse(path string, data []byte) File {
	f := File{Path: path}
	docs, err := splitDocuments(data)
	for _, d := range docs {
		obj, problems := decodeDocument(path, d)
		f.Problems = append(f.Problems, problems...)
		if obj != nil {
			f.Objects = append(f.Objects, *obj)
		}
	}
	if err != nil {
		f.Problems = append(f.Problems, syntaxProblem(path, err))
	}
	if len(docs) == 0 && err == nil && len(bytes.TrimSpace(data)) > 0 && !onlyComments(data) {
		f.Problems = append(f.Problems, &Problem{File: path, Message: "no YAML document found"})
	}
	return f
}

// onlyComments reports whether data holds nothing but comments, blank lines
// and document separators.
func onlyComments(data []byte) bool {
	for line := range strings.SplitSeq(string(data), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") && t != "---" && t != "..." {
			return false
		}
	}
	return true
}
