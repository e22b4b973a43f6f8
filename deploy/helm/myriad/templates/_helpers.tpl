{{/* Names and labels shared by every object. */}}
{{- define "myriad.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "myriad.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "myriad.labels" -}}
{{ include "myriad.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "myriad.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "myriad.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* A TOML value: strings quoted, numbers and booleans as they are. */}}
{{- define "myriad.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- . | quote -}}
{{- else if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- . | int64 -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}
