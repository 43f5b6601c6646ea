package notify

import (
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/crds/sluice/v1beta1"
)

// The JSON documents posted to each provider type. Slack, Discord and
// Rocket.Chat take Slack's incoming-webhook message; Teams a MessageCard;
// Google Chat a card; generic an Event with every field.

type slackMessage struct {
	Channel     string            `json:"channel"`
	Username    string            `json:"username"`
	IconEmoji   string            `json:"icon_emoji"`
	Attachments []slackAttachment `json:"attachments"`
}

type slackAttachment struct {
	Color      string       `json:"color"`
	AuthorName string       `json:"author_name"`
	Text       string       `json:"text"`
	MrkdwnIn   []string     `json:"mrkdwn_in"`
	Fields     []slackField `json:"fields,omitempty"`
}

type slackField struct {
	Title string `json:"title"`
	Value string `json:"value"`
	Short bool   `json:"short"`
}

type teamsCard struct {
	Type       string         `json:"@type"`
	Context    string         `json:"@context"`
	ThemeColor string         `json:"themeColor"`
	Summary    string         `json:"summary"`
	Sections   []teamsSection `json:"sections"`
}

type teamsSection struct {
	ActivityTitle    string  `json:"activityTitle"`
	ActivitySubtitle string  `json:"activitySubtitle"`
	Facts            []Field `json:"facts,omitempty"`
}

type gchatMessage struct {
	Cards []gchatCard `json:"cards"`
}

type gchatCard struct {
	Header   gchatHeader    `json:"header"`
	Sections []gchatSection `json:"sections"`
}

type gchatHeader struct {
	Title    string `json:"title"`
	Subtitle string `json:"subtitle"`
}

type gchatSection struct {
	Widgets []gchatWidget `json:"widgets"`
}

type gchatWidget struct {
	TextParagraph gchatText `json:"textParagraph"`
}

type gchatText struct {
	Text string `json:"text"`
}

// GenericMessage is the document the generic provider posts: every field of
// the Event, the message rendered.
type GenericMessage struct {
	// Kind is what happened, e.g. "rolled-back".
	Kind EventKind `json:"kind"`
	// Canary is the Canary's name.
	Canary string `json:"canary"`
	// Namespace is the Canary's namespace.
	Namespace string `json:"namespace"`
	// Phase is the Canary's phase.
	Phase v1beta1.CanaryPhase `json:"phase"`
	// Revision is the revision the run is about.
	Revision string `json:"revision"`
	// Weight is the canary's weight.
	Weight int `json:"weight"`
	// FailingCheck names the failing check, or is empty.
	FailingCheck string `json:"failingCheck"`
	// Message is the rendered message.
	Message string `json:"message"`
	// Severity is info, warn or error.
	Severity Severity `json:"severity"`
	// Cluster names the cluster, or is empty.
	Cluster string `json:"cluster"`
	// Timestamp is when it happened, RFC 3339 in UTC.
	Timestamp time.Time `json:"timestamp"`
	// Fields are the event's extra facts.
	Fields []Field `json:"fields,omitempty"`
}

// colors per provider: info, warn, error.
var (
	slackColors = [3]string{"good", "warning", "danger"}
	rocketColor = [3]string{"#0076D7", "#FFA500", "#FF0000"}
	teamsColors = [3]string{"0076D7", "FFA500", "FF0000"}
)

// fields returns the facts shown with a chat message.
func fields(ev Event) []Field {
	var fs []Field
	if ev.Cluster != "" {
		fs = append(fs, Field{"Cluster", ev.Cluster})
	}
	if ev.Revision != "" {
		fs = append(fs, Field{"Revision", ev.Revision})
	}
	if ev.Kind == KindWeightStep {
		fs = append(fs, Field{"Weight", strconv.Itoa(ev.Weight) + "%"})
	}
	if ev.FailingCheck != "" {
		fs = append(fs, Field{"Failing check", ev.FailingCheck})
	}
	return append(fs, ev.Fields...)
}

// body returns the document for the provider type, the message already
// rendered into text. ev.Cluster is already defaulted.
func body(spec v1beta1.AlertProviderSpec, ev Event, text string) any {
	author := ev.Canary + "." + ev.Namespace
	sev := rank(ev.Severity)
	fs := fields(ev)
	switch spec.Type {
	case v1beta1.AlertProviderSlack, v1beta1.AlertProviderDiscord, v1beta1.AlertProviderRocket:
		colors := slackColors
		if spec.Type == v1beta1.AlertProviderRocket {
			colors = rocketColor
		}
		var sf []slackField
		for _, f := range fs {
			sf = append(sf, slackField{Title: f.Name, Value: f.Value})
		}
		return slackMessage{
			Channel:   spec.GetChannel(),
			Username:  spec.GetUsername(),
			IconEmoji: ":rocket:",
			Attachments: []slackAttachment{{
				Color: colors[sev], AuthorName: author, Text: text,
				MrkdwnIn: []string{"text"}, Fields: sf,
			}},
		}
	case v1beta1.AlertProviderMSTeams:
		return teamsCard{
			Type: "MessageCard", Context: "http://schema.org/extensions",
			ThemeColor: teamsColors[sev], Summary: author,
			Sections: []teamsSection{{ActivityTitle: text, ActivitySubtitle: author, Facts: fs}},
		}
	case v1beta1.AlertProviderGChat:
		secs := []gchatSection{paragraph("<font color=#848484><strong>" + escapeHTML(text) + "</strong></font>")}
		for _, f := range fs {
			secs = append(secs, paragraph(escapeHTML(f.Name)+"<br><font color=#848484><strong>"+escapeHTML(f.Value)+"</strong></font>"))
		}
		return gchatMessage{Cards: []gchatCard{{Header: gchatHeader{Title: "Sluice", Subtitle: author}, Sections: secs}}}
	default: // Generic
		return GenericMessage{
			Kind: ev.Kind, Canary: ev.Canary, Namespace: ev.Namespace, Phase: ev.Phase,
			Revision: ev.Revision, Weight: ev.Weight, FailingCheck: ev.FailingCheck,
			Message: text, Severity: severityOrInfo(ev.Severity), Cluster: ev.Cluster,
			Timestamp: ev.Time.UTC(), Fields: ev.Fields,
		}
	}
}

func paragraph(s string) gchatSection {
	return gchatSection{Widgets: []gchatWidget{{TextParagraph: gchatText{Text: s}}}}
}

var htmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// escapeHTML keeps a message's <, > and & from being read as Google Chat
// markup.
func escapeHTML(s string) string { return htmlEscaper.Replace(s) }

func severityOrInfo(s Severity) Severity {
	if s == "" {
		return SeverityInfo
	}
	return s
}
