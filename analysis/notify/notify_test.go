package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// guard bounds every wait on a channel; it is a failure guard, not a timing.
const guard = 10 * time.Second

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// request is what a receiver saw.
type request struct {
	method, path, uri, contentType, auth, body string
}

// receiver is a local HTTP server that records requests on a channel and
// answers with code (200 when 0).
type receiver struct {
	*httptest.Server
	got chan request
}

func newReceiver(t *testing.T, code int, answer string) *receiver {
	t.Helper()
	rc := &receiver{got: make(chan request, 256)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rc.got <- request{r.Method, r.URL.Path, r.RequestURI, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), string(b)}
		if code != 0 {
			w.WriteHeader(code)
		}
		io.WriteString(w, answer)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// next returns the next request, failing the test if none comes.
func (rc *receiver) next(t *testing.T) request {
	t.Helper()
	select {
	case r := <-rc.got:
		return r
	case <-time.After(guard):
		t.Fatal("no request reached the receiver")
		return request{}
	}
}

// none checks that no request arrived (called after a synchronous Send).
func (rc *receiver) none(t *testing.T) {
	t.Helper()
	select {
	case r := <-rc.got:
		t.Errorf("unexpected request: %s", r.body)
	default:
	}
}

func newSender(t *testing.T, opts Options) *Sender {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s := NewSender(opts)
	t.Cleanup(s.CloseIdleConnections)
	return s
}

func rollback() Event {
	return Event{
		Kind: KindRolledBack, Canary: "podinfo", Namespace: "test", Phase: v1beta1.PhaseFailed,
		Revision: "7d9c5b6f4", Weight: 20, FailingCheck: "request-success-rate 91.3% < min 99%",
		Message:  "Canary analysis failed, rolled back: request-success-rate 91.3% < min 99%",
		Severity: SeverityError, Time: t0.Add(90 * time.Minute).In(time.FixedZone("CEST", 2*3600)),
	}
}

func TestPayloadShapes(t *testing.T) {
	info := Event{Kind: KindNewRevision, Canary: "podinfo", Namespace: "test", Phase: v1beta1.PhaseProgressing,
		Revision: "abc", Message: "New revision detected, progressing canary analysis.", Severity: SeverityInfo, Time: t0,
		Fields: []Field{{"Target", "Deployment/podinfo.test"}, {"Traffic routing", "Weight step: 10 max: 50"}}}
	step := Event{Kind: KindWeightStep, Canary: "podinfo", Namespace: "test", Phase: v1beta1.PhaseProgressing,
		Revision: "abc", Weight: 30, Message: "Advance podinfo.test canary weight 30", Severity: SeverityInfo, Time: t0}
	waiting := Event{Kind: KindWaitingApproval, Canary: "podinfo", Namespace: "test", Phase: v1beta1.PhaseWaitingPromotion,
		Message: "Canary promotion is waiting for approval.", Severity: SeverityWarn, Time: t0}

	tests := []struct {
		name     string
		spec     v1beta1.AlertProviderSpec
		event    Event
		wantPath string
		want     string
	}{
		{"slack error", v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack, Channel: "deploys", Username: "bot"}, rollback(), "/hook",
			`{"channel":"deploys","username":"bot","icon_emoji":":rocket:","attachments":[{"color":"danger","author_name":"podinfo.test","text":"Canary analysis failed, rolled back: request-success-rate 91.3% \u003c min 99%","mrkdwn_in":["text"],"fields":[{"title":"Cluster","value":"eu-1","short":false},{"title":"Revision","value":"7d9c5b6f4","short":false},{"title":"Failing check","value":"request-success-rate 91.3% \u003c min 99%","short":false}]}]}`},
		{"slack info defaults", v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack}, info, "/hook",
			`{"channel":"general","username":"sluice","icon_emoji":":rocket:","attachments":[{"color":"good","author_name":"podinfo.test","text":"New revision detected, progressing canary analysis.","mrkdwn_in":["text"],"fields":[{"title":"Cluster","value":"eu-1","short":false},{"title":"Revision","value":"abc","short":false},{"title":"Target","value":"Deployment/podinfo.test","short":false},{"title":"Traffic routing","value":"Weight step: 10 max: 50","short":false}]}]}`},
		{"slack warn", v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack}, waiting, "/hook",
			`{"channel":"general","username":"sluice","icon_emoji":":rocket:","attachments":[{"color":"warning","author_name":"podinfo.test","text":"Canary promotion is waiting for approval.","mrkdwn_in":["text"],"fields":[{"title":"Cluster","value":"eu-1","short":false}]}]}`},
		{"discord", v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderDiscord}, step, "/hook/slack",
			`{"channel":"general","username":"sluice","icon_emoji":":rocket:","attachments":[{"color":"good","author_name":"podinfo.test","text":"Advance podinfo.test canary weight 30","mrkdwn_in":["text"],"fields":[{"title":"Cluster","value":"eu-1","short":false},{"title":"Revision","value":"abc","short":false},{"title":"Weight","value":"30%","short":false}]}]}`},
		{"rocket", v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderRocket, Channel: "ops"}, rollback(), "/hook",
			`{"channel":"ops","username":"sluice","icon_emoji":":rocket:","attachments":[{"color":"#FF0000","author_name":"podinfo.test","text":"Canary analysis failed, rolled back: request-success-rate 91.3% \u003c min 99%","mrkdwn_in":["text"],"fields":[{"title":"Cluster","value":"eu-1","short":false},{"title":"Revision","value":"7d9c5b6f4","short":false},{"title":"Failing check","value":"request-success-rate 91.3% \u003c min 99%","short":false}]}]}`},
		{"msteams", v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderMSTeams}, rollback(), "/hook",
			`{"@type":"MessageCard","@context":"http://schema.org/extensions","themeColor":"FF0000","summary":"podinfo.test","sections":[{"activityTitle":"Canary analysis failed, rolled back: request-success-rate 91.3% \u003c min 99%","activitySubtitle":"podinfo.test","facts":[{"name":"Cluster","value":"eu-1"},{"name":"Revision","value":"7d9c5b6f4"},{"name":"Failing check","value":"request-success-rate 91.3% \u003c min 99%"}]}]}`},
		{"msteams info", v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderMSTeams}, waiting, "/hook",
			`{"@type":"MessageCard","@context":"http://schema.org/extensions","themeColor":"FFA500","summary":"podinfo.test","sections":[{"activityTitle":"Canary promotion is waiting for approval.","activitySubtitle":"podinfo.test","facts":[{"name":"Cluster","value":"eu-1"}]}]}`},
		{"gchat", v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderGChat}, rollback(), "/hook",
			`{"cards":[{"header":{"title":"Sluice","subtitle":"podinfo.test"},"sections":[{"widgets":[{"textParagraph":{"text":"\u003cfont color=#848484\u003e\u003cstrong\u003eCanary analysis failed, rolled back: request-success-rate 91.3% \u0026lt; min 99%\u003c/strong\u003e\u003c/font\u003e"}}]},{"widgets":[{"textParagraph":{"text":"Cluster\u003cbr\u003e\u003cfont color=#848484\u003e\u003cstrong\u003eeu-1\u003c/strong\u003e\u003c/font\u003e"}}]},{"widgets":[{"textParagraph":{"text":"Revision\u003cbr\u003e\u003cfont color=#848484\u003e\u003cstrong\u003e7d9c5b6f4\u003c/strong\u003e\u003c/font\u003e"}}]},{"widgets":[{"textParagraph":{"text":"Failing check\u003cbr\u003e\u003cfont color=#848484\u003e\u003cstrong\u003erequest-success-rate 91.3% \u0026lt; min 99%\u003c/strong\u003e\u003c/font\u003e"}}]}]}]}`},
		{"generic", v1beta1.AlertProviderSpec{Type: Generic}, rollback(), "/hook",
			`{"kind":"rolled-back","canary":"podinfo","namespace":"test","phase":"Failed","revision":"7d9c5b6f4","weight":20,"failingCheck":"request-success-rate 91.3% \u003c min 99%","message":"Canary analysis failed, rolled back: request-success-rate 91.3% \u003c min 99%","severity":"error","cluster":"eu-1","timestamp":"2025-06-01T13:30:00Z"}`},
		{"generic with fields", v1beta1.AlertProviderSpec{Type: Generic}, info, "/hook",
			`{"kind":"new-revision","canary":"podinfo","namespace":"test","phase":"Progressing","revision":"abc","weight":0,"failingCheck":"","message":"New revision detected, progressing canary analysis.","severity":"info","cluster":"eu-1","timestamp":"2025-06-01T12:00:00Z","fields":[{"name":"Target","value":"Deployment/podinfo.test"},{"name":"Traffic routing","value":"Weight step: 10 max: 50"}]}`},
	}
	rc := newReceiver(t, 0, "ok")
	s := newSender(t, Options{Cluster: "eu-1"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Address = rc.URL + "/hook"
			target := Target{Name: "chat", Namespace: "test", Spec: tt.spec, WeightSteps: true}
			if err := s.Send(context.Background(), target, tt.event); err != nil {
				t.Fatalf("Send: %v", err)
			}
			r := rc.next(t)
			if r.method != http.MethodPost || r.contentType != "application/json" || r.path != tt.wantPath {
				t.Errorf("request %s %s %s, want POST application/json %s", r.method, r.contentType, r.path, tt.wantPath)
			}
			if r.auth != "" {
				t.Errorf("Authorization %q sent without a token", r.auth)
			}
			if r.body != tt.want {
				t.Errorf("body\n got %s\nwant %s", r.body, tt.want)
			}
		})
	}
}

func TestEventClusterWinsOverSender(t *testing.T) {
	rc := newReceiver(t, 0, "")
	s := newSender(t, Options{Cluster: "default"})
	ev := rollback()
	ev.Cluster = "us-2"
	if err := s.Send(context.Background(), Target{Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: rc.URL}}, ev); err != nil {
		t.Fatal(err)
	}
	if b := rc.next(t).body; !strings.Contains(b, `"cluster":"us-2"`) {
		t.Errorf("body %s, want the event's cluster", b)
	}
}

func TestSeverityFilter(t *testing.T) {
	tests := []struct {
		min, sev Severity
		sent     bool
	}{
		{SeverityInfo, SeverityInfo, true},
		{SeverityInfo, SeverityWarn, true},
		{SeverityInfo, SeverityError, true},
		{"", SeverityInfo, true}, // an alert without severity is info
		{SeverityWarn, SeverityInfo, false},
		{SeverityWarn, SeverityWarn, true},
		{SeverityWarn, SeverityError, true},
		{SeverityError, SeverityInfo, false},
		{SeverityError, SeverityWarn, false},
		{SeverityError, SeverityError, true},
		{SeverityError, "", false}, // an event without severity is info
	}
	rc := newReceiver(t, 0, "")
	s := newSender(t, Options{})
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s gets %s", tt.min, tt.sev), func(t *testing.T) {
			target := Target{Spec: v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack, Address: rc.URL}, Severity: tt.min}
			ev := rollback()
			ev.Severity = tt.sev
			if err := s.Send(context.Background(), target, ev); err != nil {
				t.Fatal(err)
			}
			if tt.sent {
				rc.next(t)
			} else {
				rc.none(t)
			}
			if Accepts(tt.min, tt.sev) != tt.sent {
				t.Errorf("Accepts(%q, %q) = %v", tt.min, tt.sev, !tt.sent)
			}
		})
	}
}

func TestWeightStepsAreOptIn(t *testing.T) {
	rc := newReceiver(t, 0, "")
	s := newSender(t, Options{})
	ev := Event{Kind: KindWeightStep, Canary: "a", Namespace: "b", Weight: 10, Severity: SeverityInfo}
	spec := v1beta1.AlertProviderSpec{Type: Generic, Address: rc.URL}
	if err := s.Send(context.Background(), Target{Spec: spec}, ev); err != nil {
		t.Fatal(err)
	}
	rc.none(t)
	if err := s.Send(context.Background(), Target{Spec: spec, WeightSteps: true}, ev); err != nil {
		t.Fatal(err)
	}
	if b := rc.next(t).body; !strings.Contains(b, `"kind":"weight-step"`) || !strings.Contains(b, `"weight":10`) {
		t.Errorf("body %s", b)
	}
}

func TestTemplates(t *testing.T) {
	rc := newReceiver(t, 0, "")
	tests := []struct {
		name      string
		senderTpl string
		targetTpl string
		want      string // the generic message
		wantErrs  int64
	}{
		{"no template", "", "", "Canary analysis failed, rolled back: request-success-rate 91.3% < min 99%", 0},
		{"target template", "", `[{{.Cluster}}] {{.Namespace}}/{{.Canary}}@{{.Revision}} {{.Kind}} at {{.Weight}}%: {{.FailingCheck}} ({{.Time.UTC.Format "15:04"}})`,
			"[eu-1] test/podinfo@7d9c5b6f4 rolled-back at 20%: request-success-rate 91.3% < min 99% (13:30)", 0},
		{"sender default template", "{{.Severity}}: {{.Message}}", "",
			"error: Canary analysis failed, rolled back: request-success-rate 91.3% < min 99%", 0},
		{"target overrides sender", "{{.Severity}}", "{{.Canary}}", "podinfo", 0},
		{"parse error falls back", "", "{{.Canary", "Canary analysis failed, rolled back: request-success-rate 91.3% < min 99%", 1},
		{"unknown field falls back", "", "{{.Version}}", "Canary analysis failed, rolled back: request-success-rate 91.3% < min 99%", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSender(t, Options{Cluster: "eu-1", Template: tt.senderTpl})
			target := Target{Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: rc.URL}, Template: tt.targetTpl}
			if err := s.Send(context.Background(), target, rollback()); err != nil {
				t.Fatalf("Send: %v", err)
			}
			body := rc.next(t).body
			var msg GenericMessage
			if err := json.Unmarshal([]byte(body), &msg); err != nil || msg.Message != tt.want {
				t.Errorf("body %s (%v), want message %q", body, err, tt.want)
			}
			if got := s.TemplateErrors(); got != tt.wantErrs {
				t.Errorf("TemplateErrors = %d, want %d", got, tt.wantErrs)
			}
		})
	}
	// The same template goes into chat messages.
	s := newSender(t, Options{})
	target := Target{Spec: v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack, Address: rc.URL}, Template: "{{.Canary}} is {{.Phase}}"}
	if err := s.Send(context.Background(), target, rollback()); err != nil {
		t.Fatal(err)
	}
	if b := rc.next(t).body; !strings.Contains(b, `"text":"podinfo is Failed"`) {
		t.Errorf("slack body %s", b)
	}
}

func TestCheckTemplate(t *testing.T) {
	for tpl, ok := range map[string]bool{
		"{{.Canary}} {{.Revision}} {{.Cluster}} {{range .Fields}}{{.Name}}={{.Value}}{{end}}": true,
		"{{.Time.Format \"2006\"}}": true,
		"{{.Canary":                 false,
		"{{.Version}}":              false,
		"{{template \"x\"}}":        false,
	} {
		if err := CheckTemplate(tpl); (err == nil) != ok {
			t.Errorf("CheckTemplate(%q) = %v, want ok=%v", tpl, err, ok)
		}
	}
}

func TestAddressAndToken(t *testing.T) {
	rc := newReceiver(t, 0, "")
	other := newReceiver(t, 0, "")
	secrets := MapSecrets{
		"test/full":      {"address": rc.URL + "/from-secret", "token": "s3cret\n"},
		"test/tokenonly": {"token": "tok"},
		"test/empty":     {},
	}
	tests := []struct {
		name      string
		spec      v1beta1.AlertProviderSpec
		reader    SecretReader
		wantPath  string
		wantAuth  string
		wantError string
	}{
		{"address in spec", v1beta1.AlertProviderSpec{Address: rc.URL + "/spec"}, nil, "/spec", "", ""},
		{"secret address overrides spec", v1beta1.AlertProviderSpec{Address: other.URL + "/spec", SecretRef: &v1beta1.SecretReference{Name: "full"}}, secrets, "/from-secret", "Bearer s3cret", ""},
		{"secret token with spec address", v1beta1.AlertProviderSpec{Address: rc.URL + "/spec", SecretRef: &v1beta1.SecretReference{Name: "tokenonly"}}, secrets, "/spec", "Bearer tok", ""},
		{"secret without address and no spec address", v1beta1.AlertProviderSpec{SecretRef: &v1beta1.SecretReference{Name: "empty"}}, secrets, "", "", `secret "empty" has no "address" key`},
		{"missing secret", v1beta1.AlertProviderSpec{SecretRef: &v1beta1.SecretReference{Name: "nope"}}, secrets, "", "", "no address"},
		{"no reader", v1beta1.AlertProviderSpec{SecretRef: &v1beta1.SecretReference{Name: "full"}}, nil, "", "", "no secret reader configured"},
		{"reader fails", v1beta1.AlertProviderSpec{Address: rc.URL, SecretRef: &v1beta1.SecretReference{Name: "full"}}, failingReader{}, "", "", "reading address: apiserver down"},
		{"no address at all", v1beta1.AlertProviderSpec{}, nil, "", "", "no address"},
		{"bad address", v1beta1.AlertProviderSpec{Address: "ftp://x/y"}, nil, "", "", "not an absolute http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSender(t, Options{Secrets: tt.reader})
			tt.spec.Type = Generic
			err := s.Send(context.Background(), Target{Name: "p", Namespace: "test", Spec: tt.spec}, rollback())
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) || !strings.Contains(err.Error(), "test/p") {
					t.Errorf("Send error %v, want one naming test/p and %q", err, tt.wantError)
				}
				rc.none(t)
				other.none(t)
				return
			}
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			r := rc.next(t)
			if r.path != tt.wantPath || r.auth != tt.wantAuth {
				t.Errorf("request to %s with Authorization %q, want %s %q", r.path, r.auth, tt.wantPath, tt.wantAuth)
			}
			other.none(t)
		})
	}

	// A Slack provider with a token and no address posts to chat.postMessage.
	s := newSender(t, Options{Secrets: secrets})
	addr, tok, err := s.resolve(Target{Namespace: "test", Spec: v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack, SecretRef: &v1beta1.SecretReference{Name: "tokenonly"}}})
	if err != nil || addr != SlackAPIURL || tok != "tok" {
		t.Errorf("resolve = %q %q %v, want %s", addr, tok, err, SlackAPIURL)
	}
}

type failingReader struct{}

func (failingReader) Get(string, string, string) (string, error) {
	return "", errors.New("apiserver down")
}

func TestReceiverErrors(t *testing.T) {
	s := newSender(t, Options{})
	t.Run("non-2xx", func(t *testing.T) {
		rc := newReceiver(t, http.StatusForbidden, "invalid_token")
		err := s.Send(context.Background(), Target{Name: "p", Spec: v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack, Address: rc.URL + "/services/T000/B000/XXXX"}}, rollback())
		if err == nil || !strings.Contains(err.Error(), "403 Forbidden: invalid_token") {
			t.Errorf("error %v, want the status and body", err)
		}
		if err != nil && strings.Contains(err.Error(), "XXXX") {
			t.Errorf("error %q repeats the webhook URL's secret path", err)
		}
	})
	t.Run("slack api refuses", func(t *testing.T) {
		rc := newReceiver(t, http.StatusOK, `{"ok":false,"error":"channel_not_found"}`)
		target := Target{Namespace: "test", Spec: v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack, Address: rc.URL, SecretRef: &v1beta1.SecretReference{Name: "s"}}}
		s := newSender(t, Options{Secrets: MapSecrets{"test/s": {"token": "xoxb"}}})
		if err := s.Send(context.Background(), target, rollback()); err == nil || !strings.Contains(err.Error(), "channel_not_found") {
			t.Errorf("error %v, want Slack's reason", err)
		}
		if r := rc.next(t); r.auth != "Bearer xoxb" {
			t.Errorf("Authorization %q", r.auth)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		rc := newReceiver(t, 0, "")
		addr := rc.URL
		rc.Close()
		if err := s.Send(context.Background(), Target{Spec: v1beta1.AlertProviderSpec{Type: Generic, Address: addr}}, rollback()); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("unknown type", func(t *testing.T) {
		if err := s.Send(context.Background(), Target{Spec: v1beta1.AlertProviderSpec{Type: "pager", Address: "http://127.0.0.1:1/"}}, rollback()); err == nil || !strings.Contains(err.Error(), `unknown type "pager"`) {
			t.Errorf("error %v", err)
		}
	})
}

func TestProxy(t *testing.T) {
	// The proxy is a local server: a request through it arrives with the
	// absolute URI of the provider, which is never dialled.
	proxy := newReceiver(t, http.StatusOK, "")
	s := newSender(t, Options{})
	target := Target{Spec: v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderMSTeams, Address: "http://alerts.example.invalid/webhook", Proxy: proxy.URL}}
	if err := s.Send(context.Background(), target, rollback()); err != nil {
		t.Fatal(err)
	}
	r := proxy.next(t)
	if r.uri != "http://alerts.example.invalid/webhook" || !strings.Contains(r.body, `"@type":"MessageCard"`) {
		t.Errorf("proxy saw %s %s", r.uri, r.body)
	}
	target.Spec.Proxy = "not a url"
	if err := s.Send(context.Background(), target, rollback()); err == nil || !strings.Contains(err.Error(), "proxy") {
		t.Errorf("bad proxy: %v", err)
	}
}

func TestDiscordURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://discord.com/api/webhooks/1/abc":           "https://discord.com/api/webhooks/1/abc/slack",
		"https://discord.com/api/webhooks/1/abc/":          "https://discord.com/api/webhooks/1/abc/slack",
		"https://discord.com/api/webhooks/1/abc/slack":     "https://discord.com/api/webhooks/1/abc/slack",
		"https://discord.com/api/webhooks/1/abc?wait=true": "https://discord.com/api/webhooks/1/abc/slack?wait=true",
		"https://discord.com/api/webhooks/1/abc/slack?x=1": "https://discord.com/api/webhooks/1/abc/slack?x=1",
	} {
		if got, err := discordSlackURL(in); err != nil || got != want {
			t.Errorf("discordSlackURL(%s) = %s, %v, want %s", in, got, err, want)
		}
	}
}

func TestSecretReaders(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "test", "slack"), 0o700)
	os.WriteFile(filepath.Join(dir, "test", "slack", "address"), []byte("https://hooks.example/x\n"), 0o600)
	env := map[string]string{"SLUICE_SECRET_TEST_MY_SLACK_TOKEN": "t0k"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	tests := []struct {
		name           string
		r              SecretReader
		ns, sec, key   string
		want           string
		notFound, fail bool
	}{
		{"dir", DirSecrets{dir}, "test", "slack", "address", "https://hooks.example/x", false, false},
		{"dir missing key", DirSecrets{dir}, "test", "slack", "token", "", true, false},
		{"dir missing secret", DirSecrets{dir}, "test", "nope", "address", "", true, false},
		{"dir escape", DirSecrets{dir}, "..", "slack", "address", "", false, true},
		{"env", EnvSecrets{Lookup: lookup}, "test", "my-slack", "token", "t0k", false, false},
		{"env missing", EnvSecrets{Lookup: lookup}, "test", "my-slack", "address", "", true, false},
		{"map missing", MapSecrets{}, "a", "b", "c", "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.r.Get(tt.ns, tt.sec, tt.key)
			switch {
			case tt.notFound:
				if !errors.Is(err, ErrSecretNotFound) {
					t.Errorf("err %v, want ErrSecretNotFound", err)
				}
			case tt.fail:
				if err == nil || errors.Is(err, ErrSecretNotFound) {
					t.Errorf("err %v, want a failure other than not found", err)
				}
			case err != nil || got != tt.want:
				t.Errorf("Get = %q, %v, want %q", got, err, tt.want)
			}
		})
	}
	if n := EnvSecretName("my-ns", "alert.slack", "address"); n != "SLUICE_SECRET_MY_NS_ALERT_SLACK_ADDRESS" {
		t.Errorf("EnvSecretName = %s", n)
	}
}

func TestTargetHelpers(t *testing.T) {
	p := &v1beta1.AlertProvider{Spec: v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderSlack, Address: "https://x"}}
	p.Name, p.Namespace = "on-call", "ops"
	tg := NewTarget(v1beta1.CanaryAlert{Name: "a", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "on-call"}}, p)
	if tg.Severity != SeverityInfo || tg.Name != "on-call" || tg.Namespace != "ops" || tg.Spec.Address != "https://x" {
		t.Errorf("NewTarget = %+v", tg)
	}
	if tg.String() != "ops/on-call (slack)" {
		t.Errorf("String = %s", tg)
	}
	for k, want := range map[EventKind]string{
		KindPromoted:   "Canary analysis completed successfully, promotion finished.",
		KindSkipped:    "Canary analysis was skipped, promotion finished.",
		KindRolledBack: "Canary rolled back.",
	} {
		if got := (Event{Kind: k}).Text(); got != want {
			t.Errorf("Text(%s) = %q, want %q", k, got, want)
		}
	}
}
