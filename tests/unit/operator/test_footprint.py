"""The running operator never imports the kubernetes client library (46 MiB of models and API
classes): not in our code, not in kopf's login. In a fresh interpreter, everything
``python -m modelops run`` does before it connects: the imports, the settings, kopf's
configuration, kopf's login (a kubeconfig to 127.0.0.1:1, which nothing dials) and the startup
handler; then the RSS is printed.

The image has no kubernetes package; the dev venv has one (the tests use it), and kopf imports it
whenever it is installed, to recognise its model classes. So the interpreter here is made to find
none, as in the image, and records who looked for it: only kopf's probes of what is installed may.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .fakeapi import write_kubeconfig

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]

PROGRAM = textwrap.dedent('''
    import json, sys
    from tests.support.as_in_image import HIDDEN, hide

    asked = hide().asked  # as in the image: no kubernetes client; records who looked for one

    def rss_kib():
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])

    before = rss_kib()
    import asyncio, logging
    from modelops.__main__ import operator_config, parser   # python -m modelops
    import kopf
    from modelops.handlers import modeldeployment            # what main() imports: the handlers

    config = operator_config(parser().parse_args(["run"]))
    kopf.configure(verbose=False, log_prefix=True, log_format=kopf.LogFormat.FULL)
    settings = kopf.OperatorSettings()
    info = modeldeployment.login(settings=settings, logger=logging.getLogger("kopf"), memo=kopf.Memo())
    memo = kopf.Memo(config=config.model_copy(update={"metrics_port": 0, "leader_election": False}))

    async def start():
        await modeldeployment.startup(settings=settings, memo=memo, logger=logging.getLogger("kopf"))
        return rss_kib()

    started = asyncio.run(start())
    print(json.dumps({"server": info.server, "token": info.token, "asked": asked,
                      "loaded": sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN),
                      "lightkube": "lightkube" in sys.modules, "before_kib": before, "started_kib": started}))
''')

# kopf looks for optional packages: at import (typing support for their models) and when it builds
# its registry (which default logins to offer). Nothing may try to use one.
KOPF_PROBES = {("kopf._cogs.helpers.thirdparty", "<module>"), ("kopf._core.intents.piggybacking", "has_pykube"),
               ("kopf._core.intents.piggybacking", "has_sync_client"),
               ("kopf._core.intents.piggybacking", "has_async_client")}


def test_the_operator_starts_without_the_kubernetes_client(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "https://127.0.0.1:1")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig),
           "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "MODELOPS_IDENTITY": "modelops-0"}
    proc = subprocess.run([sys.executable, "-c", PROGRAM], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["server"], out["token"]) == ("https://127.0.0.1:1", "t0ken")  # kopf's credentials
    assert out["lightkube"] and out["loaded"] == []  # "kubernetes" not in sys.modules
    assert {(who, fn) for _, who, fn in out["asked"]} <= KOPF_PROBES, out["asked"]
    assert not any(who.startswith("modelops") for _, who, _ in out["asked"])
    print(f"RSS before the imports {out['before_kib'] / 1024:.1f} MiB, "
          f"after startup {out['started_kib'] / 1024:.1f} MiB")
