"""The chart's notification receivers: rendered into MODELOPS_NOTIFY_RECEIVERS, which the operator's
own config reads, with URLs and secret headers as files of a mounted Secret (no Secret in RBAC)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelops.config import OperatorConfig

from .helm import CHART, KUBE_VERSION, VALUES, find, helm, objects, only_env, template, values_file

NOTIFY = VALUES["notifications"]


def _pod(values: dict) -> dict:
    return find(objects(template(values)), "Deployment")[0]["spec"]["template"]["spec"]


def test_receivers_are_mounted_from_the_existing_secret_read_only() -> None:
    pod = _pod(NOTIFY)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "notify"]
    assert volume["secret"] == {"secretName": "modelops-notify", "defaultMode": 0o444}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "notify"]
    assert mount == {"name": "notify", "mountPath": "/etc/modelops/notify", "readOnly": True}
    default = _pod({})
    assert [v["name"] for v in default["volumes"]] == ["tmp"]
    assert "MODELOPS_NOTIFY_RECEIVERS" not in {e["name"] for e in default["containers"][0]["env"]}


def test_the_rendered_receivers_are_what_the_operator_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {e["name"]: e.get("value") for e in _pod(NOTIFY)["containers"][0]["env"]}
    raw = env["MODELOPS_NOTIFY_RECEIVERS"]
    assert "hooks" not in raw and "/etc/modelops/notify/ml-oncall" in raw  # paths, never URLs
    # The kubelet's view of the Secret: one file per key, here under tmp_path.
    (tmp_path / "ml-oncall").write_text("https://hooks.slack.com/services/T0/B0/token\n")
    (tmp_path / "retrain-url").write_text("https://ci.example/hooks/retrain?token=abc")
    (tmp_path / "retrain-headers").write_text("Authorization: Bearer abc\n")
    only_env(monkeypatch, {"MODELOPS_NOTIFY_RECEIVERS": raw.replace("/etc/modelops/notify", str(tmp_path))})
    cfg = OperatorConfig()
    slack, hook = cfg.notify_receivers["ml-oncall"], cfg.notify_receivers["retrain"]
    assert slack.type == "slack" and slack.url is not None
    assert slack.url.get_secret_value() == "https://hooks.slack.com/services/T0/B0/token"
    assert hook.type == "webhook" and hook.events == ["degraded", "rolledback"]
    assert {k: v.get_secret_value() for k, v in hook.headers.items()} == {"X-Source": "modelops",
                                                                         "Authorization": "Bearer abc"}


def test_receivers_need_the_secret(tmp_path: Path) -> None:
    values = {"notifications": {"receivers": {"ml-oncall": {"type": "slack", "urlKey": "ml-oncall"}}}}
    out = helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file(values, tmp_path)),
               check=False)
    assert out.returncode != 0 and "notifications.receivers needs notifications.existingSecret" in out.stderr


@pytest.mark.parametrize("receiver", [{"type": "teams", "urlKey": "a"}, {"type": "slack"},
                                      {"type": "slack", "url": "https://hooks.slack.com/x"},  # URLs in values: no
                                      {"type": "webhook", "urlKey": "a", "events": ["everything"]}])
def test_the_schema_refuses_bad_receivers(receiver: dict, tmp_path: Path) -> None:
    values = {"notifications": {"existingSecret": "s", "receivers": {"r": receiver}}}
    out = helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file(values, tmp_path)),
               check=False)
    assert out.returncode != 0 and "values don't meet the specifications of the schema" in out.stderr, out.stderr


def test_receiver_names_are_refused_unless_spec_rollout_notify_could_name_them(tmp_path: Path) -> None:
    values = {"notifications": {"existingSecret": "s", "receivers": {"ML_oncall": {"type": "slack", "urlKey": "a"}}}}
    out = helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file(values, tmp_path)),
               check=False)
    assert out.returncode != 0, json.dumps(values)
