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

