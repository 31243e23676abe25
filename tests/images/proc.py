"""Running the build's commands: each one a timed step, its output kept in a log file.

A failure raises ``ImageBuildError`` naming the image, the command and the last lines
of its output, so the reason is on the screen without opening the log.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

TAIL_LINES = 40


class ImageBuildError(RuntimeError):
    def __init__(self, image: str, what: str, output: str = "") -> None:
        self.image = image
        self.what = what
        self.output = output
        super().__init__(f"image {image!r}: {what}" + (f"\n--- last lines of output ---\n{output}" if output else ""))


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def step(image: str, what: str) -> Iterator[None]:
    """Print a step when it starts and its time when it ends (also when it fails)."""
    print(f"[{image}] {what} ...", flush=True)
    started = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        print(f"[{image}] {what}: {'done' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s", flush=True)


def run(image: str, cmd: Sequence[str | os.PathLike[str]], *, log: Path, env: Mapping[str, str] | None = None,
        cwd: Path | None = None, stdin: int | None = subprocess.DEVNULL) -> str:
    """Run ``cmd``; its stdout+stderr go to ``log`` (appended) and are returned.

    Output is kept in a file rather than a pipe buffer: a pip install inside a build
    prints thousands of lines, and the log is what one reads after a failure.
    """
    argv = [os.fspath(c) for c in cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        start = out.tell()
        out.write(f"\n$ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=stdin, cwd=cwd,
                                  env=dict(env) if env is not None else None)
        except FileNotFoundError as exc:
            raise ImageBuildError(image, f"cannot run {argv[0]}: {exc}") from exc
    with open(log, "rb") as f:
        f.seek(start)
        output = f.read().decode(errors="replace")
    if proc.returncode != 0:
        raise ImageBuildError(image, f"`{shlex.join(argv)}` exited with {proc.returncode} (log: {log})",
                              tail(output))
    return output
