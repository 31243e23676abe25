"""The chart's price values reach the operator: operator.gpuPrices and operator.cpuPricePerCoreHour
become MODELOPS_GPU_PRICES / MODELOPS_CPU_PRICE_PER_CORE_HOUR, read by OperatorConfig; unset, the
operator's built-in list prices apply (no variable rendered)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelops.config import DEFAULT_GPU_PRICES, OperatorConfig

from .helm import CHART, KUBE_VERSION, helm, only_env, operator_env, values_file


def test_price_values_are_read_by_the_operator_config(monkeypatch: pytest.MonkeyPatch) -> None:
    only_env(monkeypatch, operator_env({"operator": {"gpuPrices": {"nvidia-l4": 0.7, "amd-mi300x": 4.5},
                                                     "cpuPricePerCoreHour": 0.03}}))
    cfg = OperatorConfig()
    assert cfg.gpu_prices == {**DEFAULT_GPU_PRICES, "nvidia-l4": 0.7, "amd-mi300x": 4.5}
    assert cfg.cpu_price_per_core_hour == 0.03


def test_by_default_the_built_in_list_prices_apply() -> None:
    env = operator_env({})
    assert "MODELOPS_GPU_PRICES" not in env and "MODELOPS_CPU_PRICE_PER_CORE_HOUR" not in env


@pytest.mark.parametrize("values", [{"operator": {"gpuPrices": {"nvidia-l4": -1}}},
                                    {"operator": {"gpuPrices": {"nvidia-l4": "cheap"}}},
                                    {"operator": {"cpuPricePerCoreHour": -0.1}}])
def test_the_values_schema_refuses_bad_prices(values: dict, tmp_path: Path) -> None:
    out = helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file(values, tmp_path)),
               check=False)
    assert out.returncode != 0 and "values don't meet the specifications of the schema" in out.stderr, out.stderr
