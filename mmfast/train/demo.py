"""The AV-digits demo (``mmfast demo``, ``make demo``).

Trains, on AV-digits (spoken + handwritten digits, see :mod:`mmfast.data.av_digits`):

1. the fused classifier with each vector fusion (``concat``; ``gated`` and ``attention`` when their
   layers are importable), and image-only and audio-only baselines with the same encoders;
2. the same fusion and baselines with noisy images, then with noisy images and masked audio (one
   corrupted modality leaves the clean one about 98 % accurate on its own, which caps what fusion
   can add; degrading both shows what it adds);
3. the fused ``concat`` model and its plain-PyTorch ``reference`` twin (same seed, so the same
   initial weights and data order), epoch for epoch in turn so that both see the same machine load,
   timing every training step;
4. a short image-text retrieval run: a CLIP-loss dual encoder on the generated scenes
   (:mod:`mmfast.data.scenes`, 2,000 training pairs, 3 epochs), ranked over the 1,000-pair test
   gallery both ways;
5. a short visual question answering run: the FiLM model on easy-VQA (:mod:`mmfast.data.easy_vqa`,
   1,200 of its training images with their questions, 2 epochs), tested on all 9,673 test
   questions, with the accuracy per question type.

Prints a table of test metrics, the step times and both runs' final losses, the retrieval run's
recall@K and median ranks, and writes everything to ``DIR/demo.json`` (each run's checkpoints, log
and plot in ``DIR/<run>/``).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmfast.train.config import TrainConfig
from mmfast.train.memory import saved_tensor_bytes, step_memory
from mmfast.train.trainer import TIMING_WARMUP_STEPS, Trainer

NOISY_IMAGES = {"corrupt_images": "noise", "corruption_strength": 0.5}
NOISY_BOTH = {**NOISY_IMAGES, "corrupt_audio": "masking", "audio_corruption_strength": 0.5}
VARIANTS = {"clean": {}, "noisy images": NOISY_IMAGES, "noisy images + masked audio": NOISY_BOTH}
FUSIONS = ("concat", "gated", "attention")
# The retrieval run: a subset of the scenes' training pairs, the whole default test gallery.
RETRIEVAL_OPTIONS = {"num_train": 2000, "num_val": 500}
# The VQA run: a third of easy-VQA's training images (and their questions), the whole test set.
VQA_OPTIONS = {"num_train": 1200, "num_val": 200}


@dataclass
class RunResult:
    """One training run's outcome, or why it was skipped."""

    variant: str
    model: str
    test: dict[str, Any] = field(default_factory=dict)
    seconds_per_step: float = math.nan
    median_seconds_per_step: float = math.nan
    final_train_loss: float = math.nan
    final_val_loss: float = math.nan
    epochs: int = 0
    skipped: str | None = None

    @property
    def accuracy(self) -> float:
        return float(self.test.get("accuracy", math.nan))


def base_config(quick: bool) -> TrainConfig:
    """The demo's training settings: 8 epochs at batch 64 train AV-digits to about 99 %."""
    return TrainConfig(
        dataset="av-digits",
        fusion="concat",
        epochs=2 if quick else 8,
        batch_size=64,
        lr=3e-3,
        # Every run trains all its epochs (the twins must, to compare their curves); the test metrics
        # are still those of the best validation epoch.
        patience=0,
        seed=0,
        device="cpu",
    )


def retrieval_config(quick: bool) -> TrainConfig:
    """The demo's retrieval run: a CLIP dual encoder on 2,000 scene pairs for 3 epochs (1 with
    ``quick``), well under a minute on 2 cores; the default run (``mmfast train --task retrieval
    --dataset scenes``) trains longer on more pairs."""
    return TrainConfig(
        task="retrieval",
        dataset="scenes",
        dataset_options=dict(RETRIEVAL_OPTIONS),
        loss="clip",
        epochs=1 if quick else 3,
        batch_size=64,
        lr=3e-3,
        patience=0,
        seed=0,
        device="cpu",
    )


def vqa_config(quick: bool) -> TrainConfig:
    """The demo's VQA run: the FiLM model on 1,200 easy-VQA training images (about 11,600
    questions) for 2 epochs (1 with ``quick``); the default run (``mmfast train --task vqa --dataset
    easy-vqa --fusion film``) trains on all 3,600."""
    return TrainConfig(
        task="vqa",
        dataset="easy-vqa",
        dataset_options=dict(VQA_OPTIONS),
        fusion="film",
        epochs=1 if quick else 2,
        patience=0,
        seed=0,
        device="cpu",
    )


@dataclass
class VQAResult:
    """The VQA run's test metrics (accuracy, per question type, number of questions) and its cost."""

    fusion: str
    test: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    train_questions: int = 0
    seconds: float = math.nan


def train_vqa(config: TrainConfig, out_dir: Path, progress: bool) -> VQAResult:
    """Trains the VQA ``config`` into ``out_dir``."""
    start = time.perf_counter()
    trainer = Trainer(config, out_dir, progress=progress)
    outcome = trainer.fit()
    result = VQAResult(
        fusion=config.fusion,
        test={k: v for k, v in outcome["test"].items() if k != "confusion_matrix"},
        epochs=outcome["epochs_trained"],
        train_questions=len(trainer.splits["train"]),
        seconds=time.perf_counter() - start,
    )
    by_type = ", ".join(f"{k} {v:.4f}" for k, v in result.test["accuracy_by_type"].items())
    print(
        f"  {'vqa (easy-vqa)':<28} {config.fusion:<22} test accuracy {result.test['accuracy']:.4f} "
        f"({by_type})  ({result.epochs} epochs, {result.seconds:.0f} s)",
        flush=True,
    )
    return result


def _format_vqa_table(results: list[VQAResult]) -> str:
    header = f"{'vqa':<30} {'questions':>9} {'accuracy':>8} {'shape':>7} {'color':>7} {'yes_no':>7}"
    lines = [header, "-" * len(header)]
    for r in results:
        by_type = r.test["accuracy_by_type"]
        model = f"{r.fusion}, {r.train_questions} train q, {r.epochs} ep"
        lines.append(
            f"{model:<30} {r.test['count']:>9} {r.test['accuracy']:>8.4f} {by_type['shape']:>7.4f} "
            f"{by_type['color']:>7.4f} {by_type['yes_no']:>7.4f}"
        )
    return "\n".join(lines)


@dataclass
class RetrievalResult:
    """The retrieval run's test metrics (recall@K, median ranks, gallery size) and its cost."""

    loss: str
    test: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    train_pairs: int = 0
    seconds: float = math.nan
    median_seconds_per_step: float = math.nan


def train_retrieval(config: TrainConfig, out_dir: Path, progress: bool) -> RetrievalResult:
    """Trains the retrieval ``config`` into ``out_dir``."""
    start = time.perf_counter()
    trainer = Trainer(config, out_dir, progress=progress)
    outcome = trainer.fit()
    timed = trainer.step_seconds[TIMING_WARMUP_STEPS:] or trainer.step_seconds
    result = RetrievalResult(
        loss=config.loss,
        test=dict(outcome["test"]),
        epochs=outcome["epochs_trained"],
        train_pairs=len(trainer.splits["train"]),
        seconds=time.perf_counter() - start,
        median_seconds_per_step=statistics.median(timed) if timed else math.nan,
    )
    print(
        f"  {'retrieval (scenes)':<28} {config.loss + ' dual encoder':<22} "
        f"image->text R@1 {result.test['i2t_recall@1']:.4f}, text->image R@1 "
        f"{result.test['t2i_recall@1']:.4f}  ({result.epochs} epochs, {result.seconds:.0f} s)",
        flush=True,
    )
    return result


def _format_retrieval_table(results: list[RetrievalResult]) -> str:
    header = (
        f"{'retrieval':<22} {'gallery':>7} {'direction':<14} {'R@1':>7} {'R@5':>7} {'R@10':>7} "
        f"{'median rank':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        model = f"{r.loss}, {r.train_pairs} pairs, {r.epochs} ep"
        for direction, name in (("i2t", "image -> text"), ("t2i", "text -> image")):
            lines.append(
                f"{model:<22} {r.test['count']:>7} {name:<14} {r.test[f'{direction}_recall@1']:>7.4f} "
                f"{r.test[f'{direction}_recall@5']:>7.4f} {r.test[f'{direction}_recall@10']:>7.4f} "
                f"{r.test[f'{direction}_median_rank']:>11.1f}"
            )
            model = ""
    return "\n".join(lines)


def _slug(*parts: str) -> str:
    return "-".join(p.replace(" + ", "-").replace(" ", "-") for p in parts)


def _result(variant: str, model: str, trainer: Trainer, outcome: dict[str, Any]) -> RunResult:
    timed = trainer.step_seconds[TIMING_WARMUP_STEPS:] or trainer.step_seconds
    return RunResult(
        variant=variant,
        model=model,
        test={k: v for k, v in outcome["test"].items() if k != "confusion_matrix"},
        seconds_per_step=trainer.seconds_per_step,
        median_seconds_per_step=statistics.median(timed) if timed else math.nan,
        final_train_loss=trainer.history[-1]["train_loss"],
        final_val_loss=trainer.history[-1]["val_loss"],
        epochs=outcome["epochs_trained"],
    )


def train_one(variant: str, model: str, config: TrainConfig, out_dir: Path, progress: bool) -> RunResult:
    """Trains ``config`` into ``out_dir``; a fusion whose layers cannot be imported is skipped."""
    start = time.perf_counter()
    try:
        trainer = Trainer(config, out_dir, progress=progress)
    except ImportError as error:
        print(f"  {variant:<28} {model:<22} skipped: {error}", flush=True)
        return RunResult(variant, model, skipped=str(error))
    result = _result(variant, model, trainer, trainer.fit())
    print(
        f"  {variant:<28} {model:<22} test accuracy {result.accuracy:.4f}  "
        f"({result.epochs} epochs, {time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    return result


def train_twins(
    config: TrainConfig, out_dir: Path, progress: bool
) -> tuple[RunResult, RunResult, dict[str, float]]:
    """The fused model and its reference twin, an epoch of one then an epoch of the other; then
    the fusion layers alone timed on the trained weights."""
    start = time.perf_counter()
    trainers = {
        "fused": Trainer(config, out_dir / config.fusion, progress=progress),
        "reference": Trainer(
            replace(config, reference=True), out_dir / f"{config.fusion}-reference", progress=progress
        ),
    }
    outcomes: dict[str, dict[str, Any]] = {}
    while not outcomes.get("fused"):
        for name, trainer in trainers.items():
            outcomes[name] = trainer.fit(max_epochs=1)
    fused = _result("clean", config.fusion, trainers["fused"], outcomes["fused"])
    reference = _result("clean", f"{config.fusion} (reference)", trainers["reference"], outcomes["reference"])
    for result in (fused, reference):
        print(
            f"  {'clean':<28} {result.model:<22} test accuracy {result.accuracy:.4f}  "
            f"({result.epochs} epochs, fused and reference together {time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    layers = time_fusion_layers(trainers["fused"].model, trainers["reference"].model, config.batch_size)
    layers |= {
        f"{name}_{figure}": value
        for name, trainer in trainers.items()
        for figure, value in training_step_memory(trainer).items()
    }
    return fused, reference, layers


def training_step_memory(trainer: Trainer) -> dict[str, int]:
    """Bytes of one training step of `trainer`'s model on its first training batch (forward, loss
    and backward; no optimizer step): ``held``, what autograd holds after the forward beyond the
    batch and the parameters, and ``peak``, the most allocated at any moment of the step (parameter
    gradients included, see :func:`mmfast.train.memory.step_memory`)."""
    model = trainer.model
    batch = trainer._to_device(next(iter(trainer._train_loader(0))))
    labels = batch.pop("label")
    parameters = list(model.parameters())
    model.train()

    def loss() -> torch.Tensor:
        with trainer._autocast():
            return F.cross_entropy(model(batch).float(), labels)

    figures = step_memory(lambda: loss().backward(), parameters)
    held, out = saved_tensor_bytes(loss, [*parameters, *batch.values()])
    del out
    model.zero_grad(set_to_none=True)
    return {"held_bytes": held, "peak_bytes": figures["peak"]}


def time_fusion_layers(
    fused: nn.Module, reference: nn.Module, batch_size: int, repeats: int = 300
) -> dict[str, float]:
    """Median seconds of forward + backward of the fusion layer alone (the part ``reference``
    changes), fused and reference in turn on the same random encoder outputs."""
    generator = torch.Generator().manual_seed(0)
    features = [
        torch.randn(batch_size, int(fused.encoders[m].out_dim), generator=generator, requires_grad=True)
        for m in fused.modalities
    ]
    times: dict[str, list[float]] = {"fused": [], "reference": []}
    for repeat in range(repeats + TIMING_WARMUP_STEPS):
        for name, model in (("fused", fused), ("reference", reference)):
            inputs = [*features, *model.fusion.parameters()]
            start = time.perf_counter()
            torch.autograd.grad(model.fusion(features).sum(), inputs)
            if repeat >= TIMING_WARMUP_STEPS:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {**medians, "batch_size": float(batch_size)}


def _format_table(results: list[RunResult]) -> str:
    header = f"{'variant':<28} {'model':<22} {'accuracy':>8} {'F1':>7} {'ROC-AUC':>7} {'ms/step':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        if r.skipped:
            lines.append(f"{r.variant:<28} {r.model:<22} skipped ({r.skipped})")
            continue
        lines.append(
            f"{r.variant:<28} {r.model:<22} {r.accuracy:>8.4f} {r.test['f1_macro']:>7.4f} "
            f"{r.test['roc_auc']:>7.4f} {r.median_seconds_per_step * 1e3:>8.1f}"
        )
    return "\n".join(lines)


def summarize(
    results: list[RunResult], fused: RunResult, reference: RunResult, layers: dict[str, float] | None = None
) -> list[str]:
    """What fusion and the fused layers bought in this run, one line each: accuracies against the
    single modalities, and the fused model's step time against its plain-PyTorch twin."""
    by_key = {(r.variant, r.model): r for r in results if not r.skipped}
    lines = []
    concat = by_key[("clean", "concat")]
    singles = [by_key[("clean", m)].accuracy for m in ("image only", "audio only")]
    lines.append(
        f"clean: concat {concat.accuracy:.4f}; image only {singles[0]:.4f}, audio only {singles[1]:.4f}: "
        f"fusion {(concat.accuracy - max(singles)) * 100:+.1f} points over the better modality"
    )
    for variant in list(VARIANTS)[1:]:
        fusion = by_key[(variant, "concat")].accuracy
        best = max(by_key[(variant, m)].accuracy for m in ("image only", "audio only"))
        gain = fusion - best
        lines.append(
            f"{variant}: concat {fusion:.4f} vs best single modality {best:.4f}: {gain * 100:+.1f} points"
        )
    speedup = reference.median_seconds_per_step / fused.median_seconds_per_step
    mean_speedup = reference.seconds_per_step / fused.seconds_per_step
    lines.append(
        f"training step, median (mean): fused {fused.median_seconds_per_step * 1e3:.1f} "
        f"({fused.seconds_per_step * 1e3:.1f}) ms, reference {reference.median_seconds_per_step * 1e3:.1f} "
        f"({reference.seconds_per_step * 1e3:.1f}) ms: the fused model runs {speedup:.3f}x "
        f"({mean_speedup:.3f}x) the reference's speed"
    )
    if layers:
        lines.append(
            f"fusion layer alone, forward + backward at batch {layers['batch_size']:.0f}: "
            f"fused {layers['fused'] * 1e6:.0f} us, reference {layers['reference'] * 1e6:.0f} us: "
            f"{layers['reference'] / layers['fused']:.2f}x; the layer is "
            f"{layers['fused'] / fused.median_seconds_per_step * 100:.0f} % of the fused model's "
            "training step"
        )
    if layers and "fused_peak_bytes" in layers:
        mib = {key: value / 2**20 for key, value in layers.items() if key.endswith("_bytes")}
        lines.append(
            f"training step memory at batch {layers['batch_size']:.0f}: peak fused "
            f"{mib['fused_peak_bytes']:.2f} MiB, reference {mib['reference_peak_bytes']:.2f} MiB; "
            "held by autograd after the forward "
            f"{mib['fused_held_bytes']:.2f} vs {mib['reference_held_bytes']:.2f} MiB"
        )
    lines.append(
        f"final losses, fused vs reference: train {fused.final_train_loss:.5f} vs "
        f"{reference.final_train_loss:.5f}, validation {fused.final_val_loss:.5f} vs "
        f"{reference.final_val_loss:.5f}; test accuracy {fused.accuracy:.4f} vs {reference.accuracy:.4f}"
    )
    return lines


def run_demo(out_dir: str | Path = "runs/demo", quick: bool = False, progress: bool = False) -> int:
    """Runs the demo (see the module docstring); returns 0 once the table is printed."""
    out = Path(out_dir)
    config = base_config(quick)
    started = time.perf_counter()
    print(f"AV-digits demo: {config.epochs} epochs per run, batch {config.batch_size}, writing to {out}")
    results: list[RunResult] = []
    print("  concat fusion and its reference twin, epoch by epoch in turn", flush=True)
    fused, reference, layers = train_twins(config, out / "clean", progress)
    results.append(fused)
    for variant, options in VARIANTS.items():
        data = replace(config, dataset_options=dict(options))
        fusions = tuple(f for f in FUSIONS if f != "concat") if variant == "clean" else ("concat",)
        for fusion in fusions:
            run_config = replace(data, fusion=fusion)
            results.append(train_one(variant, fusion, run_config, out / _slug(variant, fusion), progress))
        for modality in ("image", "audio"):
            results.append(
                train_one(
                    variant,
                    f"{modality} only",
                    replace(data, modalities=[modality]),
                    out / _slug(variant, modality, "only"),
                    progress,
                )
            )
    results.append(reference)
    print("  image-text retrieval on the generated scenes", flush=True)
    retrieval = [train_retrieval(retrieval_config(quick), out / "retrieval-clip", progress)]
    print("  visual question answering on easy-VQA", flush=True)
    vqa = [train_vqa(vqa_config(quick), out / "vqa-film", progress)]

    print()
    print(_format_table(results))
    print()
    print(_format_retrieval_table(retrieval))
    print()
    print(_format_vqa_table(vqa))
    print()
    summary = summarize(results, fused, reference, layers)
    print("\n".join(summary))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; results in {out / 'demo.json'}")
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "config": config.to_dict(),
        "runs": [vars(r) for r in results],
        "retrieval": {"config": retrieval_config(quick).to_dict(), "runs": [vars(r) for r in retrieval]},
        "vqa": {"config": vqa_config(quick).to_dict(), "runs": [vars(r) for r in vqa]},
        "fusion_layer_seconds": layers,
        "summary": summary,
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0
