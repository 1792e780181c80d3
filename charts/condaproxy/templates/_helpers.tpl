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

{{/* The Secret of the admin token the chart sets. */}}
{{- define "condaproxy.adminSecretName" -}}
{{- printf "%s-admin" (include "condaproxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
"true" when the chart sets the admin token: always, unless config.auth.admin_token
names one itself (e.g. "${MY_ADMIN_TOKEN}" from secret.existingSecret). Without a
token the binary trusts loopback for admin writes, and in a pod loopback is also a
sidecar's and kubectl port-forward's.
*/}}
{{- define "condaproxy.chartSetsAdminToken" -}}
{{- if not (dig "auth" "admin_token" "" .Values.config) -}}true{{- end -}}
{{- end -}}

{{/*
The admin token the chart sets: adminToken as given; else the one the release's
Secret already holds, so that it stays the same across helm upgrade; else a new
random one. (lookup finds nothing under helm template or --dry-run: each such
render shows a new random token.)
*/}}
{{- define "condaproxy.adminToken" -}}
{{- if .Values.adminToken -}}
{{- .Values.adminToken -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "condaproxy.adminSecretName" .) -}}
{{- $kept := dig "data" "admin-token" "" $existing -}}
{{- if $kept -}}
{{- b64dec $kept -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Refuse shapes that cannot work (SPEC "Scale"), and an ambiguous admin token. */}}
{{- define "condaproxy.validate" -}}
{{- if and .Values.adminToken (dig "auth" "admin_token" "" .Values.config) -}}
{{- fail "set the admin token once: adminToken, or config.auth.admin_token (e.g. \"${VAR}\" from secret.existingSecret), not both" -}}
{{- end -}}
{{- if gt (int .Values.replicas) 1 -}}
{{- if not .Values.redis.url -}}
{{- fail "replicas > 1 needs redis.url (SPEC \"Scale\")" -}}
{{- end -}}
{{- if .Values.persistence.enabled -}}
{{- fail "replicas > 1 needs persistence.enabled=false: each replica locks its own data directory, so each gets an emptyDir" -}}
{{- end -}}
{{- end -}}
{{- end -}}
