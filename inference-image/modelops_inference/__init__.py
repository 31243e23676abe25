"""The ModelOps inference image: a gateway in front of vLLM/Ollama and a GCS storage initializer.

Two entry points (see the Dockerfile next to this package):

- ``python -m modelops_inference.gateway`` (``modelops-gateway``)
- ``python -m modelops_inference.storage_init SRC DEST`` (``modelops-storage-initializer``)

This package never imports the operator (``modelops``): the operator passes only
environment variables and URIs.
"""

__version__ = "0.1.0"
