{{/* The sluice image, which runs every control-plane role. */}}
{{- define "sluice.image" -}}
{{ .Values.image.registry }}/sluice:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The labels of a component's objects; call with (list $ "role"). */}}
{{- define "sluice.labels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/part-of: sluice
app.kubernetes.io/version: {{ default $.Chart.AppVersion $.Values.image.tag | quote }}
{{- end }}

{{/* The selector of a component's pods; call with "role". */}}
{{- define "sluice.selector" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/component: {{ . }}
{{- end }}

{{/* Pod labels: the selector, and the mark that keeps the injector away. */}}
{{- define "sluice.podLabels" -}}
{{ include "sluice.selector" . }}
sluice.dev/control-plane-component: {{ . }}
{{- end }}

{{/* The pod security context shared by every role. */}}
{{- define "sluice.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container security context shared by every role. */}}
{{- define "sluice.securityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end }}

{{/* Liveness and readiness probes on the admin port 9990. */}}
{{- define "sluice.adminProbes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 5
  failureThreshold: 3
{{- end }}

{{/* Fails the render when a certificate value is missing. */}}
{{- define "sluice.requiredPEM" -}}
{{- $v := index . 0 -}}
{{- required (printf "%s is required: a PEM %s. `sluice install` generates it; with Helm, give it with --set-file %s=FILE" (index . 1) (index . 2) (index . 1)) $v -}}
{{- end }}
