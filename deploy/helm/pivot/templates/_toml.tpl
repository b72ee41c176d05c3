{{/*
A small TOML writer for pivot.toml.

"pivot.toml.table" (dict "prefix" "<dotted table name or empty>" "table" <map>) writes a table's
plain keys first, then its sub-tables ([a.b]) and arrays of tables ([[a]]), keys sorted. Strings
are written as JSON strings, which are valid TOML basic strings (same escapes); numbers and
booleans as themselves; maps inside arrays as inline tables. Null values are left out.
*/}}
{{- define "pivot.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}
{{- . -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{- define "pivot.toml.value" -}}
{{- if kindIs "map" . -}}
{{- $parts := list -}}
{{- range $k, $v := . -}}
{{- if not (kindIs "invalid" $v) -}}
{{- $parts = append $parts (printf "%s = %s" (include "pivot.toml.key" $k) (include "pivot.toml.value" $v)) -}}
{{- end -}}
{{- end -}}
{{- if $parts -}}
{ {{- printf " %s " (join ", " $parts) -}} }
{{- else -}}
{}
{{- end -}}
{{- else if kindIs "slice" . -}}
{{- $parts := list -}}
{{- range . -}}
{{- $parts = append $parts (include "pivot.toml.value" .) -}}
{{- end -}}
[{{ join ", " $parts }}]
{{- else if kindIs "invalid" . -}}
{{- fail "pivot.toml: null has no TOML form" -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/* "true" when the value is a non-empty list of maps: an array of tables. */}}
{{- define "pivot.toml.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}
{{- if kindIs "map" (first .) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pivot.toml.table" -}}
{{- $prefix := .prefix -}}
{{- $table := .table -}}
{{- range $k, $v := $table -}}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (include "pivot.toml.isTableArray" $v)) }}
{{ include "pivot.toml.key" $k }} = {{ include "pivot.toml.value" $v }}
{{- end -}}
{{- end -}}
{{- range $k, $v := $table -}}
{{- if kindIs "map" $v -}}
{{- $name := include "pivot.toml.key" $k -}}
{{- if $prefix -}}
{{- $name = printf "%s.%s" $prefix $name -}}
{{- end }}

[{{ $name }}]
{{- include "pivot.toml.table" (dict "prefix" $name "table" $v) -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := $table -}}
{{- if include "pivot.toml.isTableArray" $v -}}
{{- $name := include "pivot.toml.key" $k -}}
{{- if $prefix -}}
{{- $name = printf "%s.%s" $prefix $name -}}
{{- end -}}
{{- range $v }}

[[{{ $name }}]]
{{- include "pivot.toml.table" (dict "prefix" $name "table" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
pivot.toml: config merged with what the chart decides (api.listen, switch.kind,
switch.outbound.listen; [switch.outbound] only with outbound.enabled). node.id,
node.advertise, api.admin_token, api.tokens, cluster.redis_url and switch.freeswitch come from
the environment (PIVOT_* variables of the Deployment).
*/}}
{{- define "pivot.configToml" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $_ := set $cfg "api" (dict "listen" (printf "0.0.0.0:%d" (int .Values.containerPort))) -}}
{{- $_ := set $cfg.switch "kind" (include "pivot.switchKind" .) -}}
{{- if .Values.outbound.enabled -}}
{{- $outbound := deepCopy ($cfg.switch.outbound | default dict) -}}
{{- $_ := set $outbound "listen" (printf "0.0.0.0:%d" (int .Values.outbound.port)) -}}
{{- $_ := set $cfg.switch "outbound" $outbound -}}
{{- else -}}
{{- $_ := unset $cfg.switch "outbound" -}}
{{- end -}}
# pivot.toml, rendered by the pivot Helm chart from its `config` values (every key:
# deploy/config.example.toml). Set by the Deployment's environment, not here:
#   node.id             PIVOT_NODE__ID           the pod's name
#   node.advertise      PIVOT_NODE__ADVERTISE    http://<pod IP>:{{ .Values.containerPort }}
#   api.admin_token     PIVOT_API__ADMIN_TOKEN   from Secret {{ include "pivot.secretName" . }}
{{- if or .Values.auth.accountTokens (and .Values.existingSecret .Values.existingSecretKeys.accountTokens) }}
#   api.tokens          PIVOT_API__TOKENS        from Secret {{ include "pivot.secretName" . }}
{{- end }}
{{- if eq .Values.config.cluster.backend "redis" }}
#   cluster.redis_url   PIVOT_CLUSTER__REDIS_URL from Secret {{ include "pivot.secretName" . }}
{{- end }}
{{- range .Values.freeswitch }}
#   switch.freeswitch   PIVOT_SWITCH__FREESWITCH {{ .name }} at {{ .address }}
{{- end }}

{{ include "pivot.toml.table" (dict "prefix" "" "table" $cfg) | trim }}
{{ end -}}
