{{/* Chart name, or nameOverride. */}}
{{- define "edgemodel-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name used for every resource, at most 63 characters. */}}
{{- define "edgemodel-operator.fullname" -}}
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

{{/* name-version for the helm.sh/chart label. */}}
{{- define "edgemodel-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pod; never change them after a release exists. */}}
{{- define "edgemodel-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgemodel-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every resource of the chart. */}}
{{- define "edgemodel-operator.labels" -}}
{{ include "edgemodel-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgemodel-operator
helm.sh/chart: {{ include "edgemodel-operator.chart" . }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "edgemodel-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgemodel-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "edgemodel-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
RBAC rules on the namespaced objects the operator works with, used by the ClusterRole when
it watches every namespace and by one Role per namespace otherwise. Each verb is there
because the operator issues that request (see the chart README, "RBAC"):
- edgemodels: list/watch (kopf's watch), patch (kopf removes the finalizer that earlier
  versions put on EdgeModels);
- edgemodels/status: patch (the status the operator writes);
- edgemodels/finalizers: update (children set ownerReferences.blockOwnerDeletion, which the
  OwnerReferencesPermissionEnforcement admission plugin allows only with this right);
- deployments, daemonsets: list/watch (kopf indices), create+patch (server-side apply is a
  PATCH that creates a missing object), delete (a target removed from the spec);
- pods: list/watch (kopf index for readiness and node names), delete (a rollout in waves
  moves a DaemonSet's nodes one by one by deleting their pods; updateStrategy OnDelete);
- pods/status: patch, with activeProbe (the probe's readiness-gate condition);
- services: list/watch/create/patch/delete, as for workloads (one Service per target);
- networkpolicies: list/watch/create/patch/delete, with networkPolicy.enabled;
- events: create (kopf posts core/v1 Events).
*/}}
{{- define "edgemodel-operator.namespacedRules" -}}
- apiGroups: ["edgeai.dev"]
  resources: ["edgemodels"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["edgeai.dev"]
  resources: ["edgemodels/status"]
  verbs: ["patch"]
- apiGroups: ["edgeai.dev"]
  resources: ["edgemodels/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments", "daemonsets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
{{- if .Values.activeProbe }}
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
{{- end }}
{{- if .Values.networkPolicy.enabled }}
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.modelSigning.secretKeyRefs }}
# spec.model.signature.keySecretRef: a model publisher's public key (read, never listed).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/*
The model-server image for targets without an image of their own, "{accelerator}" left for
the operator: serverImage, else the one `make images` publishes under registry.url.
*/}}
{{- define "edgemodel-operator.serverImage" -}}
{{- if .Values.serverImage -}}
{{- .Values.serverImage -}}
{{- else if .Values.registry.url -}}
{{- printf "%s/edgemodel-server:%s-{accelerator}" .Values.registry.url .Chart.AppVersion -}}
{{- else -}}
{{- fail "set registry.url (the registry `make images` published the model-server images to) or serverImage" -}}
{{- end -}}
{{- end }}

{{/*
The operator pod's selector labels as key=value,key=value (EDGEMODEL_OPERATOR_POD_LABELS).
*/}}
{{- define "edgemodel-operator.selectorPairs" -}}
{{- $pairs := list -}}
{{- range $key, $value := include "edgemodel-operator.selectorLabels" . | fromYaml -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}

{{/*
Which builder makes per-model images (EDGEMODEL_BUILDER): builder.mode, but "off" without
registry.url, where nothing could be pushed.
*/}}
{{- define "edgemodel-operator.builder" -}}
{{- if .Values.registry.url -}}{{ .Values.builder.mode }}{{- else -}}off{{- end -}}
{{- end }}

{{/*
The signature settings (EDGEMODEL_MODEL_* and EDGEMODEL_IMAGE_*): only with builds on, where
the keys are mounted; asking for them with builds off is an error, not a silent no-op.
*/}}
{{- define "edgemodel-operator.signingEnv" -}}
{{- $m := .Values.modelSigning -}}
{{- $i := .Values.imageSigning -}}
{{- if eq (include "edgemodel-operator.builder" .) "off" -}}
{{- if or $m.trustedKeysSecret (eq $m.policy "required") $i.keySecret $i.verifyKeysSecret $i.policy $i.namespacePolicies -}}
{{- fail "modelSigning and imageSigning apply to images the operator builds: set registry.url (and builder.mode registry or docker)" -}}
{{- end -}}
{{- else -}}
{{- if eq $m.policy "required" }}
- name: EDGEMODEL_MODEL_SIGNATURE_POLICY
  value: required
{{- end }}
{{- if $m.trustedKeysSecret }}
- name: EDGEMODEL_MODEL_KEYS
  value: /etc/edgemodel/model-keys
{{- else if eq $m.policy "required" }}
{{- fail "modelSigning.policy required needs modelSigning.trustedKeysSecret" }}
{{- end }}
{{- if $i.keySecret }}
- name: EDGEMODEL_IMAGE_SIGNING_KEY
  value: /etc/edgemodel/image-signing/key.pem
- name: EDGEMODEL_IMAGE_SIGNING_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $i.keySecret }}
      key: password
      optional: true
{{- end }}
{{- if $i.verifyKeysSecret }}
- name: EDGEMODEL_IMAGE_VERIFY_KEYS
  value: /etc/edgemodel/image-verify
{{- end }}
{{- with $i.policy }}
- name: EDGEMODEL_IMAGE_SIGNATURE_POLICY
  value: {{ . | quote }}
{{- end }}
{{- if $i.namespacePolicies }}
{{- $pairs := list }}
{{- range $ns, $policy := $i.namespacePolicies }}
{{- $pairs = append $pairs (printf "%s=%s" $ns $policy) }}
{{- end }}
- name: EDGEMODEL_IMAGE_SIGNATURE_NAMESPACES
  value: {{ join "," $pairs | quote }}
{{- end }}
{{- end -}}
{{- end }}
