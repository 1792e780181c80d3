{{/* The chart's name, overridable. */}}
{{- define "condaproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of every object of the release. */}}
{{- define "condaproxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods. */}}
{{- define "condaproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "condaproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "condaproxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "condaproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secret whose keys become environment variables, or "" for none. */}}
{{- define "condaproxy.secretName" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else if .Values.secret.env -}}
{{- include "condaproxy.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* Refuse shapes that cannot work (SPEC "Scale"). */}}
{{- define "condaproxy.validate" -}}
{{- if gt (int .Values.replicas) 1 -}}
{{- if not .Values.redis.url -}}
{{- fail "replicas > 1 needs redis.url (SPEC \"Scale\")" -}}
{{- end -}}
{{- if .Values.persistence.enabled -}}
{{- fail "replicas > 1 needs persistence.enabled=false: each replica locks its own data directory, so each gets an emptyDir" -}}
{{- end -}}
{{- end -}}
{{- end -}}
