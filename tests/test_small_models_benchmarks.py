"""The small-model benchmark scripts' summaries, on rows of known values (no export, no timing):
what they count and render is what the 5-seed runs will report."""

from __future__ import annotations

import pytest

from conftest import benchmark_module


@pytest.fixture(scope="module")
def holdout():
    with benchmark_module("int8_mixed_holdout") as module:
        yield module


def _row(run: str, choice: str, test: float, layers: int) -> dict:
    return {"run": run, "search_images": choice, "num_search_images": 264 if choice == "val" else 2382,
            "search_agreement": 0.992, "val_agreement": 0.992, "test_agreement": test, "test_delta_pp": 0.0,
            "size_bytes": 2048, "num_float_layers": layers, "num_layers": 30, "float_layers": [], "reached": True,
            "search_seconds": 20.0, "num_test_images": 264}


def test_holdout_counts_the_runs_that_hold_the_target_on_test(holdout):
    rows = [_row("seed1", "val", 0.981, 18), _row("seed1", "train+val", 0.992, 20),
            _row("seed2", "val", 0.990, 16), _row("seed2", "train+val", 0.995, 22)]
    summary = holdout.summarize(rows, 0.99)
    assert summary["val"]["runs_holding_target"] == 1 and summary["train+val"]["runs_holding_target"] == 2
    assert summary["val"]["test_agreement_min"] == 0.981
    assert summary["train+val"]["test_agreement_mean"] == pytest.approx(0.9935)
    assert summary["train+val"]["float_layers_mean"] == 21
    result = {"machine": {"cpu": "x", "cores": 2, "python": "3", "date": "2026-12-08"}, "target": 0.99, "rows": rows,
              "summary": summary}
    goals = holdout.goal(result)
    assert [g["verdict"] for g in goals] == ["missed on 1 run(s)", "met"]
    markdown = holdout.render(result)
    assert "| val | 2 | 98.55 ± 0.64 % | 98.10 % | 1 of 2 | 17.0 |" in markdown
    assert "| seed2 | train+val | 2382 |" in markdown
