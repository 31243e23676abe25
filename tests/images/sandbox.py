"""Run a command in an unpacked image root, roughly as a container would: the smoke checks' runtime.

    python -m tests.images.sandbox --root DIR --user 65532:65532 [--readonly] [--tmpfs /tmp]
        [--bind SRC:DST[:ro]] [--proc] [--dev] [--pidns] [--workdir W] [--env K=V] -- CMD ARGS...

No OCI runtime works here (runc via buildah/podman fails on cgroups and rlimits), so
this does the parts of one the checks need, as root: a private mount namespace (nothing
is mounted on the host), the image root bind-mounted onto itself and made read-only when
the pod would have ``readOnlyRootFilesystem``, tmpfs/bind volumes, /proc and /dev, then
``chroot``, the image's numeric user with no supplementary groups, the image's env, exec.
With ``--pidns`` the command is PID 1 of a new PID namespace (what the pause binary is in
a pod); this process stays outside, forwards SIGTERM/SIGINT and exits with its status.
There are no cgroups, capabilities or seccomp filters here: the checks show that the
entry points run as the image's user on the file systems a pod gives them, no more.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare({flags:#x}): {os.strerror(err)}")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _mountpoint(root: Path, inside: str) -> Path:
    target = root / inside.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    return target


def _forward_and_wait(child: int) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signo, _frame: os.kill(child, signo))
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.images.sandbox", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--user", default="0:0", help="uid:gid")
    p.add_argument("--workdir", default="/")
    p.add_argument("--env", action="append", default=[], help="K=V (only these: the image's env and the pod's)")
    p.add_argument("--readonly", action="store_true")
    p.add_argument("--tmpfs", action="append", default=[])
    p.add_argument("--bind", action="append", default=[], help="SRC:DST[:ro]")
    p.add_argument("--proc", action="store_true")
    p.add_argument("--dev", action="store_true", help="the host's /dev, with a fresh tmpfs /dev/shm")
    p.add_argument("--pidns", action="store_true")
    p.add_argument("cmd", nargs="+")
    args = p.parse_args(argv)
    root = args.root.resolve()

    _unshare(CLONE_NEWNS)
    _mount("--make-rprivate", "/")  # nothing below propagates back to the host
    if args.pidns:
        _unshare(CLONE_NEWPID)
        child = os.fork()
        if child:
            return _forward_and_wait(child)
    _mount("--bind", str(root), str(root))
    for spec in args.bind:
        src, dst, *opts = spec.split(":")
        target = _mountpoint(root, dst)
        _mount("--bind", src, str(target))
        if "ro" in opts:
            _mount("-o", "remount,bind,ro", str(target))
    for path in args.tmpfs:
        _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", str(_mountpoint(root, path)))
    if args.proc:
        _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(_mountpoint(root, "/proc")))
    if args.dev:
        dev = _mountpoint(root, "/dev")
        _mount("--bind", "/dev", str(dev))
        _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", str(dev / "shm"))
    if args.readonly:
        _mount("-o", "remount,bind,ro", str(root))

    uid, _, gid = args.user.partition(":")
    env = dict(e.split("=", 1) for e in args.env)
    os.chroot(root)
    os.chdir(args.workdir)
    os.setgroups([])
    os.setgid(int(gid or uid))
    os.setuid(int(uid))
    try:
        os.execvpe(args.cmd[0], args.cmd, env)
    except OSError as exc:
        print(f"sandbox: cannot run {args.cmd[0]}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
