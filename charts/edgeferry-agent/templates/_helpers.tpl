{{/* Names, labels and the required values, shared by every template. */}}

{{- define "edgeferry-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The site identity, `<namePrefix>-edge`: the ServiceAccount and its base ClusterRole. */}}
{{- define "edgeferry-agent.edgeName" -}}
{{- printf "%s-edge" .Values.namePrefix }}
{{- end }}

{{/* Selector labels; call with (dict "ctx" $ "component" "agent"). The name is the product's,
as in manifests/edge/: the component tells the agent from the edge access objects. */}}
{{- define "edgeferry-agent.selectorLabels" -}}
app.kubernetes.io/name: edgeferry
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Recommended labels; call with (dict "ctx" $ "component" "agent"). */}}
{{- define "edgeferry-agent.labels" -}}
helm.sh/chart: {{ include "edgeferry-agent.chart" .ctx }}
{{ include "edgeferry-agent.selectorLabels" . }}
app.kubernetes.io/part-of: edgeferry
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "edgeferry-agent.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The values without a default, refused with what to set them to. */}}
{{- define "edgeferry-agent.targetNamespace" -}}
{{- required "target.namespace is required: the site namespace the agent runs models in, the EdgeTarget's spec.namespace" .Values.target.namespace }}
{{- end }}

{{- define "edgeferry-agent.hubNamespace" -}}
{{- required "target.hubNamespace is required: the EdgeTarget's status.agentNamespace on the hub (kubectl -n <namespace> get edgetarget <name> -o jsonpath='{.status.agentNamespace}')" .Values.target.hubNamespace }}
{{- end }}

{{- define "edgeferry-agent.hubKubeconfigSecret" -}}
{{- required "hubKubeconfigSecret is required: the Secret in the release namespace whose key `kubeconfig` reaches the hub as the agent (docs/pull-mode.md)" .Values.hubKubeconfigSecret }}
{{- end }}
