# The operator image: non-root, the package and its dependencies only.
# BASE_IMAGE lets sites build on a mirrored or local base; PIP_INDEX_URL a local index.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python3 -m pip install --index-url "${PIP_INDEX_URL}" . && rm -rf /src

WORKDIR /
USER 65532:65532
EXPOSE 8081
ENV EDGEMODEL_HEALTH_ADDRESS=0.0.0.0:8081
ENTRYPOINT ["python3", "-m", "edgemodel_operator"]
