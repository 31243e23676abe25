"""Content keys and archive names (tests/images/plan.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.images.build import DEPS, NAMES, with_deps
from tests.images.plan import Plan, archive_path, content_key, is_archive_of, ref_slug

PLAN = Plan(name="operator", ref="ghcr.io/modelops-dev/modelops-operator:0.1.0", dockerfile="FROM x\n",
            digests={"a.py": "-abc"}, build_args={"PYTHON_IMAGE": "base"}, deps=("base",))


def test_every_input_changes_the_key() -> None:
    key = content_key(PLAN, {"base": "k1"})
    assert content_key(PLAN, {"base": "k1"}) == key
    variants = [
        (replace(PLAN, dockerfile="FROM y\n"), {"base": "k1"}),
        (replace(PLAN, digests={"a.py": "-abd"}), {"base": "k1"}),
        (replace(PLAN, digests={"a.py": "xabc"}), {"base": "k1"}),  # the mode
        (replace(PLAN, digests={"a.py": "-abc", "b.py": "-abc"}), {"base": "k1"}),
        (replace(PLAN, build_args={"PYTHON_IMAGE": "other"}), {"base": "k1"}),
        (replace(PLAN, extra={"debootstrap": "x"}), {"base": "k1"}),
        (replace(PLAN, ref="ghcr.io/modelops-dev/modelops-operator:0.2.0"), {"base": "k1"}),
        (PLAN, {"base": "k2"}),  # the base it is built FROM
    ]
    keys = {content_key(p, deps) for p, deps in variants}
    assert key not in keys and len(keys) == len(variants)


def test_only_the_inputs_matter_not_where_files_come_from() -> None:
    a = replace(PLAN, files={"a.py": Path("/one/a.py")})
    b = replace(PLAN, files={"a.py": Path("/two/a.py")})
    assert content_key(a, {"base": "k"}) == content_key(b, {"base": "k"})


def test_archive_names_carry_ref_and_key(tmp_path: Path) -> None:
    key = "0123456789abcdef" * 4
    path = archive_path("registry.k8s.io/pause:3.10.2", key, tmp_path)
    assert path == tmp_path / "registry.k8s.io_pause_3.10.2-0123456789abcdef.oci.tar"
    assert is_archive_of(path, "registry.k8s.io/pause:3.10.2")
    assert not is_archive_of(path, "registry.k8s.io/pause:3.10")
    assert not is_archive_of(tmp_path / "registry.k8s.io_pause_3.10.2-0123456789abcdef.oci.tar.tmp",
                             "registry.k8s.io/pause:3.10.2")
    assert ref_slug("localhost/modelops/ollama:v0.17.4") == "localhost_modelops_ollama_v0.17.4"


def test_dependencies_come_first_and_are_added() -> None:
    assert with_deps(["pause"]) == ["pause"]
    assert with_deps(["vllm-standin", "operator"]) == ["base", "operator", "vllm-standin"]
    assert with_deps(NAMES) == list(NAMES)
    assert all(NAMES.index(d) < NAMES.index(n) for n, ds in DEPS.items() for d in ds)
