import pytest

from modelops.config import OperatorConfig
from modelops.domain.revision import template_hash
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning.resources import revision_for

BASE = {"model": {"name": "gemma-2-9b-it", "source": "gs://models/gemma-2-9b-it/"},
        "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}}, "replicas": 2}


def rev(**changes) -> str:
    spec = {**BASE, **changes}
    return revision_for("chat", ModelDeploymentSpec.model_validate(spec), OperatorConfig())


def test_same_spec_same_revision() -> None:
    assert rev() == rev()
    assert rev().startswith("chat-") and len(rev()) == len("chat-") + 8


def test_replicas_only_change_keeps_the_revision() -> None:
    assert rev(replicas=5) == rev(replicas=2) == rev(replicas=0)


def test_rollout_and_traffic_settings_do_not_make_a_revision() -> None:
    assert rev(rollout={"strategy": "BlueGreen", "progressDeadline": "30m"}) == rev()


@pytest.mark.parametrize("changes", [
    {"model": {"name": "gemma-2-9b-it", "source": "gs://models/gemma-2-9b-it-v2/"}},
    {"model": {"name": "gemma-2-9b", "source": "gs://models/gemma-2-9b-it/"}},
    {"model": {**BASE["model"], "metadata": "gs://models/20251201T120000_abc123/best_model_metadata.json"}},
    {"engine": {"type": "vllm", "image": "vllm/vllm-openai:v0.12.0"}},
    {"engine": {"type": "vllm", "args": ["--max-model-len", "4096"]}},
    {"resources": {"gpu": {"count": 2, "type": "nvidia-l4"}}},
    {"resources": {"gpu": {"count": 1, "type": "nvidia-h100-80gb"}}},
    {"resources": {"gpu": {"count": 1}, "memory": "32Gi"}},
])
def test_a_change_of_what_is_served_makes_a_new_revision(changes) -> None:
    assert rev(**changes) != rev()


def test_reverting_finds_the_earlier_revision_again() -> None:
    first = rev()
    changed = rev(engine={"type": "vllm", "args": ["--enforce-eager"]})
    assert rev() == first != changed


def test_hash_ignores_key_order() -> None:
    assert template_hash({"a": 1, "b": {"c": 2, "d": 3}}) == template_hash({"b": {"d": 3, "c": 2}, "a": 1})
