package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AlertProvider is a chat service a Canary's alerts are sent to
// (analysis.alerts[].providerRef).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=alertproviders,singular=alertprovider,categories=all;sluice
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=".spec.type"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type AlertProvider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the service and how to reach it.
	Spec AlertProviderSpec `json:"spec"`
	// Status is written by Sluice.
	// +optional
	Status AlertProviderStatus `json:"status,omitempty"`
}

// AlertProviderList is a list of AlertProviders.
//
// +kubebuilder:object:root=true
type AlertProviderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// Items are the providers.
	Items []AlertProvider `json:"items"`
}

// AlertProviderType is the kind of chat service.
//
// +kubebuilder:validation:Enum=slack;msteams;discord;rocket;gchat;generic
type AlertProviderType string

const (
	// AlertProviderSlack posts Slack attachments to an incoming webhook.
	AlertProviderSlack AlertProviderType = "slack"
	// AlertProviderMSTeams posts Microsoft Teams message cards.
	AlertProviderMSTeams AlertProviderType = "msteams"
	// AlertProviderDiscord posts Slack-compatible messages to Discord.
	AlertProviderDiscord AlertProviderType = "discord"
	// AlertProviderRocket posts Slack-compatible messages to Rocket.Chat.
	AlertProviderRocket AlertProviderType = "rocket"
	// AlertProviderGChat posts Google Chat cards.
	AlertProviderGChat AlertProviderType = "gchat"
	// AlertProviderGeneric posts a JSON document with every field of the event.
	AlertProviderGeneric AlertProviderType = "generic"
)

// Defaults of an AlertProvider.
const (
	// DefaultAlertChannel is the channel when spec.channel is empty.
	DefaultAlertChannel = "general"
	// DefaultAlertUsername is the bot name when spec.username is empty.
	DefaultAlertUsername = "sluice"
)

// AlertProviderSpec is a chat service and how to reach it. It needs an
// address, or a secretRef to a Secret holding one.
//
// +kubebuilder:validation:XValidation:rule="has(self.address) || has(self.secretRef)",message="alert provider needs spec.address or spec.secretRef"
type AlertProviderSpec struct {
	// Type of the service: slack, msteams, discord, rocket or gchat.
	// +required
	Type AlertProviderType `json:"type"`

	// Channel to post to. Default "general".
	// +optional
	Channel string `json:"channel,omitempty"`

	// Username the bot posts as. Default "sluice".
	// +optional
	Username string `json:"username,omitempty"`

	// Address is the service's webhook URL. An address in the secret
	// overrides it.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''",message="spec.address must be an absolute http or https URL"
	Address string `json:"address,omitempty"`

	// Proxy is the URL of an HTTP(S) proxy to post through.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHost() != ''",message="spec.proxy must be an absolute http or https URL"
	Proxy string `json:"proxy,omitempty"`

	// SecretRef names a Secret whose "address" key holds the webhook URL
	// (overriding address) and whose optional "token" key is sent as a bearer
	// token.
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`

	// Template is a Go text/template for the message text, with the event's
	// fields (.Canary, .Namespace, .Phase, .Revision, .Weight, .FailingCheck,
	// .Message, .Severity, .Cluster, .Time). Empty uses the default text.
	// +optional
	Template string `json:"template,omitempty"`
}

// GetChannel returns the channel, "general" when empty.
func (s *AlertProviderSpec) GetChannel() string {
	if s.Channel == "" {
		return DefaultAlertChannel
	}
	return s.Channel
}

// GetUsername returns the bot name, "sluice" when empty.
func (s *AlertProviderSpec) GetUsername() string {
	if s.Username == "" {
		return DefaultAlertUsername
	}
	return s.Username
}

// AlertProviderStatus is the state of an AlertProvider.
type AlertProviderStatus struct {
	// Conditions describe the provider.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
