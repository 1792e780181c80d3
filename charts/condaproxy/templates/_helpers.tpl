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
"true" for the several-replicas shape (SPEC "Scale"): the replicas share Redis
and an object store, and each keeps its own data directory.
*/}}
{{- define "condaproxy.multiReplica" -}}
{{- if gt (int .Values.replicaCount) 1 -}}true{{- end -}}
{{- end -}}

{{/*
"true" when the data directory is a PersistentVolumeClaim: one replica with
persistence. Several replicas each get an emptyDir, since one claim cannot serve
them all (see replicaCount in values.yaml).
*/}}
{{- define "condaproxy.dataOnClaim" -}}
{{- if and .Values.persistence.enabled (not (include "condaproxy.multiReplica" .)) -}}true{{- end -}}
{{- end -}}

{{/* The configuration's `redis`: redis.url, or config.redis written directly. */}}
{{- define "condaproxy.redisURL" -}}
{{- .Values.redis.url | default (dig "redis" "" .Values.config) -}}
{{- end -}}

{{/*
The configuration's storage.blobs from storage.s3: s3://BUCKET/PREFIX, or
s3://BUCKET without a prefix; "" without a bucket.
*/}}
{{- define "condaproxy.blobs" -}}
{{- with .Values.storage.s3.bucket -}}
{{- printf "s3://%s/%s" . (trimAll "/" $.Values.storage.s3.prefix) | trimSuffix "/" -}}
{{- end -}}
{{- end -}}

{{/*
"true" when the blobs live in an object store: storage.s3.bucket, or
config.storage.blobs written directly.
*/}}
{{- define "condaproxy.objectStore" -}}
{{- if or .Values.storage.s3.bucket (hasPrefix "s3://" (printf "%v" (dig "storage" "blobs" "" .Values.config))) -}}true{{- end -}}
{{- end -}}

{{/*
The Secret that holds the object store's credentials, which reach the
configuration as ${S3_ACCESS_KEY} and ${S3_SECRET_KEY}: storage.s3.existingSecret,
or the chart's <fullname>-s3 for accessKey and secretKey given as values; "" for
none (the standard AWS credential chain).
*/}}
{{- define "condaproxy.s3SecretName" -}}
{{- if .Values.storage.s3.bucket -}}
{{- if .Values.storage.s3.existingSecret -}}
{{- .Values.storage.s3.existingSecret -}}
{{- else if .Values.storage.s3.accessKey -}}
{{- printf "%s-s3" (include "condaproxy.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the chart renders <fullname>-s3 from storage.s3.accessKey and secretKey. */}}
{{- define "condaproxy.chartS3Secret" -}}
{{- if and (include "condaproxy.s3SecretName" .) (not .Values.storage.s3.existingSecret) -}}true{{- end -}}
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
"true" when the value is exactly one "${VAR}": the binary fills it in from the
environment (a Secret) when it loads the file, so the ConfigMap holds no secret.
*/}}
{{- define "condaproxy.isEnvRef" -}}
{{- if regexMatch `^\$\{[A-Za-z_][A-Za-z0-9_]*\}$` (printf "%v" .) -}}true{{- end -}}
{{- end -}}

{{/*
"true" when the chart renders its own Secret, <fullname>-admin: for the admin
token it sets, and for the salt of the pods' restart checksums whenever one of
them covers a secret (secret.env, the S3 credentials given as values).
*/}}
{{- define "condaproxy.ownSecret" -}}
{{- if or (include "condaproxy.chartSetsAdminToken" .) (and .Values.secret.env (not .Values.secret.existingSecret)) (include "condaproxy.chartS3Secret" .) -}}true{{- end -}}
{{- end -}}

{{/*
The admin token the chart sets and the checksum salt, as a dict {token, salt},
made once per render and shared by every template: the Secret holds them and the
Deployment's annotation is computed from them, so both must see the same random
values. (Helm hands every template of a chart the same .Values map.)

- token: adminToken as given; else the one the release's Secret already holds,
  so that it stays the same across helm upgrade; else a new random one.
- salt: checksumSalt as given; else the one the Secret holds; else a new random
  one. The pods' restart annotations are checksums over a secret, and a checksum
  of a secret alone would let whoever may read the Deployment (more people than
  may read Secrets) test guesses of it offline; salted with a random value that
  only the Secret holds, it tells nothing.

lookup finds nothing under helm template or --dry-run (Argo CD renders so): each
such render makes a new token and salt, and so restarts the pods, which must
read the new token. See the README's "GitOps".
*/}}
{{- define "condaproxy.ownSecretValues" -}}
{{- if not (hasKey .Values "__condaproxyOwnSecret") -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "condaproxy.adminSecretName" .) -}}
{{- $token := .Values.adminToken -}}
{{- if not $token -}}
{{- $kept := dig "data" "admin-token" "" $existing -}}
{{- $token = ternary (b64dec $kept) (randAlphaNum 32) (ne $kept "") -}}
{{- end -}}
{{- $salt := .Values.checksumSalt -}}
{{- if not $salt -}}
{{- $kept := dig "data" "checksum-salt" "" $existing -}}
{{- $salt = ternary (b64dec $kept) (randAlphaNum 32) (ne $kept "") -}}
{{- end -}}
{{- $_ := set .Values "__condaproxyOwnSecret" (dict "token" $token "salt" $salt) -}}
{{- end -}}
{{- end -}}

{{/* The admin token the chart sets (see condaproxy.ownSecretValues). */}}
{{- define "condaproxy.adminToken" -}}
{{- include "condaproxy.ownSecretValues" . -}}
{{- get (get .Values "__condaproxyOwnSecret") "token" -}}
{{- end -}}

{{/* The salt of the restart checksums (see condaproxy.ownSecretValues). */}}
{{- define "condaproxy.checksumSalt" -}}
{{- include "condaproxy.ownSecretValues" . -}}
{{- get (get .Values "__condaproxyOwnSecret") "salt" -}}
{{- end -}}

{{/*
A restart checksum over a text that holds a secret: salted (see
condaproxy.ownSecretValues). Called with (list $ text).
*/}}
{{- define "condaproxy.saltedChecksum" -}}
{{- $root := index . 0 -}}
{{- printf "%s\n%s" (include "condaproxy.checksumSalt" $root) (index . 1) | sha256sum -}}
{{- end -}}

{{/*
The fail message for a secret written into `config` itself: the ConfigMap is
readable by more people than Secrets, and rendered into the release.
*/}}
{{- define "condaproxy.literalSecret" -}}
{{- printf "%s holds a secret in plain text, which would land in the ConfigMap: put it in a Secret (secret.existingSecret) and write \"${VAR}\" here instead" . -}}
{{- end -}}

{{/*
Refuse shapes that cannot work (SPEC "Scale"), settings given two ways at once,
and secrets written into the configuration.
*/}}
{{- define "condaproxy.validate" -}}
{{- $auth := dig "auth" dict .Values.config -}}
{{- $adminInConfig := dig "admin_token" "" $auth -}}
{{- if and .Values.adminToken $adminInConfig -}}
{{- fail "set the admin token once: adminToken, or config.auth.admin_token (e.g. \"${VAR}\" from secret.existingSecret), not both" -}}
{{- end -}}
{{- if and $adminInConfig (not (include "condaproxy.isEnvRef" $adminInConfig)) -}}
{{- fail (printf "%s (or leave it empty: the chart then sets a token of its own, see adminToken)" (include "condaproxy.literalSecret" "config.auth.admin_token")) -}}
{{- end -}}
{{- range $i, $t := (dig "tokens" list $auth) -}}
{{- $tok := $t -}}
{{- if kindIs "map" $t -}}
{{- $tok = dig "token" "" $t -}}
{{- end -}}
{{- if not (include "condaproxy.isEnvRef" $tok) -}}
{{- fail (include "condaproxy.literalSecret" (printf "config.auth.tokens[%d]" $i)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.url (dig "redis" "" .Values.config) -}}
{{- fail "set Redis once: redis.url or config.redis, not both" -}}
{{- end -}}
{{- with (include "condaproxy.redisURL" .) -}}
{{- include "condaproxy.validateURL" (list "redis.url (or config.redis)" .) -}}
{{- end -}}
{{- include "condaproxy.validateStorage" . -}}
{{- range $c := (dig "channels" list .Values.config) -}}
{{- range $i, $up := (dig "upstreams" list $c) -}}
{{- $where := printf "config.channels[%s].upstreams[%d]" (dig "name" "" $c) $i -}}
{{- with (dig "password" "" $up) -}}
{{- if not (include "condaproxy.isEnvRef" .) -}}
{{- fail (include "condaproxy.literalSecret" (printf "%s.password" $where)) -}}
{{- end -}}
{{- end -}}
{{- include "condaproxy.validateURL" (list (printf "%s.url" $where) (dig "url" "" $up)) -}}
{{- end -}}
{{- end -}}
{{- /*
The variables the chart sets itself in the container's env: a Secret's own
(envFrom) would lose to them, silently.
*/ -}}
{{- $env := ternary dict (.Values.secret.env | default dict) (ne .Values.secret.existingSecret "") -}}
{{- if .Values.secret.existingSecret -}}
{{- $env = dig "data" dict (lookup "v1" "Secret" .Release.Namespace .Values.secret.existingSecret) -}}
{{- end -}}
{{- if and (include "condaproxy.chartSetsAdminToken" .) (hasKey $env "CONDAPROXY_ADMIN_TOKEN") -}}
{{- fail "the Secret of secret.env or secret.existingSecret sets CONDAPROXY_ADMIN_TOKEN, which the chart sets itself from adminToken (and would override): set the token as adminToken, or set config.auth.admin_token to \"${CONDAPROXY_ADMIN_TOKEN}\" to use the Secret's" -}}
{{- end -}}
{{- if include "condaproxy.s3SecretName" . -}}
{{- range $var := list "S3_ACCESS_KEY" "S3_SECRET_KEY" -}}
{{- if hasKey $env $var -}}
{{- fail (printf "the Secret of secret.env or secret.existingSecret sets %s, which the chart sets itself from storage.s3's credentials (and would override): give the credentials once, as storage.s3.existingSecret or storage.s3.accessKey and secretKey" $var) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if hasKey .Values "replicas" -}}
{{- fail "the value replicas is now replicaCount: rename it in your values (left as it is, it would be ignored and deploy one replica)" -}}
{{- end -}}
{{- if include "condaproxy.multiReplica" . -}}
{{- $missing := list -}}
{{- if not (include "condaproxy.redisURL" .) -}}
{{- $missing = append $missing "redis.url (the Redis that coordinates them)" -}}
{{- end -}}
{{- if not (include "condaproxy.objectStore" .) -}}
{{- $missing = append $missing "storage.s3.bucket (the object store they share)" -}}
{{- end -}}
{{- with $missing -}}
{{- fail (printf "replicaCount %v needs %s: several replicas share both (see \"Several replicas\" in the chart's README)" $.Values.replicaCount (join " and " .)) -}}
{{- end -}}
{{- if .Values.persistence.existingClaim -}}
{{- fail "replicaCount > 1 cannot use persistence.existingClaim: each replica keeps its own data directory on an emptyDir, and one claim cannot serve several pods (ReadWriteOnce binds it to one node, and the binary refuses a second process on a data directory)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Refuse an object store the binary could not use, or whose credentials would
land in the ConfigMap: storage.s3 (values) and config.storage (written directly)
are two ways to one setting, so only one may be used.
*/}}
{{- define "condaproxy.validateStorage" -}}
{{- $cfgStorage := dig "storage" dict .Values.config -}}
{{- range $key := list "access_key" "secret_key" -}}
{{- with (dig "s3" $key "" $cfgStorage) -}}
{{- if not (include "condaproxy.isEnvRef" .) -}}
{{- fail (include "condaproxy.literalSecret" (printf "config.storage.s3.%s" $key)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with (dig "s3" "endpoint" "" $cfgStorage) -}}
{{- include "condaproxy.validateURL" (list "config.storage.s3.endpoint" .) -}}
{{- end -}}
{{- with .Values.storage.s3.endpoint -}}
{{- include "condaproxy.validateURL" (list "storage.s3.endpoint" .) -}}
{{- end -}}
{{- if and .Values.storage.s3.bucket $cfgStorage -}}
{{- fail "set the object store once: storage.s3 (the chart writes config.storage from it) or config.storage, not both" -}}
{{- end -}}
{{- if contains "/" .Values.storage.s3.bucket -}}
{{- fail (printf "storage.s3.bucket %q holds a \"/\": name the bucket alone and put the path in storage.s3.prefix" .Values.storage.s3.bucket) -}}
{{- end -}}
{{- if and .Values.storage.s3.existingSecret (or .Values.storage.s3.accessKey .Values.storage.s3.secretKey) -}}
{{- fail "give the S3 credentials once: storage.s3.existingSecret, or storage.s3.accessKey and secretKey, not both" -}}
{{- end -}}
{{- if ne (not .Values.storage.s3.accessKey) (not .Values.storage.s3.secretKey) -}}
{{- fail "storage.s3.accessKey and storage.s3.secretKey go together: set both, or neither (then storage.s3.existingSecret, or the standard AWS credential chain)" -}}
{{- end -}}
{{- if and (not .Values.storage.s3.bucket) (or .Values.storage.s3.existingSecret .Values.storage.s3.accessKey) -}}
{{- fail "storage.s3 has credentials but no bucket: set storage.s3.bucket (without it the blobs stay on local disk)" -}}
{{- end -}}
{{- end -}}

{{/*
Refuse a URL of the configuration that carries a secret in plain text: a
password (scheme://user:password@) or a channel token (/t/<token>/), other
than a "${VAR}". Called with (list where url).
*/}}
{{- define "condaproxy.validateURL" -}}
{{- $where := index . 0 -}}
{{- $url := printf "%v" (index . 1) -}}
{{- $userinfo := regexFind `^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@` $url -}}
{{- if $userinfo -}}
{{- $password := regexReplaceAll `^[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:?(.*)@$` $userinfo "${1}" -}}
{{- if and $password (not (include "condaproxy.isEnvRef" $password)) -}}
{{- fail (include "condaproxy.literalSecret" (printf "%s (its password)" $where)) -}}
{{- end -}}
{{- end -}}
{{- range $seg := regexFindAll `/t/[^/]+(/|$)` $url -1 -}}
{{- if not (include "condaproxy.isEnvRef" (trimSuffix "/" (trimPrefix "/t/" $seg))) -}}
{{- fail (include "condaproxy.literalSecret" (printf "%s (its /t/<token>/)" $where)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
