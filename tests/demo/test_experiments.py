"""The experiments' arithmetic: the seed interval on the RL gain and the insights table."""

import math

import pytest

from toolrl.demo.experiments import COMPARISONS, insights_markdown, mean_ci, rl_gain_markdown


def test_mean_ci_is_a_t_interval_that_widens_with_spread():
    mean, low, high = mean_ci([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    # t(0.975, 2) = 4.303; sd = 0.1; half-width = 4.303 * 0.1 / sqrt(3)
    assert high - mean == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)
    assert mean - low == pytest.approx(high - mean)
    assert mean_ci([0.2, 0.2, 0.2])[1:] == (pytest.approx(0.2), pytest.approx(0.2))
    assert math.isnan(mean_ci([0.5])[1])


def _run(avg: float, calls: float) -> dict:
    return {"sft_avg": avg / 2, "rl_avg": avg, "rl_pass": avg, "tool_calls": calls,
            "tool_success": 0.9, "length": 80.0, "curve_acc": [0.1, avg], "curve_entropy": [1.0, 0.5]}  # fmt: skip


def test_insights_table_has_a_row_per_variant_with_the_spread_over_seeds():
    runs = {name: [_run(0.2, 1.0), _run(0.4, 2.0)] for pair in COMPARISONS.values() for name in pair}  # fmt: skip
    table = insights_markdown({"seeds": [0, 1], "runs": runs})
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert len(rows) == 6
    assert "| 0.300 (0.200–0.400) |" in rows[0] and "| 1.500 (1.000–2.000) |" in rows[0]


def test_rl_gain_table_reports_each_seed_and_the_interval():
    result = {"vary": "rl", "seeds": [{"seed": 0, "sft": 0.1, "rl": 0.3, "gain": 0.2}],
              "gain": {"mean": 0.2, "ci95": [0.1, 0.3]},
              "gain_by_benchmark": {"math": {"mean": 0.5, "ci95": [0.25, 0.75]}}}  # fmt: skip
    text = rl_gain_markdown(result)
    assert "| 0 | 0.100 | 0.300 | +0.200 |" in text and "[+0.100, +0.300]" in text
    assert "- math: +0.500 [+0.250, +0.750]" in text
