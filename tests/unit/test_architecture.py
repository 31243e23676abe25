"""The layering of DESIGN.md, checked mechanically (import-linter contracts in pyproject.toml), and
settings read in one place."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


# Settings are read in one place, OperatorConfig (pydantic-settings reads the environment for it);
# the rest of the operator gets them as arguments, and no module passes values through the environment.
PACKAGE = ROOT / "operator" / "modelops"
NO_ENVIRONMENT = ["adapters", "planning", "domain", "handlers"]
ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(source: str) -> list[str]:
    """Where a module touches the process environment: ``os.environ``, ``os.getenv`` and the like,
    also through ``import os as x`` or ``from os import environ``.

    >>> environment_reads("import os\\nx = os.environ.get('A')")
    ['line 2: os.environ']
    >>> environment_reads("import os as o\\nfrom os import getenv as g\\no.putenv('A', '1')")
    ['line 2: from os import getenv', 'line 3: os.putenv']
    >>> environment_reads("import os\\npath = os.path.join('a', 'b'); pid = os.getpid()")
    []
    """
    tree = ast.parse(source)
    os_names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names if a.name == "os"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"line {node.lineno}: from os import {a.name}" for a in node.names if a.name in ENV_NAMES]
        elif isinstance(node, ast.Attribute) and node.attr in ENV_NAMES and \
                isinstance(node.value, ast.Name) and node.value.id in os_names:
            found.append(f"line {node.lineno}: os.{node.attr}")
    return sorted(found, key=lambda s: int(s.split()[1].rstrip(":")))


def test_the_environment_scan_finds_what_it_looks_for() -> None:
    import doctest

    [examples] = doctest.DocTestFinder().find(environment_reads, globs={"environment_reads": environment_reads})
    result = doctest.DocTestRunner().run(examples)
    assert result.failed == 0 and result.attempted == 3


def test_no_module_below_the_entry_point_reads_the_environment() -> None:
    offenders = {}
    for layer in NO_ENVIRONMENT:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            found = environment_reads(path.read_text())
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, f"read settings in modelops/config.py (OperatorConfig) and pass them down: {offenders}"
