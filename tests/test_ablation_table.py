"""The ablation table: variants from the command line, per-variant aggregation and the Markdown."""

from __future__ import annotations

import math

import pytest

from racestack.ablation import row_of, table, variants_of
from racestack.evaluation.scoring import Scorecard
from racestack.graph import GraphError


def test_one_variant_per_alternative_after_the_baseline() -> None:
    variants = variants_of(["tracker=kalman,greedy", "planner=mpc"], ["flying_object_detector"])
    assert [v.name for v in variants] == [
        "baseline", "tracker=kalman", "tracker=greedy", "planner=mpc", "without flying_object_detector"]
    assert variants[2].swap == ["tracker=greedy"] and variants[4].disable == ["flying_object_detector"]
    with pytest.raises(GraphError, match="SLOT=IMPL"):
        variants_of(["tracker"], [])


def _card(collisions: float, amota: float, e2e_p99: float | None = None) -> Scorecard:
    card = Scorecard(metrics={"closed_loop.collisions": collisions, "tracking.car.amota": amota})
    if e2e_p99 is not None:
        card.latency["end_to_end"] = {"p50": e2e_p99 / 2, "p99": e2e_p99}
    return card


def test_events_are_totals_rates_are_means_and_failed_runs_show() -> None:
    row = row_of([_card(0, 0.9, 100.0), _card(1, 0.7), _card(2, float("nan"), 60.0)], runs=4)
    assert row["runs"] == "3/4"
    assert row["closed_loop.collisions"] == 3.0
    assert row["tracking.car.amota"] == pytest.approx(0.8)  # the NaN run has no tracks to score
    assert row["end_to_end"] == "40/80"
    assert math.isnan(row["tracking.mota"]) and row["/perception/objects/tracked"] == "-"


def test_markdown_has_a_line_per_variant_and_dashes_for_missing_values() -> None:
    text = table({"baseline": row_of([_card(0, 0.95, 90.0)], 1), "tracker=greedy": row_of([], 1)})
    header, rule, *lines = text.splitlines()
    cells = [c.strip() for c in lines[1].strip("|").split("|")]
    assert len(lines) == 2 and header.count("|") == rule.count("|") == lines[0].count("|")
    assert lines[0].startswith("| baseline | 1/1 |") and "| 0.95 |" in lines[0] and "| 45/90 |" in lines[0]
    assert cells[:2] == ["tracker=greedy", "0/1"] and set(cells[2:]) == {"-"}
