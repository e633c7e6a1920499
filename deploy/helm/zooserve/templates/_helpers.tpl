{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "zooserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "zooserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "zooserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of the release (a Deployment selector is immutable). */}}
{{- define "zooserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zooserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Kubernetes recommended labels (app.kubernetes.io/*) plus helm.sh/chart and commonLabels. */}}
{{- define "zooserve.labels" -}}
helm.sh/chart: {{ include "zooserve.chart" . }}
{{ include "zooserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: inference-server
app.kubernetes.io/part-of: zooserve
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "zooserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zooserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "zooserve.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* The selected resource profile (values.resourceProfiles.<resourceProfile>). */}}
{{- define "zooserve.profile" -}}
{{- $p := get .Values.resourceProfiles .Values.resourceProfile }}
{{- if not $p }}
{{- fail (printf "resourceProfile %q is not defined in resourceProfiles" .Values.resourceProfile) }}
{{- end }}
{{- toYaml $p }}
{{- end }}

{{/* Container resources: `resources` when set, else the profile's. */}}
{{- define "zooserve.resources" -}}
{{- $profile := include "zooserve.profile" . | fromYaml }}
{{- if .Values.resources }}
{{- toYaml .Values.resources }}
{{- else }}
{{- toYaml ($profile.resources | default dict) }}
{{- end }}
{{- end }}


{{/* The Secret holding the API tokens: auth.existingSecret, else the chart's own. */}}
{{- define "zooserve.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "zooserve.fullname" .)) }}
{{- end }}

{{/* Install-time checks of auth, metrics.auth and TLS (included by the Deployment). */}}
{{- define "zooserve.authChecks" -}}
{{- if .Values.auth.enabled }}
{{- if and .Values.auth.existingSecret .Values.auth.token }}
{{- fail "auth: set auth.existingSecret or auth.token, not both" }}
{{- end }}
{{- if not (or .Values.auth.existingSecret .Values.auth.token) }}
{{- fail "auth.enabled needs auth.existingSecret (a Secret of yours holding the tokens) or auth.token" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.auth (not .Values.auth.enabled) }}
{{- fail "metrics.auth needs auth.enabled: /metrics can only require a token that is configured" }}
{{- end }}
{{- if and .Values.metrics.auth .Values.auth.token .Values.metrics.tokenKey (ne .Values.metrics.tokenKey .Values.auth.secretKey) }}
{{- fail "metrics.tokenKey: the chart's own Secret (auth.token) has only the key auth.secretKey; use auth.existingSecret for a key of its own" }}
{{- end }}
{{- $sm := .Values.metrics.serviceMonitor }}
{{- if and .Values.metrics.auth $sm.enabled $sm.namespace (ne $sm.namespace .Release.Namespace) }}
{{- fail "metrics.auth: the ServiceMonitor reads its bearerTokenSecret from its own namespace; leave metrics.serviceMonitor.namespace empty (the release namespace)" }}
{{- end }}
{{- end }}
