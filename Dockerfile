# The operator image: the edgemodel_operator package with its optimize extra (model
# conversion and quantization) and its signing extra (model signatures checked, built images
# signed) in a venv, the model-server build context, non-root.
#
# Build context (.dockerignore keeps everything else out):
#   pyproject.toml, README.md, operator/   the package
#   images/                                Dockerfile.model and the image profiles, which
#                                          the operator builds per-accelerator images from
#   wheels/*.whl (optional)                for an air-gapped build: CPython 3.11 manylinux
#                                          wheels of the dependencies, the optimize and
#                                          signing extras and the build backend (setuptools, wheel), as
#                                          `hack/imagekit.py wheels operator` downloads them
# With wheels/ nothing is downloaded (pip --no-index); without it pip installs from
# PIP_INDEX_URL (a mirror or proxy of PyPI). BASE_IMAGE may name a local or mirrored base
# with python3.11 and its venv module, e.g. Debian bookworm's python3 and python3-venv.
#
#   docker build -t edgemodel-operator:0.1.0 .
#   docker build --build-arg BASE_IMAGE=registry.local/python:3.11-slim-bookworm \
#       -t registry.local/edgemodel-operator:0.1.0 .        # with wheels/ in the context
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS venv
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The dependencies first, in a layer of their own that only pyproject.toml and the wheels
# invalidate. `wheel[s]` copies the wheels next to pyproject.toml when the context has
# wheels/, and nothing (no error) when it has not; their presence picks where pip installs
# from. The package itself is an empty placeholder here (operator/ comes next).
COPY pyproject.toml README.md wheel[s] ./
RUN if ls ./*.whl >/dev/null 2>&1; then \
        echo "installing from the wheels in the context, no index"; \
        echo "--no-index --find-links /src" > /src/.pip-source; \
    else \
        echo "installing from ${PIP_INDEX_URL}"; \
        echo "--index-url ${PIP_INDEX_URL}" > /src/.pip-source; \
    fi \
 && mkdir operator \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --quiet $(cat /src/.pip-source) ".[optimize,signing]"
# Then the package. Afterwards pip and setuptools leave the venv, and so do two parts
# nothing imports: the kubernetes client's asyncio copy (kubernetes/aio, ~70 MB with
# bytecode; kopf talks to the API server itself) and onnx's backend conformance test data
# (~17 MB).
COPY operator/ operator/
RUN /opt/venv/bin/python -m pip install --quiet --no-deps --force-reinstall \
        $(cat /src/.pip-source) . \
 && /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools \
 && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio \
           /opt/venv/lib/python3*/site-packages/onnx/backend/test \
 && /opt/venv/bin/python -c "import edgemodel_operator.__main__, edgemodel_operator.optimize, \
        edgemodel_operator.adapters.signing, edgemodel_operator.adapters.model_signatures, model_signing"

# The image itself: the base, the venv (without pip and the wheels that made it), and the
# images/ folder (Dockerfile.model for builder "docker", the profiles). EDGEMODEL_WORK_DIR
# is scratch space under /tmp for models, variants and the unpacked images of the
# daemonless smoke test; /tmp is writable with a read-only root filesystem (the chart
# mounts an emptyDir there).
FROM ${BASE_IMAGE}
COPY --from=venv /opt/venv /opt/venv
COPY images/ /opt/edgemodel/images/
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EDGEMODEL_BUILD_CONTEXT=/opt/edgemodel/images \
    EDGEMODEL_WORK_DIR=/tmp/edgemodel \
    EDGEMODEL_HEALTH_ADDRESS=0.0.0.0:8081
WORKDIR /
USER 65532:65532
# The kopf liveness endpoint /healthz (EDGEMODEL_HEALTH_ADDRESS).
EXPOSE 8081
ENTRYPOINT ["/opt/venv/bin/python", "-m", "edgemodel_operator"]

ARG VERSION=0.1.0
ARG REVISION=""
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="edgemodel-operator" \
      org.opencontainers.image.description="Kubernetes operator that optimizes, builds, places and safely rolls out deep-learning models per accelerator on edge clusters" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
