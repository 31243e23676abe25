"""``python -m tests.images build|list|check [names...]``: see tests/images/__init__.py."""

from __future__ import annotations

import argparse
import sys
import time

from . import build
from .plan import MissingInput, archive_path, content_key
from .proc import ImageBuildError


def _list() -> int:
    keys: dict[str, str] = {}
    print(f"{'NAME':<13} {'REF':<46} {'KEY':<12}  ARCHIVE")
    for name in build.NAMES:
        try:
            p = build.PLANNERS[name](False)
        except MissingInput as exc:
            print(f"{name:<13} {'-':<46} {'-':<12}  key not known yet: {exc} (`build` makes it)")
            continue
        if any(d not in keys for d in p.deps):
            print(f"{name:<13} {p.ref:<46} {'-':<12}  (its base is not plannable yet)")
            continue
        key = keys[name] = content_key(p, keys)
        archive = archive_path(p.ref, key)
        state = str(archive) if archive.exists() else f"not built ({archive.name})"
        print(f"{name:<13} {p.ref:<46} {key[:12]:<12}  {state}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.images", description=sys.modules["tests.images"].__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command, text in (("build", "build what is missing or changed"),
                          ("check", "build if needed, then run each image's entry point from its archive")):
        p = sub.add_parser(command, help=text)
        p.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(build.NAMES)}")
    sub.add_parser("list", help="refs, content keys and archives (builds nothing)")
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list()
    try:
        build.with_deps(args.names)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.monotonic()
    try:
        images = build.build_all(args.names or None)
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"\n{'NAME':<13} {'':<6} {'TIME':>7}  REF -> ARCHIVE")
    for image in images:
        print(f"{image.name:<13} {'built' if image.built else 'cached':<6} {image.seconds:>6.1f}s  "
              f"{image.ref} -> {image.archive}")
    print(f"images ready in {time.monotonic() - started:.1f}s")
    if args.command == "check":
        from . import check

        return check.check_all(images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
