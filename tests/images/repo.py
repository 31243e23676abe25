"""``operator`` and ``inference``: the repository's own Dockerfiles, built as written.

Only ``PYTHON_IMAGE`` changes (the local Debian base instead of python:3.11-slim-bookworm,
which no registry here serves). The context is what the directory's ``.dockerignore``
lets through: for the root Dockerfile that is pyproject.toml, README.md and
operator/modelops (so .venv, .git and the tests never reach the build or its key).
"""

from __future__ import annotations

from pathlib import Path

from . import base
from .context import dockerignore_context, files_digest
from .plan import Plan

REPO = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"  # the chart's default image tag


def _plan(name: str, ref: str, context_dir: Path) -> Plan:
    files = dockerignore_context(context_dir)
    # The Dockerfile is given to buildah with -f; it is hashed as text, not as a context file.
    files.pop("Dockerfile", None)
    return Plan(name=name, ref=ref, dockerfile=(context_dir / "Dockerfile").read_text(), files=files,
                digests=files_digest(files), build_args={"PYTHON_IMAGE": base.REF}, deps=(base.NAME,))


def operator_plan() -> Plan:
    return _plan("operator", f"ghcr.io/modelops-dev/modelops-operator:{VERSION}", REPO)


def inference_plan() -> Plan:
    return _plan("inference", f"ghcr.io/modelops-dev/modelops-inference:{VERSION}", REPO / "inference-image")
