"""The serving config from GCS (fake-gcs-server + google-cloud-storage): load, apply, reload, keep.

The stub engine records the last request it got, which shows what the gateway sent
after applying the config's defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tests.components.servers import FakeGCS, Gateway, StubEngine
from tests.inference.helpers import value

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def metadata(temperature: float, **extra: Any) -> bytes:
    return json.dumps({"selected_model": "smollm2", "hyperparameters": {"temperature": temperature, "top_k": 40},
                       "scores": {"accuracy": 0.9},
                       "prompt_template": "Context: {context}\nQuestion: {query}", **extra}).encode()


def env(stub: StubEngine, gcs: FakeGCS, uri: str) -> dict[str, str]:
    return {"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": stub.url, "MODELOPS_MODEL": "chat",
            "MODELOPS_ENGINE_MODEL": stub.model, "MODELOPS_REVISION": "chat-r1", "MODELOPS_METADATA_URI": uri,
            **gcs.env()}


def served_metadata(gw: Gateway) -> dict[str, Any]:
    return httpx.get(f"{gw.url}/serving-config").json()


def sent_temperature(gw: Gateway, stub: StubEngine, body: dict[str, Any] = CHAT) -> Any:
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=body).status_code == 200
    return stub.stats()["last_body"].get("temperature")


@pytest.fixture
def published(bucket: Any) -> Callable[[str, bytes], Any]:
    def publish(folder: str, raw: bytes) -> Any:
        blob = bucket.blob(f"models/{folder}/best_model_metadata.json")
        blob.upload_from_string(raw, content_type="application/json")
        blob.reload()
        return blob
    return publish


def test_a_prefix_means_the_newest_run_and_its_defaults_apply(start_gateway: Callable[..., Gateway],
                                                              fresh_stub: StubEngine, fake_gcs: FakeGCS,
                                                              bucket: Any, published: Callable[..., Any]) -> None:
    published("20251115T080000_0a1b2c", metadata(0.9))
    newest = published("20251201T120000_abc123", metadata(0.2))
    bucket.blob("models/README.txt").upload_from_string(b"not a run")
    gw = start_gateway(env(fresh_stub, fake_gcs, f"gs://{bucket.name}/models/"))
    meta = served_metadata(gw)
    assert meta["version"] == "20251201T120000_abc123" and meta["generation"] == newest.generation
    assert meta["uri"] == f"gs://{bucket.name}/models/20251201T120000_abc123/best_model_metadata.json"
    m = gw.metrics()
    assert value(m, "modelops_gateway_metadata_generation", revision="chat-r1") == newest.generation
    assert value(m, "modelops_gateway_metadata_info", version="20251201T120000_abc123",
                 generation=str(newest.generation)) == 1
    assert sent_temperature(gw, fresh_stub) == 0.2
    assert sent_temperature(gw, fresh_stub, {**CHAT, "temperature": 1.3}) == 1.3  # the request wins
    assert fresh_stub.stats()["last_body"]["top_k"] == 40


def test_reload_picks_up_a_replaced_object(start_gateway: Callable[..., Gateway], fresh_stub: StubEngine,
                                           fake_gcs: FakeGCS, bucket: Any, published: Callable[..., Any]) -> None:
    first = published("20251201T120000_abc123", metadata(0.2))
    uri = f"gs://{bucket.name}/models/20251201T120000_abc123/best_model_metadata.json"
    gw = start_gateway(env(fresh_stub, fake_gcs, uri))
    assert sent_temperature(gw, fresh_stub) == 0.2
    second = published("20251201T120000_abc123", metadata(0.7))
    assert second.generation != first.generation
    r = httpx.post(f"{gw.url}/reload")
    assert r.status_code == 200 and r.json()["status"] == "reloaded"
    assert r.json()["metadata"]["generation"] == second.generation
    assert sent_temperature(gw, fresh_stub) == 0.7
    assert httpx.post(f"{gw.url}/reload").json()["status"] == "unchanged"


def test_reload_moves_to_a_newer_run_under_the_prefix(start_gateway: Callable[..., Gateway],
                                                      fresh_stub: StubEngine, fake_gcs: FakeGCS, bucket: Any,
                                                      published: Callable[..., Any]) -> None:
    published("20251201T120000_abc123", metadata(0.2))
    gw = start_gateway(env(fresh_stub, fake_gcs, f"gs://{bucket.name}/models/"))
    published("20260105T090000_def456", metadata(0.5))
    assert httpx.post(f"{gw.url}/reload").json()["metadata"]["version"] == "20260105T090000_def456"
    assert sent_temperature(gw, fresh_stub) == 0.5


@pytest.mark.parametrize("breakage, status, code", [
    (lambda blob: blob.upload_from_string(b"{truncated"), 422, "metadata_invalid"),
    (lambda blob: blob.upload_from_string(json.dumps({"hyperparameters": {"temperature": 9}}).encode()), 422,
     "metadata_invalid"),
    (lambda blob: blob.delete(), 502, "metadata_not_found"),
])
def test_a_bad_or_missing_object_keeps_the_last_good_config(start_gateway: Callable[..., Gateway],
                                                            fresh_stub: StubEngine, fake_gcs: FakeGCS, bucket: Any,
                                                            published: Callable[..., Any], breakage: Any,
                                                            status: int, code: str) -> None:
    good = published("20251201T120000_abc123", metadata(0.2))
    gw = start_gateway(env(fresh_stub, fake_gcs,
                           f"gs://{bucket.name}/models/20251201T120000_abc123/best_model_metadata.json"))
    breakage(bucket.blob("models/20251201T120000_abc123/best_model_metadata.json"))
    r = httpx.post(f"{gw.url}/reload")
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and "keeping the last good one" in r.json()["error"]["message"]
    meta = served_metadata(gw)
    assert meta["generation"] == good.generation and meta["stale"] and meta["last_error"]
    assert sent_temperature(gw, fresh_stub) == 0.2  # still serving with the good config
    assert httpx.get(f"{gw.url}/health").status_code == 200
    m = gw.metrics()
    assert value(m, "modelops_gateway_metadata_stale") == 1
    assert value(m, "modelops_gateway_metadata_reloads_total", result="error") == 1


@pytest.mark.parametrize("path, why", [
    ("models/20251201T120000_abc123/best_model_metadata.json", "not found"),
    ("models/", "no best_model_metadata.json under"),
])
def test_startup_without_any_config_fails_clearly(component_logs: Path, fresh_stub: StubEngine,
                                                  fake_gcs: FakeGCS, bucket: Any, path: str, why: str) -> None:
    gw = Gateway(component_logs, env(fresh_stub, fake_gcs, f"gs://{bucket.name}/{path}"), name="gateway-nocfg")
    gw.proc.start()
    try:
        code = gw.proc.proc.wait(timeout=60)  # type: ignore[union-attr]
    finally:
        gw.stop()
    assert code != 0
    log = gw.log()
    assert "cannot start without a serving config" in log and why in log


def test_predict_uses_the_prompt_template(start_gateway: Callable[..., Gateway], fresh_stub: StubEngine,
                                          fake_gcs: FakeGCS, bucket: Any, published: Callable[..., Any]) -> None:
    published("20251201T120000_abc123", metadata(0.2, system_prompt="Be brief."))
    gw = start_gateway(env(fresh_stub, fake_gcs, f"gs://{bucket.name}/models/"))
    r = httpx.post(f"{gw.url}/predict", json={"query": "Why is the sky blue?", "context": ["Rayleigh."]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"].startswith("tok ")
    assert (body["model_used"], body["model_version"], body["revision"]) == ("chat", "20251201T120000_abc123",
                                                                             "chat-r1")
    sent = fresh_stub.stats()["last_body"]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Context: Rayleigh.\nQuestion: Why is the sky blue?"}]
    assert sent["temperature"] == 0.2
    assert value(gw.metrics(), "modelops_gateway_requests_total", route="predict", code="200") == 1
    bad = httpx.post(f"{gw.url}/predict", json={"context": "no query"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "query"


def test_a_local_file_works_as_a_source_too(start_gateway: Callable[..., Gateway], fresh_stub: StubEngine,
                                            tmp_path: Path) -> None:
    f = tmp_path / "20251201T120000_abc123" / "best_model_metadata.json"
    f.parent.mkdir()
    f.write_bytes(metadata(0.3))
    gw = start_gateway({"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": fresh_stub.url,
                        "MODELOPS_MODEL": "chat", "MODELOPS_METADATA_URI": f"file://{f}"})
    assert served_metadata(gw)["version"] == "20251201T120000_abc123"
    assert sent_temperature(gw, fresh_stub) == 0.3
