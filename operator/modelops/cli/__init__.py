"""``kubectl modelops``: watch and steer ModelDeployment rollouts from kubectl.

Installed as the console script ``kubectl-modelops``, which kubectl finds on PATH as the
plugin ``kubectl modelops``. Uses kubectl's conventions: ``--kubeconfig``, ``--context``,
``-n/--namespace`` (default: the context's namespace), ``KUBECONFIG`` (several paths
joined by ``:`` are merged), and the in-cluster ServiceAccount when there is no kubeconfig.

Manual control never edits the spec a GitOps tool owns: promote, abort, pause and resume
set an annotation (``modelops.dev/<command>``) that the operator acts on once and removes.

This package may import ``modelops.domain`` and the kubernetes client; never the
operator's planning, adapters or handlers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from modelops import __version__
from modelops.domain.spec import GROUP, KIND, PLURAL, VERSION

from . import render

ANNOTATION_PREFIX = "modelops.dev/"
RESOURCE = f"{PLURAL}.{GROUP}"
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CliError(Exception):
    pass


# --------------------------------------------------------------------------- kubernetes
class Client:
    """The ModelDeployment API through the kubernetes client, configured as kubectl would be."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        from kubernetes import client, config

        self._client = client
        cfg = client.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
        has_file = bool(kubeconfig) or any(Path(p).exists() for p in path.split(os.pathsep) if p)
        if has_file:
            try:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
                contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            except config.ConfigException as exc:
                raise CliError(f"error: {exc}") from None
            chosen = next((c for c in contexts if c["name"] == context), None) if context else active
            default_ns = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                raise CliError("error: no kubeconfig (use --kubeconfig or KUBECONFIG) and not in a cluster") from None
            default_ns = SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.exists() else "default"
        self.namespace = namespace or default_ns
        self.api = client.ApiClient(cfg)
        self.custom = client.CustomObjectsApi(self.api)

    def _call(self, fn: Callable[[], Any], name: str | None = None) -> Any:
        try:
            return fn()
        except self._client.ApiException as exc:
            try:
                message = json.loads(exc.body)["message"]
            except (TypeError, ValueError, KeyError):
                message = exc.reason
            reason = {404: "NotFound", 403: "Forbidden", 401: "Unauthorized", 422: "Invalid"}.get(exc.status, exc.reason)
            raise CliError(f"Error from server ({reason}): {message}") from None

    def get(self, name: str) -> dict[str, Any]:
        return self._call(lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))

    def list(self, all_namespaces: bool) -> list[dict[str, Any]]:
        if all_namespaces:
            return self._call(lambda: self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL))["items"]
        return self._call(lambda: self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                                             PLURAL))["items"]

    def annotate(self, name: str, key: str, value: str) -> dict[str, Any]:
        body = {"metadata": {"annotations": {key: value}}}
        return self._call(lambda: self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, body, _content_type="application/merge-patch+json"))

    def watch(self, name: str, timeout: int | None) -> Any:
        from kubernetes import watch

        w = watch.Watch()
        kwargs: dict[str, Any] = {"field_selector": f"metadata.name={name}"}
        if timeout:
            kwargs["timeout_seconds"] = timeout
        return w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, **kwargs)


# --------------------------------------------------------------------------- commands
def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_get(c: Client, args: argparse.Namespace) -> int:
    if not args.name:
        _print(render.listing(c.list(args.all_namespaces), args.all_namespaces))
        return 0
    obj = c.get(args.name)
    out = _output(obj, args.output)
    _print(out)
    if not args.watch:
        return 0
    tty = sys.stdout.isatty()
    last = out
    while True:  # watches end on the server's timeout: start another
        for event in c.watch(args.name, args.timeout):
            if event["type"] == "DELETED":
                _print(f'{RESOURCE} "{args.name}" deleted\n')
                return 0
            out = _output(event["object"], args.output)
            if out != last:
                _print(("\x1b[H\x1b[2J" if tty else "---\n") + out)
                last = out
        if args.timeout:
            return 0


def _output(obj: dict[str, Any], fmt: str | None) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(obj, sort_keys=False)
    return render.describe(obj)


def cmd_history(c: Client, args: argparse.Namespace) -> int:
    _print(render.history(c.get(args.name)))
    return 0


def _command(command: str, value: Callable[[argparse.Namespace], str], done: str) -> Callable[..., int]:
    def run(c: Client, args: argparse.Namespace) -> int:
        v = value(args)
        c.annotate(args.name, ANNOTATION_PREFIX + command, v)
        _print(f"{RESOURCE}/{args.name} {done.format(value=v)}\n")
        return 0
    return run


COMMANDS = {
    "promote": _command("promote", lambda a: "full" if a.full else "step", "promote requested ({value})"),
    "abort": _command("abort", lambda a: "true", "abort requested"),
    "pause": _command("pause", lambda a: "true", "pause requested"),
    "resume": _command("resume", lambda a: "true", "resume requested"),
}


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="path to the kubeconfig file")
    common.add_argument("--context", default=argparse.SUPPRESS, help="the kubeconfig context to use")
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="the namespace (default: the context's)")

    p = argparse.ArgumentParser(prog="kubectl modelops", parents=[common],
                                description=f"Watch and steer {KIND} rollouts ({GROUP}/{VERSION}).")
    p.add_argument("--version", action="version", version=f"kubectl-modelops {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in (("get", "show a ModelDeployment: traffic, steps, analysis, conditions, revisions; "
                                "without NAME, list them"),
                        ("status", "the same as get")):
        g = sub.add_parser(name, parents=[common], help=help_, description=help_)
        g.add_argument("name", nargs="?" if name == "get" else None, metavar="NAME")
        g.add_argument("-w", "--watch", action="store_true", help="keep showing it as it changes")
        g.add_argument("--timeout", type=int, default=None, help="with --watch: stop after this many seconds")
        g.add_argument("-o", "--output", choices=["json", "yaml"], default=None, help="print the object instead")
        g.add_argument("-A", "--all-namespaces", action="store_true", help="list in every namespace (no NAME)")
        g.set_defaults(run=cmd_get)
    pr = sub.add_parser("promote", parents=[common], help="promote one step (a pause, or the current step)")
    pr.add_argument("name", metavar="NAME")
    pr.add_argument("--full", action="store_true", help="skip the remaining steps and analysis: promote fully")
    pr.set_defaults(run=COMMANDS["promote"])
    for name, help_ in (("abort", "abort the rollout: the canary gets 0%% at once, the stable revision serves"),
                        ("pause", "pause the rollout where it is"), ("resume", "resume a paused rollout")):
        s = sub.add_parser(name, parents=[common], help=help_)
        s.add_argument("name", metavar="NAME")
        s.set_defaults(run=COMMANDS[name])
    h = sub.add_parser("history", parents=[common], help="the recent revisions and their outcomes")
    h.add_argument("name", metavar="NAME")
    h.set_defaults(run=cmd_history)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        c = Client(getattr(args, "kubeconfig", None), getattr(args, "context", None), getattr(args, "namespace", None))
        return args.run(c, args)
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
