"""Pure text rendering of a ModelDeployment for ``kubectl modelops`` (no I/O).

Works on the raw object (dicts), leniently: a newer operator may add status fields an
older plugin does not know, and an object may have no status yet.
"""

from __future__ import annotations

from typing import Any

from modelops.domain.source import hosted_source

BAR = 20
CURRENT, DONE, TODO = "▶", "✔", " "


def table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Columns padded like kubectl's tables; the last column is not padded."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [indent + "  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip() for r in rows]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def weights(status: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(revision, role, percent) for the revisions that take traffic (or are about to).

    >>> weights({"stableRevision": "a", "canaryRevision": "b", "canaryWeight": 10})
    [('a', 'stable', 90), ('b', 'canary', 10)]
    >>> weights({"stableRevision": "a"})
    [('a', 'stable', 100)]
    """
    stable, canary = status.get("stableRevision"), status.get("canaryRevision")
    weight = int(status.get("canaryWeight") or 0) if canary else 0
    out = []
    if stable:
        out.append((stable, "stable", 100 - weight))
    if canary:
        out.append((canary, "canary", weight))
    return out


def step_text(step: dict[str, Any]) -> str:
    """One canary step in words.

    >>> step_text({"setWeight": 10}), step_text({"pause": {"duration": "2m"}}), step_text({"pause": {}})
    ('setWeight: 10%', 'pause: 2m', 'pause: until promoted')
    """
    if "setWeight" in step:
        return f"setWeight: {step['setWeight']}%"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return f"pause: {duration}" if duration else "pause: until promoted"
    if "analysis" in step:
        a = step.get("analysis") or {}
        metrics = ", ".join(a.get("metrics") or []) or "all metrics"
        return f"analysis: {metrics}" + (f" for {a['duration']}" if a.get("duration") else "")
    if "mirror" in step:  # e.g. "mirror: 20% of requests for 10m (shadow)"
        m = step.get("mirror") or {}
        return f"mirror: {m.get('percent')}% of requests for {m.get('duration')} (shadow)"
    return str(step)


def steps(obj: dict[str, Any]) -> list[str]:
    """The canary steps with the current one marked (``status.currentStep`` is 0-based)."""
    spec_steps = (((obj.get("spec") or {}).get("rollout") or {}).get("canary") or {}).get("steps") or []
    status = obj.get("status") or {}
    rolling = bool(status.get("canaryRevision"))
    current = status.get("currentStep")
    lines = []
    for i, step in enumerate(spec_steps):
        marker, note = TODO, ""
        if rolling and current is not None:
            if i < current:
                marker = DONE
            elif i == current:
                marker, note = CURRENT, "  ◀ current" + (" (paused)" if status.get("phase") == "Paused" else "")
        lines.append(f"  {marker} {i + 1}. {step_text(step)}{note}")
    if rolling and current is not None and current >= len(spec_steps) and spec_steps:
        lines.append(f"  {DONE} all {len(spec_steps)} steps done: promoting")
    return lines


def money(value: float) -> str:
    """Dollars per million tokens, to the cent.

    >>> money(0.4), money(12.345), money(0.004), money(0)
    ('$0.40', '$12.35', '<$0.01', '$0.00')
    """
    return "<$0.01" if 0 < value < 0.005 else f"${value:.2f}"


def percentage(value: float) -> str:
    """A share as a percentage.

    >>> percentage(0.875), percentage(0.0123), percentage(1)
    ('87.5%', '1.2%', '100.0%')
    """
    return f"{value * 100:.1f}%"


# What a user weighs the variants of a rollout by: analysis templates, their column and format.
# The table is drawn when cost or satisfaction is analysed; invalid JSON is a column of it then.
VARIANT_COLUMNS = {"costPerMillionTokens": ("COST $/MTOK", money), "satisfaction": ("SATISFACTION", percentage),
                   "invalidJsonRate": ("INVALID JSON", percentage)}
VARIANT_TEMPLATES = ("costPerMillionTokens", "satisfaction")


def variants(obj: dict[str, Any]) -> list[str]:
    """Cost and satisfaction of each revision of a rollout in progress, side by side, from
    ``status.analysis``: the new revision's ``value``, the stable's ``stableValue`` (measured for
    relative metrics and in A/B tests), for the first metric of each template. "-": not measured
    (yet). Nothing when no costPerMillionTokens or satisfaction metric is configured."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    rollout = spec.get("rollout") or {}
    if not status.get("canaryRevision"):
        return []
    chosen: dict[str, str] = {}  # template -> the metric's name (its key in status.analysis)
    for m in (rollout.get("analysis") or {}).get("metrics") or []:
        if isinstance(m, dict) and m.get("template") in VARIANT_COLUMNS and m.get("name"):
            chosen.setdefault(m["template"], m["name"])
    if not any(t in chosen for t in VARIANT_TEMPLATES):
        return []
    columns = [t for t in VARIANT_COLUMNS if t in chosen]
    analysis = status.get("analysis") or {}
    rows = [["VARIANT", "REVISION", *[VARIANT_COLUMNS[t][0] for t in columns]]]
    for revision, role, _ in weights(status):
        cells = []
        for t in columns:
            m = analysis.get(chosen[t])
            v = m.get("stableValue" if role == "stable" else "value") if isinstance(m, dict) else None
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(VARIANT_COLUMNS[t][1](v) if ok else "-")
        if role == "canary" and rollout.get("strategy") == "ABTest":
            role = "challenger"
        rows.append([role, revision, *cells])
    return table(rows)


def served_from(spec: dict[str, Any]) -> str:
    """The model source, or for a hosted engine the API (as the operator's status and history say it).

    >>> served_from({"engine": {"type": "hosted", "hosted": {"model": "gemini-2.0-flash",
    ...                                                     "url": "https://generativelanguage.googleapis.com"}}})
    'gemini-2.0-flash at https://generativelanguage.googleapis.com'
    >>> served_from({"model": {"source": "hf://google/gemma-2-9b-it"}})
    'hf://google/gemma-2-9b-it'
    """
    engine = spec.get("engine") or {}
    hosted = engine.get("hosted") or {}
    if engine.get("type") == "hosted" and hosted.get("model"):
        return hosted_source(hosted["model"], hosted.get("url", ""))
    return (spec.get("model") or {}).get("source", "")


def bar(percent: int) -> str:
    filled = round(BAR * max(0, min(100, percent)) / 100)
    return "█" * filled + "░" * (BAR - filled)


def describe(obj: dict[str, Any]) -> str:
    """The whole view of ``kubectl modelops get NAME``."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    model, engine = spec.get("model") or {}, spec.get("engine") or {}
    rollout = spec.get("rollout") or {}
    phase = status.get("phase") or "Unknown"
    stale = status.get("observedGeneration") != meta.get("generation")
    lines = [
        f"Name:         {meta.get('name', '')}",
        f"Namespace:    {meta.get('namespace', '')}",
        f"Model:        {model.get('name', '')} ({engine.get('type', 'vllm')}, {served_from(spec)})",
        f"Strategy:     {rollout.get('strategy', 'Canary')}",
        f"Phase:        {phase}" + ("  (the operator has not observed the latest spec yet)" if stale else ""),
    ]
    if status.get("message"):
        lines.append(f"Message:      {status['message']}")
    if status.get("ready"):
        lines.append(f"Replicas:     {status['ready']} ready")
    ro = status.get("rollout") or {}
    if ro.get("paused"):
        lines.append(f"Paused:       {ro.get('pauseReason') or 'yes'} (kubectl modelops promote|resume)")
    lines.append("")
    w = weights(status)
    if rollout.get("strategy") == "ABTest" and status.get("canaryRevision"):
        lines.append("Traffic (share of users, assigned by the stable revision's gateway):")
        w = [(r, "challenger" if role == "canary" else role, pct) for r, role, pct in w]
    else:
        lines.append("Traffic:")
    lines += table([["REVISION", "ROLE", "WEIGHT", ""]] + [[r, role, f"{pct}%", bar(pct)] for r, role, pct in w]) \
        if w else ["  (no revision serves yet)"]
    drawn = steps(obj)
    if drawn:
        lines += ["", "Steps:", *drawn]
    compared = variants(obj)
    if compared:
        lines += ["", "Variants:", *compared]
    analysis = status.get("analysis") or {}
    if analysis:
        rows = [["METRIC", "VERDICT", "VALUE", "STABLE", "SAMPLES", "OK/FAILED/INCONCLUSIVE", "MEASURED", "MESSAGE"]]
        for name, m in sorted(analysis.items()):
            if not isinstance(m, dict):
                rows.append([name, _fmt(m), "", "", "", "", "", ""])
                continue
            rows.append([name, m.get("verdict", "-"), _fmt(m.get("value")), _fmt(m.get("stableValue")),
                         _fmt(m.get("samples")),
                         f"{m.get('successful', 0)}/{m.get('failed', 0)}/{m.get('inconclusive', 0)}",
                         m.get("measuredAt") or "-", m.get("message") or ""])
        lines += ["", "Analysis:", *table(rows)]
    conditions = status.get("conditions") or []
    if conditions:
        lines += ["", "Conditions:", *table([["TYPE", "STATUS", "REASON", "MESSAGE"]] + [
            [c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", "")] for c in conditions])]
    revisions = status.get("revisions") or []
    if revisions:
        lines += ["", "Revisions:", *history_rows(status, revisions[-5:])]
    return "\n".join(lines) + "\n"


def history_rows(status: dict[str, Any], revisions: list[dict[str, Any]]) -> list[str]:
    rows = [["REVISION", "OUTCOME", "REASON", "MODEL", "SOURCE", "ENGINE", "IMAGE", "GENERATION", "CREATED"]]
    for r in revisions:
        mark = {status.get("stableRevision"): " (stable)", status.get("canaryRevision"): " (canary)"}.get(r.get("name"), "")
        rows.append([r.get("name", "") + mark, r.get("outcome", ""), r.get("reason", ""), r.get("model", ""),
                     r.get("source", ""), r.get("engine", ""), r.get("image", ""), _fmt(r.get("generation")),
                     r.get("created") or "-"])
    return table(rows)


def history(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    revisions = status.get("revisions") or []
    if not revisions:
        return "No revisions yet.\n"
    return "\n".join(history_rows(status, revisions)) + "\n"


def listing(items: list[dict[str, Any]], all_namespaces: bool) -> str:
    rows = [(["NAMESPACE"] if all_namespaces else []) + ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "STEP", "READY"]]
    for o in items:
        st, meta = o.get("status") or {}, o.get("metadata") or {}
        n = len((((o.get("spec") or {}).get("rollout") or {}).get("canary") or {}).get("steps") or [])
        step = f"{st['currentStep'] + 1}/{n}" if st.get("canaryRevision") and st.get("currentStep") is not None and n else "-"
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + [
            meta.get("name", ""), st.get("phase") or "-", st.get("stableRevision") or "-",
            st.get("canaryRevision") or "-", f"{st['canaryWeight']}%" if st.get("canaryRevision") else "-", step,
            st.get("ready") or "-"])
    if len(rows) == 1:
        return "No resources found.\n"
    return "\n".join(table(rows, indent="")) + "\n"
