"""``python -m tests.components install|status``: the real components of the inference tests.

    python -m tests.components install            # llama.cpp server + SmolLM2 + Ollama (cached builds) + Prometheus + Redis
    python -m tests.components install nginx     # the benchmark's reverse-proxy baseline
    python -m tests.components status
"""

from __future__ import annotations

import argparse
import sys
import time

from . import install, ollama, versions

DEFAULT = ("llama", "smollm2", "ollama", "prometheus", "redis")
ALL = (*DEFAULT, "nginx")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.components", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="build (once, cached) and install components into this venv")
    inst.add_argument("what", nargs="*", metavar="{" + ",".join([*ALL, "all"]) + "}",
                      help=f"default: {' '.join(DEFAULT)}")
    sub.add_parser("status", help="what is built and installed")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        if args.command == "install":
            chosen = args.what or list(DEFAULT)
            unknown = sorted(set(chosen) - {*ALL, "all"})
            if unknown:
                parser.error(f"unknown component(s) {', '.join(unknown)}: choose from {', '.join([*ALL, 'all'])}")
            what = ALL if "all" in chosen else tuple(chosen)
            steps = {"llama": install.install_llama, "smollm2": install.install_smollm2,
                     "ollama": ollama.build, "nginx": install.install_nginx,
                     "prometheus": install.install_prometheus, "redis": install.install_redis}
            for name in ALL:
                if name in what:
                    steps[name]()
            print(f"components ready in {time.monotonic() - started:.0f}s")
        elif args.command == "status":
            print(f"llama-cpp-python wheel: {install.llama_wheel() or 'not built'} "
                  f"(installed: {install._installed('llama_cpp_python') or 'no'})")
            try:
                print(f"SmolLM2 GGUF: {install.smollm2_gguf()}")
            except install.ComponentError as exc:
                print(f"SmolLM2 GGUF: {exc}")
            print(f"ollama {versions.OLLAMA}: {ollama.binary() or 'not built'}")
            print(f"nginx: {install.nginx_binary() or 'not installed'}")
            print(f"redis-server: {install.redis_server_binary() or 'not installed'}")
    except install.ComponentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
