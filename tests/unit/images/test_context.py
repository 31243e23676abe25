"""Build contexts: the .dockerignore rules decide what is hashed and staged (tests/images/context.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.images.context import context_files, dockerignore_context, files_digest, is_ignored, parse_ignore, stage

REPO = Path(__file__).resolve().parents[3]
ROOT_RULES = """# The operator image needs pyproject.toml, README.md and operator/modelops only.
**
!pyproject.toml
!README.md
!operator/modelops/**
**/__pycache__
**/*.pyc
"""


@pytest.mark.parametrize("path, ignored", [
    ("pyproject.toml", False),
    ("README.md", False),
    ("operator/modelops/__init__.py", False),
    ("operator/modelops/planning/engines/vllm.py", False),
    ("operator/modelops/__pycache__/x.cpython-311.pyc", True),
    ("operator/modelops/planning/x.pyc", True),
    ("operator/other.py", True),
    (".venv/bin/python", True),
    ("tests/images/build.py", True),
    ("Dockerfile", True),
])
def test_the_root_dockerignore(path: str, ignored: bool) -> None:
    assert is_ignored(path, parse_ignore(ROOT_RULES)) is ignored


@pytest.mark.parametrize("rules, path, ignored", [
    ("*.md", "README.md", True),
    ("*.md", "docs/a.md", False),          # "*" stays in one segment, as in Docker
    ("**/*.md", "docs/a.md", True),
    ("**/*.md", "a.md", True),             # "**/" may match no directory at all
    ("docs", "docs/deep/a.md", True),      # a rule on a directory covers what is under it
    ("/docs", "docs/a.md", True),          # a leading slash means the same
    ("docs\n!docs/keep.md", "docs/keep.md", False),
    ("!docs/keep.md\ndocs", "docs/keep.md", True),  # the last matching rule wins
    ("a?c", "abc", True),
    ("[ab]x", "bx", True),
    ("# only a comment\n\n", "x", False),
])
def test_docker_pattern_semantics(rules: str, path: str, ignored: bool) -> None:
    assert is_ignored(path, parse_ignore(rules)) is ignored


def _tree(root: Path, files: list[str]) -> None:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text(f)


def test_context_files_walks_only_where_a_rule_can_bring_files_back(tmp_path: Path) -> None:
    _tree(tmp_path, ["pyproject.toml", "README.md", "operator/modelops/a.py", "operator/modelops/__pycache__/a.pyc",
                     ".venv/lib/x.py", ".git/HEAD", "tests/t.py"])
    (tmp_path / ".dockerignore").write_text(ROOT_RULES)
    assert list(dockerignore_context(tmp_path)) == ["README.md", "operator/modelops/a.py", "pyproject.toml"]


def test_without_a_dockerignore_everything_is_in(tmp_path: Path) -> None:
    _tree(tmp_path, ["a", "d/b"])
    assert list(context_files(tmp_path, [])) == ["a", "d/b"]


def test_the_digest_sees_content_and_the_executable_bit(tmp_path: Path) -> None:
    _tree(tmp_path, ["a"])
    files = {"a": tmp_path / "a"}
    first = files_digest(files)
    (tmp_path / "a").chmod(0o755)
    second = files_digest(files)
    (tmp_path / "a").write_text("changed")
    third = files_digest(files)
    assert len({first["a"], second["a"], third["a"]}) == 3


def test_stage_copies_exactly_the_context(tmp_path: Path) -> None:
    _tree(tmp_path / "src", ["x/y", "z"])
    os.symlink("z", tmp_path / "src" / "link")
    files = context_files(tmp_path / "src", [])
    stage(files, tmp_path / "staged")
    assert sorted(p.relative_to(tmp_path / "staged").as_posix() for p in (tmp_path / "staged").rglob("*")
                  if not p.is_dir()) == ["link", "x/y", "z"]
    assert os.readlink(tmp_path / "staged" / "link") == "z"


def test_the_repositorys_operator_context_is_small() -> None:
    files = dockerignore_context(REPO)
    assert "pyproject.toml" in files and "README.md" in files
    assert all(f in ("pyproject.toml", "README.md", ".dockerignore") or f.startswith("operator/modelops/")
               for f in files), [f for f in files if not f.startswith("operator/modelops/")]
    assert not any("__pycache__" in f for f in files)
