"""Every label, annotation and condition type the operator writes on other objects, named
once: the API group's own keys, and the recommended app.kubernetes.io labels."""

from __future__ import annotations

GROUP = "edgeai.dev"
VERSION = "v1alpha1"
PLURAL = "edgemodels"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "EdgeModel"

MANAGED_BY = "edgemodel-operator"
# The recommended labels (app.kubernetes.io/...), on every child and pod.
APP = "app.kubernetes.io"
NAME_LABEL, INSTANCE_LABEL = f"{APP}/name", f"{APP}/instance"
VERSION_LABEL, COMPONENT_LABEL = f"{APP}/version", f"{APP}/component"
PART_OF_LABEL, MANAGED_BY_LABEL = f"{APP}/part-of", f"{APP}/managed-by"
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}

# On every child and pod: which EdgeModel and target it belongs to.
MODEL_LABEL = f"{GROUP}/edgemodel"
TARGET_LABEL = f"{GROUP}/target"
ACCELERATOR_LABEL = f"{GROUP}/accelerator"
# On the pods that hold failed nodes back on the stable revision (a DaemonSet of their own).
HELD_LABEL = f"{GROUP}/held"

# On workloads and pod templates: the revision (hash of what the spec asks to run) and the
# hash of the whole desired object, for drift detection.
REVISION_ANNOTATION = f"{GROUP}/revision"
SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"

# The pod readiness gate the active probe answers (a pod condition of this type).
PROBE_CONDITION = f"{GROUP}/probe-passed"

# Clients an optional NetworkPolicy lets in: pods labeled edgeai.dev/client=<model name>.
CLIENT_LABEL = f"{GROUP}/client"
