"""benchmarks/plan.py's importable parts: the GPU timing function (run on CPU at a tiny budget) and the
FLOPs per plan computed from a budget, which must equal those a real plan counts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).parents[1] / "benchmarks" / "plan.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_plan", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(bench):
    return bench.random_bundle("tiny", torch.device("cpu"), amp="off")


def test_time_solvers_times_a_plan_per_solver_and_refuses_cuda_without_a_gpu(bench):
    rows = bench.time_solvers("tiny", device="cpu", samples=8, iterations=2, horizon=2)
    assert [r["solver"] for r in rows] == list(bench.SOLVERS)
    for r in rows:
        assert r["flops"] > 0 and r["seconds"] > 0 and r["warm_flops"] > 0 and r["tflops_per_s"] > 0
    assert {r["device"] for r in rows} == {"cpu"}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            bench.time_solvers("tiny", samples=8, iterations=2, horizon=2)


def test_flops_from_a_budget_equal_the_flops_a_real_plan_counts(bench, tiny):
    configs = bench.solver_plan_configs(12, 4, 2)  # cem-warm: 3 iterations when warm-started
    configs = {k: c.model_copy(update={"icem": c.icem.model_copy(update={"samples": 12, "topk": 3}),
                                       "gd": c.gd.model_copy(update={"steps": 3})}) for k, c in configs.items()}
    obs = bench.observations(tiny, None)
    counted = {r["solver"]: r for r in bench.counted_flops(tiny, configs, obs)}
    for name, cfg in configs.items():
        real = bench.plan_cost(tiny, cfg, obs)
        assert counted[name]["flops"] == pytest.approx(real["flops"], rel=1e-9), name
        assert counted[name]["warm_flops"] == pytest.approx(real["warm_flops"], rel=1e-9), name
    assert counted["cem-warm"]["warm_flops"] < counted["cem"]["warm_flops"]
