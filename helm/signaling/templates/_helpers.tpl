{{/* Names */}}
{{- define "signaling.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "signaling.fullname" -}}
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

{{/* A component's name: <fullname>-<component> (signal, credentials, coturn, redis). */}}
{{- define "signaling.component" -}}
{{- printf "%s-%s" (include "signaling.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "signaling.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "signaling.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "signaling.name" .root }}
{{- end -}}

{{- define "signaling.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signaling.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* One of our images: registry + repository : tag (default appVersion). */}}
{{- define "signaling.image" -}}
{{- printf "%s%s:%s" .root.Values.image.registry .image.repository (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding the shared secrets, or empty if there is none. */}}
{{- define "signaling.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "signaling.component" (dict "root" . "component" "secrets") -}}
{{- end -}}
{{- end -}}

{{/* An env entry from the shared Secret; optional, so an unset key is simply absent. */}}
{{- define "signaling.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "signaling.secretName" .root }}
      key: {{ .key }}
      optional: true
{{- end -}}

{{/* REDIS_URL for the signal nodes. */}}
{{- define "signaling.redisEnv" -}}
{{- if .Values.redis.enabled }}
- name: REDIS_URL
  value: {{ printf "redis://%s:6379" (include "signaling.component" (dict "root" . "component" "redis")) | quote }}
{{- else if .Values.externalRedis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- else }}
- name: REDIS_URL
  value: {{ required "externalRedis.url (or externalRedis.existingSecret) is required when redis.enabled is false" .Values.externalRedis.url | quote }}
{{- end }}
{{- end -}}

{{/* The standalone Redis coturn and the credential service share ("host port"), or empty. */}}
{{- define "signaling.turnRedis" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s 6379" (include "signaling.component" (dict "root" . "component" "redis")) -}}
{{- else if .Values.externalRedis.turnHost -}}
{{- printf "%s %v" .Values.externalRedis.turnHost .Values.externalRedis.turnPort -}}
{{- end -}}
{{- end -}}

{{/* OTEL_* variables when tracing is on. */}}
{{- define "signaling.tracingEnv" -}}
{{- if .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.tracing.otlpEndpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .Values.tracing.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .Values.tracing.samplerArg | quote }}
{{- end }}
{{- end -}}

{{/* Extra environment from a map. */}}
{{- define "signaling.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "signaling.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "signaling.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* NetworkPolicy peers that may reach a serving port: the ingress controller's
    namespace, the monitoring namespace (it scrapes /metrics on the same port), and the
    release's own pods (helm test, the load test). */}}
{{- define "signaling.servingPeers" -}}
- namespaceSelector:
    {{- toYaml .np.ingressNamespaceSelector | nindent 4 }}
- namespaceSelector:
    {{- toYaml .np.monitoringNamespaceSelector | nindent 4 }}
- podSelector:
    matchLabels:
      {{- toYaml .release | nindent 6 }}
{{- end -}}
