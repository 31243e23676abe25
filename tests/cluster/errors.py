"""The one error type of the cluster tooling: its message says what to do."""


class ClusterError(RuntimeError):
    pass
