{{/* Names and labels shared by every template. */}}

{{- define "edgeferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release name when it already contains the chart name, else release-chart. */}}
{{- define "edgeferry.fullname" -}}
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

{{- define "edgeferry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edgeferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgeferry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Selector labels of the operator Pods; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "edgeferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgeferry.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Recommended labels; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "edgeferry.labels" -}}
helm.sh/chart: {{ include "edgeferry.chart" .ctx }}
{{ include "edgeferry.selectorLabels" . }}
app.kubernetes.io/part-of: edgeferry
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "edgeferry.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespaces whose ConfigMaps/Secrets the operator may read: rbac.namespaces + watchNamespaces. */}}
{{- define "edgeferry.servedNamespaces" -}}
{{- concat .Values.rbac.namespaces .Values.watchNamespaces | uniq | toJson }}
{{- end }}
