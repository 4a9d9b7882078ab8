"""The demo's verdicts on the issue's targets, from given run results (the demo itself takes minutes)."""

from __future__ import annotations

from mmfast.train.demo import RunResult, _format_table, summarize


def _run(variant: str, model: str, accuracy: float, step: float = 0.03) -> RunResult:
    metrics = {"accuracy": accuracy, "f1_macro": accuracy, "roc_auc": 0.99}
    return RunResult(
        variant, model, test=metrics, seconds_per_step=step, median_seconds_per_step=step,
        final_train_loss=0.01, final_val_loss=0.02, epochs=3,
    )  # fmt: skip


def _results(clean_concat: float, noisy_concat: float) -> list[RunResult]:
    return [
        _run("clean", "concat", clean_concat),
        RunResult("clean", "gated", skipped="No module named 'mmfast.nn.gated_fusion'"),
        _run("clean", "image only", 0.98),
        _run("clean", "audio only", 0.96),
        _run("noisy images", "concat", noisy_concat),
        _run("noisy images", "image only", 0.60),
        _run("noisy images", "audio only", 0.96),
        _run("noisy images + masked audio", "concat", 0.85),
        _run("noisy images + masked audio", "image only", 0.60),
        _run("noisy images + masked audio", "audio only", 0.70),
    ]


def test_summary_reports_gains_and_speed() -> None:
    fused = _run("clean", "concat", 0.99, 0.030)
    reference = _run("clean", "concat (reference)", 0.99, 0.033)
    layers = {"fused": 20e-6, "reference": 30e-6, "batch_size": 64.0}
    lines = summarize(_results(0.99, 0.995), fused, reference, layers)
    assert "target" not in "\n".join(lines) and "met" not in "\n".join(lines)
    assert "batch 64: fused 20 us, reference 30 us: 1.50x" in lines[4]
    assert "1.100x" in lines[3]
    assert "+3.5 points" in lines[1]


def test_summary_reports_the_training_step_memory_of_both_twins() -> None:
    fused = _run("clean", "concat", 0.99, 0.030)
    reference = _run("clean", "concat (reference)", 0.99, 0.033)
    layers = {"fused": 20e-6, "reference": 30e-6, "batch_size": 64.0}
    layers |= {"fused_peak_bytes": 3 * 2**20, "reference_peak_bytes": 2**22, "fused_held_bytes": 2**20}
    layers |= {"reference_held_bytes": 2**21}
    line = next(x for x in summarize(_results(0.99, 0.995), fused, reference, layers) if "memory" in x)
    assert line == (
        "training step memory at batch 64: peak fused 3.00 MiB, reference 4.00 MiB; "
        "held by autograd after the forward 1.00 vs 2.00 MiB"
    )


def test_summary_shows_results_not_internal_targets() -> None:
    fused = _run("clean", "concat", 0.99, 0.030)
    reference = _run("clean", "concat (reference)", 0.99, 0.030)
    lines = summarize(_results(0.975, 0.97), fused, reference)
    text = "\n".join(lines)
    assert "target" not in text and "NOT met" not in text
    assert "points over the better modality" in lines[0]
    assert "+1.0 points" in lines[1]
    assert "runs 1.000x" in lines[3]


def test_table_lists_skipped_runs_with_the_reason() -> None:
    table = _format_table(_results(0.99, 0.99))
    assert "skipped (No module named 'mmfast.nn.gated_fusion')" in table
    assert table.count("\n") == len(_results(0.99, 0.99)) + 1
