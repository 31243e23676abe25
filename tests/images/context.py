"""Build contexts: which files go in (``.dockerignore``), their content hash, and a staged copy.

The build never reads the source tree directly: the files the ignore rules let through
are hashed and then copied into a staging directory that buildah builds from. What is
hashed is therefore exactly what the build sees; a stray file in the tree (``.venv``,
``.git``, ``__pycache__``) neither changes the key nor slows the build down.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping


@dataclass(frozen=True)
class Rule:
    pattern: str  # cleaned, relative, "/"-separated
    negate: bool
    regex: re.Pattern[str]


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go's filepath.Match plus ``**``) as a regular expression.

    ``*`` and ``?`` stay within one path segment; ``**`` spans any number of segments,
    including none (so ``**/x`` also matches a top-level ``x``).
    """
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/" = zero or more leading segments
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def parse_ignore(text: str) -> list[Rule]:
    """The rules of a ``.dockerignore`` file, in order (the last matching rule wins)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:].strip()
        cleaned = os.path.normpath(line).replace(os.sep, "/").lstrip("/")
        if cleaned in ("", "."):
            continue
        rules.append(Rule(cleaned, negate, _glob_to_regex(cleaned)))
    return rules


def is_ignored(relpath: str, rules: Iterable[Rule]) -> bool:
    """Whether a file is left out of the context: like Docker, a rule that matches the path or
    any of its parent directories applies, and the last rule that applies decides."""
    parts = PurePosixPath(relpath).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for rule in rules:
        if any(rule.regex.match(c) for c in candidates):
            ignored = not rule.negate
    return ignored


def _literal_prefix(pattern: str) -> str:
    m = re.search(r"[*?\[\\]", pattern)
    return pattern if m is None else pattern[:m.start()]


def _may_contain_exceptions(reldir: str, rules: list[Rule]) -> bool:
    """Could a ``!`` rule bring back a file under this (ignored) directory?  If not, the walk
    skips it, which is what keeps ``.venv`` and ``.git`` out of the walk entirely."""
    for rule in rules:
        if not rule.negate:
            continue
        prefix = _literal_prefix(rule.pattern)
        if prefix.startswith(reldir + "/") or (reldir + "/").startswith(prefix) or prefix == "":
            return True
    return False


def context_files(root: Path, rules: list[Rule]) -> dict[str, Path]:
    """Every regular file (and symlink) under ``root`` that the rules let into the context,
    relative path -> absolute path, sorted."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        reldir = Path(dirpath).relative_to(root).as_posix()
        reldir = "" if reldir == "." else reldir
        keep = []
        for d in sorted(dirnames):
            rel = f"{reldir}/{d}" if reldir else d
            if not is_ignored(rel, rules) or _may_contain_exceptions(rel, rules):
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            rel = f"{reldir}/{name}" if reldir else name
            if not is_ignored(rel, rules):
                found[rel] = Path(dirpath) / name
    return dict(sorted(found.items()))


def dockerignore_context(root: Path) -> dict[str, Path]:
    ignore = root / ".dockerignore"
    rules = parse_ignore(ignore.read_text()) if ignore.exists() else []
    return context_files(root, rules)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_symlink():
        h.update(b"symlink:" + os.readlink(path).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_digest(files: Mapping[str, Path]) -> dict[str, str]:
    """Per file: content hash and whether it is executable (a mode change matters to a COPY)."""
    out = {}
    for rel, path in sorted(files.items()):
        exe = "x" if (not path.is_symlink() and os.access(path, os.X_OK)) else "-"
        out[rel] = f"{exe}{file_digest(path)}"
    return out


def stage(files: Mapping[str, Path], dest: Path) -> None:
    """Copy the context files into ``dest`` (hard links where possible: the staged copy of a
    35 MB binary costs nothing, and the build only reads it)."""
    for rel, src in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
            continue
        try:
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)
