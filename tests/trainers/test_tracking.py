"""Metric sinks: metrics.jsonl always; TensorBoard and W&B (offline) when enabled and installed."""

import json

import pytest

from toolrl.trainers.tracking import MetricsLogger, read_metrics


def test_jsonl_appends_and_a_resume_drops_the_crashed_runs_later_steps(tmp_path):
    logger = MetricsLogger(tmp_path, ["jsonl"], {})
    for step in (1, 2, 3):
        logger.log(step, {"actor/pg_loss": 0.1 * step, "bad": float("nan")})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert "bad" not in read_metrics(tmp_path)[0]  # non-finite values are not written
    MetricsLogger(tmp_path, ["jsonl"], {}, resume_step=2).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_unknown_logger_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown trainer\.loggers"):
        MetricsLogger(tmp_path, ["jsonl", "mlflow"], {})


def test_tensorboard_events_are_written(tmp_path):
    pytest.importorskip("tensorboard", reason="the `logging` extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, ["jsonl", "tensorboard"], {})
    logger.log(1, {"actor/pg_loss": 0.5})
    logger.log(2, {"actor/pg_loss": 0.25})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("actor/pg_loss")] == [0.5, 0.25]


def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the `logging` extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricsLogger(tmp_path, ["jsonl", "wandb"], {"trainer": {"lr": 1e-6}})
    logger.log(1, {"critic/score/mean": 0.5})
    logger.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (
        json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["critic/score/mean"]
        == 0.5
    )
