"""Run the operator here as it runs from its image, where the kubernetes client is not installed.

The dev venv has the ``kubernetes`` package (the tests drive the cluster with it), and kopf imports
it whenever it is installed, to recognise its model classes: 46 MiB the operator in its image never
loads (it talks to the API server through lightkube). ``hide()`` makes this interpreter find none
of the client libraries kopf looks for, so tests and benchmarks measure and exercise the operator
as it is deployed; it records who asked, for the footprint test.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any

HIDDEN = ("kubernetes", "kubernetes_asyncio", "pykube")


class NotInstalled(importlib.abc.MetaPathFinder):
    """These packages are not there. Records where each import came from: [name, module, function]."""

    def __init__(self) -> None:
        self.asked: list[list[Any]] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] not in HIDDEN:
            return None
        frame = sys._getframe(1)
        while frame.f_back is not None and frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
        self.asked.append([name, frame.f_globals.get("__name__"), frame.f_code.co_name])
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def hide() -> NotInstalled:
    """From now on this interpreter has no kubernetes client (call before importing kopf)."""
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
    if loaded:
        raise RuntimeError(f"already imported: {loaded}")
    finder = NotInstalled()
    sys.meta_path.insert(0, finder)
    return finder
