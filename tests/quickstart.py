"""``make run``: the product as a user runs it, on the local cluster's real node.

The cluster (``python -m tests.cluster up``) already runs the real node with the images
built here loaded into it, and offers a GCS emulator and Prometheus to its pods. This
step then does what a user does: puts the weights where the manifest says (SmolLM2-135M's
GGUF into ``gs://models/smollm2/v1/`` on the emulator), installs the operator with the Helm
chart (running in-cluster from its image, under Pod Security ``restricted``), applies
``examples/smollm2-ollama-cpu.yaml`` into the namespace ``demo``, waits until it is
Healthy, and prints the two commands that get an answer from the pod.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster.controlplane import Cluster
from tests.components import install
from tests.support import realpods

EXAMPLE = realpods.ROOT / "examples" / "smollm2-ollama-cpu.yaml"
NAMESPACE = "demo"
WEIGHTS = "smollm2/v1/" + "SmolLM2-135M-Instruct.Q4_1.gguf"


def step(what: str, started: float) -> None:
    print(f"[{time.monotonic() - started:5.0f}s] {what}", flush=True)


def main() -> int:
    started = time.monotonic()
    cluster = Cluster()
    if not cluster.is_up():
        print("error: the local cluster is not up: run `python -m tests.cluster up` (make run does)", file=sys.stderr)
        return 1
    install.install_smollm2()
    infra = realpods.infra(cluster.ports.base)
    infra.upload("models", WEIGHTS, path=install.smollm2_gguf())
    step(f"uploaded SmolLM2-135M to gs://models/{WEIGHTS} (the cluster's GCS emulator)", started)
    for name in (realpods.NS_OPERATOR, NAMESPACE):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(realpods.namespace_body(name, "restricted")))
    values = Path(tempfile.mkdtemp(prefix="modelops-run-")) / "values.json"
    realpods.install_operator(cluster, values, realpods.operator_values(watch=[NAMESPACE]))
    step(f"installed the operator with the Helm chart into {realpods.NS_OPERATOR} (in-cluster, from its image)",
         started)
    cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
    step(f"applied {EXAMPLE.relative_to(realpods.ROOT)} into {NAMESPACE}; waiting until it is Healthy", started)
    out = cluster.kubectl("wait", "-n", NAMESPACE, "modeldeployment/smollm2", "--for=jsonpath={.status.phase}=Healthy",
                          "--timeout=600s", check=False)
    if out.returncode != 0:
        print(realpods.diagnose(cluster, NAMESPACE), file=sys.stderr)
        print(f"error: smollm2 did not become Healthy: {out.stderr.strip()}", file=sys.stderr)
        return 1
    step("smollm2 is Healthy: its pod answers", started)
    kubectl = f"kubectl --kubeconfig {cluster.kubeconfig}"
    print(f"""
Get an answer from the pod (two shells):

  {kubectl} -n {NAMESPACE} port-forward svc/smollm2 8000:80

  curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
    -d '{{"model": "smollm2", "max_tokens": 32, "messages": [{{"role": "user", "content": "Say hello."}}]}}'

Watch it: {kubectl} -n {NAMESPACE} get modeldeployments -w
Stop everything: python -m tests.cluster down
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
