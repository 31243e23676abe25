"""ModelOps: serve LLMs on GPUs with Kubernetes and change them safely."""

__version__ = "0.1.0"
