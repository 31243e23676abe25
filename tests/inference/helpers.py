"""Small helpers the inference tests share: reading /metrics the way Prometheus would."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append((s.labels, s.value))
    return out


def value(text: str, name: str, **labels: str) -> float:
    """Sum of the matching samples (0 when none), like sum(name{labels})."""
    return sum(v for _, v in samples(text, name, **labels))


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    out = []
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line.startswith(b"data:"):
            out.append(line[5:].strip().decode())
    return out
