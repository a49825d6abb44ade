"""The backtest decides only on what was known at the time, and scores on what happened."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import numpy as np

import backtest
from timeutil import UTC


def test_snapshot_period_uses_the_forecast_as_published_before_the_decision():
    inputs = backtest.Inputs.load()
    moment = datetime(2023, 4, 12, 16, 0, tzinfo=UTC)  # 17:00 BST
    decision = backtest.decision_at(inputs, moment, 24)
    published, values = next((p, v) for p, v in reversed(inputs.snapshots) if p <= moment)
    assert published == datetime(2023, 4, 11, 17, 1, tzinfo=UTC)  # today's 17:01Z was not out yet
    assert decision.in_snapshot_period and decision.as_published > 0
    for start, known in zip(decision.starts, decision.carbon_known, strict=True):
        if start in values:
            assert known == values[start]
    assert not np.array_equal(decision.carbon_known, decision.carbon_final)  # it differs from hindsight


def test_outside_the_snapshots_the_final_forecast_is_used_and_said():
    inputs = backtest.Inputs.load()
    decision = backtest.decision_at(inputs, datetime(2023, 8, 1, 16, 0, tzinfo=UTC), 24)
    assert not decision.in_snapshot_period and decision.as_published == 0
    assert np.array_equal(decision.carbon_known, decision.carbon_final)


def test_prices_after_publication_are_our_forecast_not_the_real_ones():
    inputs = backtest.Inputs.load()
    early = datetime(2023, 8, 1, 12, 0, tzinfo=UTC)  # 13:00 BST: tomorrow's prices not out yet
    decision = backtest.decision_at(inputs, early, 24)
    assert decision.price_forecast > 0
    cutoff = datetime(2023, 8, 1, 22, 0, tzinfo=UTC)  # 23:00 BST
    for start, known, real in zip(decision.starts, decision.price_known, decision.price_real, strict=True):
        if start < cutoff:
            assert known == real
    later = [
        (k, r)
        for s, k, r in zip(decision.starts, decision.price_known, decision.price_real, strict=True)
        if s >= cutoff
    ]
    assert any(k != r for k, r in later)


def test_a_hole_in_the_recording_is_skipped():
    inputs = backtest.Inputs.load()
    assert backtest.decision_at(inputs, datetime(2023, 10, 20, 16, 0, tzinfo=UTC), 24) is None


def test_oracle_is_never_beaten_and_ours_never_loses_to_the_baseline_on_its_objective_in_total():
    report = backtest.summary(backtest.run([date(2023, 4, 1) + timedelta(days=i) for i in range(20)]))
    for objective, index in (("carbon", "carbon_kg"), ("cost", "cost_gbp")):
        figures = report["objectives"][objective]
        assert figures["oracle"][index] <= figures["ours"][index] + 1e-6
        assert figures["ours"][index] <= figures["baseline"][index]
    assert report["decisions"] == 20 * len(backtest.JOB_MIX)


def test_cli_writes_table_json_and_chart(runner, tmp_path):
    result = runner.invoke(args=["backtest", "--days", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "ours realised" in result.output and "oracle" in result.output
    report = json.loads((tmp_path / "backtest_2023.json").read_text())
    assert report["decisions"] == 3 * len(backtest.JOB_MIX)
    assert (tmp_path / "backtest_2023.svg").read_text().startswith("<svg")
