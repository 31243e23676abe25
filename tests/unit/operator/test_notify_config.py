"""Notification receivers in OperatorConfig: from MODELOPS_NOTIFY_RECEIVERS (JSON, as the chart
renders it), URLs and headers from files (a mounted Secret), and errors that never show a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelops.config import OperatorConfig

TOKEN = "T000/B000/s3cr3t"


def test_receivers_come_from_the_environment_with_urls_from_files(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    (tmp_path / "ml-oncall").write_text(f"https://hooks.slack.com/services/{TOKEN}\n")
    (tmp_path / "retrain-headers").write_text(json.dumps({"Authorization": f"Bearer {TOKEN}"}))
    monkeypatch.setenv("MODELOPS_NOTIFY_RECEIVERS", json.dumps({
        "ml-oncall": {"type": "slack", "urlFile": str(tmp_path / "ml-oncall")},
        "retrain": {"type": "webhook", "url": "https://ci.example/hooks/retrain", "headers": {"X-Source": "modelops"},
                    "headersFile": str(tmp_path / "retrain-headers"), "events": ["degraded", "rolledback"]}}))
    monkeypatch.setenv("MODELOPS_NOTIFY_ATTEMPTS", "3")
    cfg = OperatorConfig()
    slack, hook = cfg.notify_receivers["ml-oncall"], cfg.notify_receivers["retrain"]
    assert slack.url is not None and slack.url.get_secret_value() == f"https://hooks.slack.com/services/{TOKEN}"
    assert slack.wants("step") and not hook.wants("step") and hook.wants("degraded")
    assert {k: v.get_secret_value() for k, v in hook.headers.items()} == {"X-Source": "modelops",
                                                                         "Authorization": f"Bearer {TOKEN}"}
    assert cfg.notify_attempts == 3 and cfg.notify_queue_size == 1000
    assert TOKEN not in repr(cfg) and TOKEN not in str(cfg.model_dump())


@pytest.mark.parametrize("receiver, says", [
    ({"type": "slack"}, "exactly one of url and urlFile"),
    ({"type": "slack", "url": f"hooks.slack.com/{TOKEN}"}, "must start with http"),
    ({"type": "teams", "url": f"https://x/{TOKEN}"}, "'webhook' or 'slack'"),
    ({"type": "webhook", "url": f"https://x/{TOKEN}", "events": ["everything"]}, "'started'"),
    ({"type": "webhook", "urlFile": "/no/such/file"}, "urlFile /no/such/file cannot be read"),
    ({"type": "webhook", "url": f"https://x/{TOKEN}", "typo": 1}, "Extra inputs"),
])
def test_a_bad_receiver_is_refused_at_start_without_showing_its_secret(receiver: dict, says: str) -> None:
    with pytest.raises(ValidationError) as err:
        OperatorConfig(notify_receivers={"ml-oncall": receiver})
    assert says in str(err.value) and TOKEN not in str(err.value)


def test_receiver_names_are_what_spec_rollout_notify_can_name() -> None:
    with pytest.raises(ValidationError, match="DNS labels"):
        OperatorConfig(notify_receivers={"ML_oncall": {"type": "slack", "url": "https://x/y"}})
