# syntax=docker/dockerfile:1
# The ModelOps operator image: ghcr.io/modelops-dev/modelops-operator:0.1.0
#
#   docker build -t ghcr.io/modelops-dev/modelops-operator:0.1.0 .
#
# `python -m modelops run` (the default) runs the operator; the Helm chart passes its
# flags (--liveness, --namespace) and leader election through the environment. Runs as
# uid/gid 65532 on a read-only root filesystem (the chart mounts an emptyDir at /tmp). Tested as built: tests/images builds
# it as written (buildah; PYTHON_IMAGE a local Debian Python), then
# tests/integration/chart/test_dockerfile.py lints it and checks the built image's config
# and layers from its OCI archive, and tests/pods runs it in a real pod.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/modelops
COPY pyproject.toml README.md ./
COPY operator/modelops operator/modelops
RUN /opt/modelops/bin/pip install --no-cache-dir . \
    && /opt/modelops/bin/python -m compileall -q /opt/modelops/lib \
    && /opt/modelops/bin/python -m modelops --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelops-operator" \
      org.opencontainers.image.description="Kubernetes operator serving LLMs on GPUs (vLLM, Ollama) with safe rollouts" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/modelops /opt/modelops
ENV PATH=/opt/modelops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
# 8080: Prometheus /metrics; 8081: kopf's liveness /healthz.
EXPOSE 8080 8081
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "modelops"]
CMD ["run"]
