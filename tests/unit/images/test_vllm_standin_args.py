"""The vLLM stand-in's argument parsing and model resolution (tests/images/standin/vllm_serve.py):
it must accept what the operator renders for vLLM and refuse what vLLM would refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.images.standin.vllm_serve import ServeConfig, UsageError, main, parse_serve_args, resolve_model, split_ignored

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def test_the_operators_rendering_parses() -> None:
    cfg = parse_serve_args(["serve", "/models/gemma", "--served-model-name", "gemma", "--host", "0.0.0.0",
                            "--port", "8000", "--tensor-parallel-size", "2", "--max-model-len", "8192"])
    assert cfg == ServeConfig(model="/models/gemma", served_model_names=("gemma",), host="0.0.0.0", port=8000,
                              tensor_parallel_size=2, max_model_len=8192, ignored=())


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("vllm-*.yaml")))
def test_every_vllm_container_the_operator_renders_parses(golden: str) -> None:
    docs = [d for d in yaml.safe_load_all((GOLDEN / golden).read_text()) if d and d.get("kind") == "Deployment"]
    pod = docs[0]["spec"]["template"]["spec"]
    engine = next(c for c in pod["containers"] if c["name"] == "engine")
    assert engine["command"] == ["vllm", "serve"]
    cfg = parse_serve_args(engine["command"][1:] + engine["args"])
    assert cfg.model == engine["args"][0]
    assert cfg.port == engine["ports"][0]["containerPort"] == 8000
    assert cfg.host == "0.0.0.0"
    assert cfg.ignored == ()
    assert engine["startupProbe"]["httpGet"]["path"] == "/health"  # the stand-in answers it


def test_unknown_vllm_flags_are_kept_as_ignored_with_their_values() -> None:
    cfg = parse_serve_args(["serve", "m", "--gpu-memory-utilization", "0.9", "--enable-prefix-caching",
                            "--dtype=bfloat16", "--max-num-seqs", "8", "--trust-remote-code"])
    assert cfg.ignored == ("--gpu-memory-utilization 0.9", "--enable-prefix-caching", "--dtype=bfloat16",
                           "--max-num-seqs 8", "--trust-remote-code")


def test_defaults_follow_vllm() -> None:
    cfg = parse_serve_args(["serve", "org/repo"])
    assert (cfg.served_model_names, cfg.host, cfg.port, cfg.tensor_parallel_size) == (("org/repo",), "0.0.0.0",
                                                                                     8000, 1)


def test_model_by_flag_and_several_served_names() -> None:
    cfg = parse_serve_args(["serve", "--model", "/m", "--served-model-name", "a", "b", "-tp", "4"])
    assert (cfg.model, cfg.served_model_names, cfg.tensor_parallel_size) == ("/m", ("a", "b"), 4)


@pytest.mark.parametrize("argv, message", [
    ([], "only `vllm serve`"),
    (["chat", "m"], "only `vllm serve`"),
    (["serve"], "no model given"),
    (["serve", "--port", "8000"], "no model given"),
    (["serve", "m", "--port", "eighty"], "invalid port value"),
    (["serve", "m", "--port", "70000"], "invalid port value"),
    (["serve", "m", "--tensor-parallel-size", "0"], "invalid positive integer value"),
    (["serve", "m", "--served-model-name"], "expected at least one argument"),
    (["serve", "m", "other"], "unexpected argument 'other'"),
    (["serve", "a", "--model", "b"], "the model is given twice"),
    (["serve", "m", "--max-model"], None),  # no abbreviations: an unknown flag, ignored
])
def test_refused_inputs(argv: list[str], message: str | None) -> None:
    if message is None:
        assert parse_serve_args(argv).ignored == ("--max-model",)
        return
    with pytest.raises(UsageError, match=message):
        parse_serve_args(argv)


def test_split_ignored() -> None:
    assert split_ignored(["--a", "1", "--b", "--c=2", "--d", "x"]) == ("--a 1", "--b", "--c=2", "--d x")
    with pytest.raises(UsageError):
        split_ignored(["stray"])


def test_a_model_directory_resolves_to_its_first_gguf(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "a.gguf").write_bytes(b"")
    (tmp_path / "z.gguf").write_bytes(b"")
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path), None) == tmp_path / "b" / "a.gguf"
    assert resolve_model(str(tmp_path / "z.gguf"), None) == tmp_path / "z.gguf"


def test_unusable_models_are_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="no \\*.gguf file under"):
        resolve_model(str(tmp_path), None)
    with pytest.raises(UsageError, match="not a .gguf file"):
        resolve_model(str(tmp_path / "model.safetensors"), None)
    with pytest.raises(UsageError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"), None)
    with pytest.raises(UsageError, match="never downloads"):
        resolve_model("org/repo", str(tmp_path))


def test_a_hugging_face_name_resolves_in_the_cache(tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--org--repo" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "m.Q4.gguf").write_bytes(b"")
    assert resolve_model("org/repo", str(tmp_path)) == snapshot / "m.Q4.gguf"


def test_main_exits_2_with_a_clear_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve"]) == 2
    assert "vllm (stand-in): error: no model given" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "no *.gguf file under" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "STAND-IN" in capsys.readouterr().out
