"""The project's container images, built here without a registry or a Docker daemon.

    python -m tests.images build [names...]   # build what is missing or changed (cached by content)
    python -m tests.images list               # refs, keys and archives, building nothing
    python -m tests.images check [names...]   # run each image's entry point from its archive

    from tests.images import build_all
    for image in build_all(["operator", "pause"]):
        print(image.ref, image.archive)       # ctr -n k8s.io images import <archive>

Images (name: ref):
- base: localhost/modelops/debian-python:bookworm (debootstrap; the PYTHON_IMAGE of the rest)
- operator: ghcr.io/modelops-dev/modelops-operator:0.1.0 (the root Dockerfile)
- inference: ghcr.io/modelops-dev/modelops-inference:0.1.0 (inference-image/Dockerfile)
- ollama: localhost/modelops/ollama:v0.17.4 (tests.components' CPU build of Ollama)
- vllm-standin: localhost/modelops/vllm-standin:0.1.0 (`vllm serve` answered by llama.cpp)
- pause: registry.k8s.io/pause:3.10.2 (the kubelet's pod sandbox image)

buildah builds them (chroot isolation, host network) in a private containers storage under
``~/.cache/modelops/containers/``; each image is written as an OCI archive to
``~/.cache/modelops/images/<ref>-<content key>.oci.tar``. The key hashes every input
(Dockerfile, context files, build args, base key): an unchanged image costs a hash.
"""

from .build import NAMES, Image, build_all
from .proc import ImageBuildError

__all__ = ["NAMES", "Image", "ImageBuildError", "build_all"]
