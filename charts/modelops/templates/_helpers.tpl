{{/* Names and labels. */}}
{{- define "modelops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelops.fullname" -}}
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

{{- define "modelops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "modelops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: modelops
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "modelops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelops.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Lease the replicas elect their leader with (in the release namespace). */}}
{{- define "modelops.leaseName" -}}
{{- include "modelops.fullname" . }}
{{- end }}

{{/*
RBAC: exactly the verbs and resources the operator uses, each rule with the code that needs it.
Verified against a real kube-apiserver by tests/integration/chart/test_rbac.py.
Rules for namespaced resources: a ClusterRole in cluster-wide mode, a Role per watched namespace.
*/}}
{{- define "modelops.namespacedRules" -}}
# Every replica reads everything from kopf's watches (list, watch), which feed the operator's
# cache; a reconcile reads from the API (get) only when the watch has not shown its own last
# writes in time. The leader removes the command annotations it acted on (patch:
# modelops.dev/promote, abort, pause, resume).
# RBAC cannot tell metadata from spec: the ValidatingAdmissionPolicy of templates/spec-guard.yaml
# refuses this ServiceAccount any other change of a ModelDeployment.
- apiGroups: [modelops.dev]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
# Status is written through the status subresource.
- apiGroups: [modelops.dev]
  resources: [modeldeployments/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion on the objects it creates need this where the
# OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift).
- apiGroups: [modelops.dev]
  resources: [modeldeployments/finalizers]
  verbs: [update]
# One Deployment per revision: watched (list, watch; only those the operator labels), read
# again on the rare fallback (get, list), server-side apply creates and updates them (create,
# patch), old revisions are pruned (delete).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# Revisions are scaled (to zero when superseded) through the scale subresource.
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
# The Service in front of the serving revision, and per-revision Services (blue-green
# preview, Gateway API backends): watched (list, watch; the operator's own), read again on the
# fallback (get, list), server-side applied, deleted when no longer wanted.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# A/B tests: the ConfigMap <name>-split the stable revision's gateway reads, server-side applied
# (emptied when the test ends). Write-only: the operator never reads a ConfigMap (the main
# Service records what it applied), so it cannot read other applications' configuration.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, patch]
# Why a revision is not ready: the scheduler's verdict on its pods (e.g. Insufficient nvidia.com/gpu),
# from a watch of the model pods the operator labels (list, watch; list also on the fallback).
# Read only: no get, no create, exec, eviction or logs.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Events on the ModelDeployment at each transition.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.rbac.gatewayAPI }}
# spec.traffic.router gateway-api: one HTTPRoute with weighted backends per ModelDeployment,
# watched (list, watch; the operator's own; where the Gateway API is not installed kopf does
# not watch the kind), read again on the fallback (get, list), server-side applied, deleted
# when the router changes back to service.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
{{- end }}

{{- define "modelops.watchArgs" -}}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- end }}

{{/*
Notification receivers as the operator reads them (MODELOPS_NOTIFY_RECEIVERS): the URL and the
secret headers are files of the mounted Secret, never values in the pod spec.
*/}}
{{- define "modelops.notifyDir" -}}
/etc/modelops/notify
{{- end }}

{{- define "modelops.notifyReceivers" -}}
{{- $dir := include "modelops.notifyDir" . }}
{{- $out := dict }}
{{- range $name, $r := .Values.notifications.receivers }}
{{- $rec := dict "type" $r.type "urlFile" (printf "%s/%s" $dir $r.urlKey) }}
{{- with $r.headers }}{{ $_ := set $rec "headers" . }}{{ end }}
{{- with $r.headersKey }}{{ $_ := set $rec "headersFile" (printf "%s/%s" $dir .) }}{{ end }}
{{- with $r.events }}{{ $_ := set $rec "events" . }}{{ end }}
{{- $_ := set $out $name $rec }}
{{- end }}
{{- toJson $out }}
{{- end }}
