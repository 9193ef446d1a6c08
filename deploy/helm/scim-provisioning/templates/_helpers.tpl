{{/* Names */}}
{{- define "scim.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scim.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "scim.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scim.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: every object. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "scim.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "scim.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: scim-provisioning
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "scim.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scim.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* The image of one service. Call with (dict "root" $ "image" .Values.gateway.image). */}}
{{- define "scim.image" -}}
{{- if .image.digest -}}
{{ .image.repository }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ .image.tag | default .root.Values.imageTag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* An env entry read from a Secret. Call with (dict "name" "DATABASE_URL" "ref" .Values.postgres.directory). */}}
{{- define "scim.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "a Secret name for %s" .name) .ref.existingSecret }}
      key: {{ .ref.key | default .name }}
{{- end }}

{{/*
Environment every service shares: downward API values, OpenTelemetry (OTEL_RESOURCE_ATTRIBUTES
refers to the variables before it, so it cannot come from a ConfigMap), NATS_URL from a Secret
when one is named. service.instance.id (the pod's name) becomes Prometheus' `instance` label
through the collector: without it the replicas' series would overwrite one another. Call with (dict "root" $ "service" "scim-gateway").
*/}}
{{- define "scim.commonEnv" -}}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: OTEL_SERVICE_NAME
  value: {{ .service }}
{{- $attrs := list "service.namespace=scim-provisioning" (printf "service.version=%s" .root.Chart.AppVersion) "service.instance.id=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE_NAME)" "k8s.pod.name=$(K8S_POD_NAME)" "k8s.node.name=$(K8S_NODE_NAME)" }}
{{- range $k, $v := .root.Values.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k (toString $v)) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- $creds := include "scim.natsCredentials" . | fromYaml }}
{{- if and $creds.existingSecret (not $creds.credsKey) }}
{{ include "scim.secretEnv" (dict "name" "NATS_URL" "ref" $creds) }}
{{- else if .root.Values.nats.existingSecret }}
{{ include "scim.secretEnv" (dict "name" "NATS_URL" "ref" .root.Values.nats) }}
{{- end }}
{{- if and $creds.existingSecret $creds.credsKey }}
- name: NATS_CREDS
  value: /etc/scim/nats/credentials/{{ $creds.credsKey }}
{{- end }}
{{- if .root.Values.nats.tls.caSecret }}
- name: NATS_TLS_CA
  value: /etc/scim/nats/tls/{{ .root.Values.nats.tls.caKey }}
{{- end }}
{{- end }}

{{/* A service's NATS credentials (nats.credentials.<gateway|userDirectory|notification>), as YAML. Call with (dict "root" $ "service" "scim-gateway"). */}}
{{- define "scim.natsCredentials" -}}
{{- $key := get (dict "scim-gateway" "gateway" "user-directory" "userDirectory" "notification" "notification") .service -}}
{{- toYaml (get .root.Values.nats.credentials $key | default dict) -}}
{{- end }}

{{/* The NATS files a service's pod mounts: its credentials file, the CA. Call with (dict "root" $ "service" "scim-gateway"). */}}
{{- define "scim.natsVolumes" -}}
{{- $creds := include "scim.natsCredentials" . | fromYaml }}
{{- if and $creds.existingSecret $creds.credsKey }}
- name: nats-credentials
  secret:
    secretName: {{ $creds.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $creds.credsKey }}
        path: {{ $creds.credsKey }}
{{- end }}
{{- with .root.Values.nats.tls.caSecret }}
- name: nats-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0444
    items:
      - key: {{ $.root.Values.nats.tls.caKey }}
        path: {{ $.root.Values.nats.tls.caKey }}
{{- end }}
{{- end }}

{{- define "scim.natsMounts" -}}
{{- $creds := include "scim.natsCredentials" . | fromYaml }}
{{- if and $creds.existingSecret $creds.credsKey }}
- name: nats-credentials
  mountPath: /etc/scim/nats/credentials
  readOnly: true
{{- end }}
{{- if .root.Values.nats.tls.caSecret }}
- name: nats-tls
  mountPath: /etc/scim/nats/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* envFrom of a service: the shared ConfigMap, then its own. */}}
{{- define "scim.envFrom" -}}
- configMapRef:
    name: {{ include "scim.fullname" .root }}-common
- configMapRef:
    name: {{ include "scim.fullname" .root }}-{{ .component }}
{{- end }}

{{/* The writable /tmp every pod gets (the root filesystem is read-only). */}}
{{- define "scim.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{- define "scim.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Pod-level settings shared by the Deployments. Call with (dict "root" $ "svc" .Values.gateway "service" "scim-gateway"). */}}
{{- define "scim.podCommon" -}}
serviceAccountName: {{ include "scim.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .svc.terminationGracePeriodSeconds }}
{{- with .svc.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "scim.tmpVolume" . | nindent 2 }}
  {{- include "scim.natsVolumes" (dict "root" .root "service" .service) | nindent 2 }}
  {{- with .tlsSecret }}
  - name: directory-tls
    secret:
      secretName: {{ . }}
  {{- end }}
{{- end }}

{{/* A NetworkPolicy egress rule: (dict "to" .to "ports" .ports "udp" false). */}}
{{- define "scim.egressRule" -}}
- ports:
    {{- range .ports }}
    - protocol: TCP
      port: {{ . }}
    {{- if $.udp }}
    - protocol: UDP
      port: {{ . }}
    {{- end }}
    {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
