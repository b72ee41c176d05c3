{{/*
Names and labels.
*/}}
{{- define "pivot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pivot.fullname" -}}
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

{{- define "pivot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pivot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pivot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pivot.labels" -}}
helm.sh/chart: {{ include "pivot.chart" . }}
{{ include "pivot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pivot
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "pivot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pivot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "pivot.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the pods read secret material from: the operator's or the chart's. */}}
{{- define "pivot.secretName" -}}
{{- default (include "pivot.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "pivot.configName" -}}
{{- printf "%s-config" (include "pivot.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
switch.kind: config.switch.kind, or when "" chosen from the ways in: "freeswitch" with boxes in
the freeswitch list or the outbound socket listener (pivotd accepts either alone), else "sim".
*/}}
{{- define "pivot.switchKind" -}}
{{- $kind := .Values.config.switch.kind | default "" -}}
{{- if eq $kind "" -}}
{{- ternary "freeswitch" "sim" (or (gt (len .Values.freeswitch) 0) .Values.outbound.enabled) -}}
{{- else -}}
{{- $kind -}}
{{- end -}}
{{- end -}}

{{/* preStop sleep + drain grace + margin: how long Kubernetes waits before SIGKILL. */}}
{{- define "pivot.terminationGracePeriodSeconds" -}}
{{- add (int .Values.lifecycle.preStopSleepSeconds) (int .Values.config.node.drain_grace_s) (int .Values.lifecycle.terminationGraceMarginSeconds) -}}
{{- end -}}

{{/* The name of the env var carrying freeswitch[i]'s password (not a PIVOT_ override). */}}
{{- define "pivot.freeswitchPasswordVar" -}}
{{- printf "FREESWITCH_PASSWORD_%d" (int .) -}}
{{- end -}}

{{/*
PIVOT_SWITCH__FREESWITCH: the [[switch.freeswitch]] array as one TOML value. Each password is
a $(VAR) reference the kubelet expands from the env var read from the Secret; a TOML multi-line
literal string ('''…''') takes any password without newlines or three single quotes in a row.
*/}}
{{- define "pivot.freeswitchToml" -}}
{{- $parts := list -}}
{{- range $i, $fs := .Values.freeswitch -}}
{{- $parts = append $parts (printf "{ name = %s, address = %s, password = '''$(%s)''' }" (toJson $fs.name) (toJson $fs.address) (include "pivot.freeswitchPasswordVar" $i)) -}}
{{- end -}}
[{{ join ", " $parts }}]
{{- end -}}

{{/* Per-account API tokens as a TOML array (PIVOT_API__TOKENS). */}}
{{- define "pivot.accountTokensToml" -}}
{{- $parts := list -}}
{{- range .Values.auth.accountTokens -}}
{{- $parts = append $parts (printf "{ token = %s, account_id = %s }" (toJson .token) (toJson .account_id)) -}}
{{- end -}}
[{{ join ", " $parts }}]
{{- end -}}

{{/*
Checks the schema cannot express; each failure names the values to change.
*/}}
{{- define "pivot.validate" -}}
{{- $backend := .Values.config.cluster.backend -}}
{{- $kind := include "pivot.switchKind" . -}}
{{- if eq $backend "memory" -}}
{{- if .Values.autoscaling.enabled -}}
{{- fail "config.cluster.backend \"memory\" keeps call ownership in one process: autoscaling.enabled must be false (use the redis backend to run several nodes)" -}}
{{- end -}}
{{- if gt (int .Values.replicaCount) 1 -}}
{{- fail (printf "config.cluster.backend \"memory\" keeps call ownership in one process: replicaCount must be 1, not %d (use the redis backend to run several nodes)" (int .Values.replicaCount)) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $kind "freeswitch") (eq (len .Values.freeswitch) 0) (not .Values.outbound.enabled) -}}
{{- fail "config.switch.kind is \"freeswitch\" but the freeswitch list is empty and outbound.enabled is false: add at least one {name, address, password}, or set outbound.enabled for FreeSWITCH's outbound socket" -}}
{{- end -}}
{{- if and (eq $kind "sim") (gt (len .Values.freeswitch) 0) -}}
{{- fail "config.switch.kind is \"sim\" but the freeswitch list is not empty: remove one or the other" -}}
{{- end -}}
{{- $names := dict -}}
{{- range $i, $fs := .Values.freeswitch -}}
{{- if hasKey $names $fs.name -}}
{{- fail (printf "freeswitch[%d].name %q is also the name of freeswitch[%s]; names label metrics and must be unique" $i $fs.name (get $names $fs.name)) -}}
{{- end -}}
{{- $_ := set $names $fs.name (toString $i) -}}
{{- if $.Values.existingSecret -}}
{{- if not $fs.passwordSecretKey -}}
{{- fail (printf "freeswitch[%d] (%s): with existingSecret, give passwordSecretKey (a key of Secret %q) instead of password" $i $fs.name $.Values.existingSecret) -}}
{{- end -}}
{{- else if $fs.passwordSecretKey -}}
{{- fail (printf "freeswitch[%d] (%s): passwordSecretKey needs existingSecret; without it give password" $i $fs.name) -}}
{{- end -}}
{{- if and $fs.password (or (contains "'''" $fs.password) (contains "\n" $fs.password)) -}}
{{- fail (printf "freeswitch[%d] (%s): the password may contain neither a newline nor three single quotes in a row" $i $fs.name) -}}
{{- end -}}
{{- end -}}
{{- if .Values.outbound.enabled -}}
{{- $outboundName := (.Values.config.switch.outbound | default dict).name | default "outbound" -}}
{{- if hasKey $names $outboundName -}}
{{- fail (printf "config.switch.outbound.name %q is also the name of freeswitch[%s]; switch names label metrics and route commands, so they must be unique" $outboundName (get $names $outboundName)) -}}
{{- end -}}
{{- if and (eq $kind "sim") (eq $outboundName "sim") -}}
{{- fail "config.switch.outbound.name \"sim\" is the embedded simulator's name (switch.kind is \"sim\"): choose another" -}}
{{- end -}}
{{- if eq (int .Values.outbound.port) (int .Values.containerPort) -}}
{{- fail (printf "outbound.port %d is also containerPort (the API's port): give the outbound socket listener a port of its own" (int .Values.outbound.port)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.existingSecret -}}
{{- if or .Values.auth.adminToken .Values.auth.accountTokens -}}
{{- fail "auth.adminToken and auth.accountTokens are not used with existingSecret (the tokens come from its keys): remove them or existingSecret" -}}
{{- end -}}
{{- if not .Values.existingSecretKeys.adminToken -}}
{{- fail "existingSecretKeys.adminToken must name the key of the admin token: pivotd refuses to listen on a non-loopback address without one" -}}
{{- end -}}
{{- if and (eq $backend "redis") (not .Values.existingSecretKeys.redisUrl) -}}
{{- fail "existingSecretKeys.redisUrl must name the key of the Redis URL with the redis backend" -}}
{{- end -}}
{{- else if and (eq $backend "redis") (not .Values.redis.url) -}}
{{- fail "redis.url is required with config.cluster.backend \"redis\"" -}}
{{- end -}}
{{- if ne .Values.configStorage "Secret" -}}
{{- range $i, $account := .Values.config.accounts -}}
{{- if $account.signing_secret -}}
{{- fail (printf "config.accounts[%d].signing_secret would be stored in a ConfigMap: set configStorage: Secret" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- end -}}
