"""``mmfast train`` and ``mmfast evaluate``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from mmfast.train.config import TrainConfig
from mmfast.train.evaluation import evaluate_checkpoint
from mmfast.train.metrics import METRIC_NAMES
from mmfast.train.retrieval import RETRIEVAL_METRIC_NAMES
from mmfast.train.trainer import Trainer

# CLI flag (argparse dest) -> dataset option name.
DATASET_OPTIONS = (
    "image_size",
    "corrupt_images",
    "corruption_strength",
    "corrupt_audio",
    "audio_corruption_strength",
    "num_samples",
    "num_classes",
    "difficulty",
    "n_mels",
    "num_train",
    "num_val",
    "num_test",
    "flips",
)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The training config of ``mmfast train``'s arguments: every field from the option of the same
    name (the parser gives each the field's default), dataset options only when given; the model
    settings are the dataset's defaults (no option)."""
    options = {name: getattr(args, name) for name in DATASET_OPTIONS if getattr(args, name) is not None}
    not_options = ("dataset_options", "model_settings")
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in not_options]
    return TrainConfig(dataset_options=options, **{name: getattr(args, name) for name in fields})


def format_metrics(metrics: dict[str, Any]) -> str:
    """The scalar metrics (a classifier's; a VQA run's, its accuracy per question type and number of
    questions; or a retrieval run's and its gallery size), one per line, aligned."""
    vqa = "accuracy_by_type" in metrics
    retrieval = "count" in metrics and not vqa
    names = [*(RETRIEVAL_METRIC_NAMES if retrieval else METRIC_NAMES), "loss"]
    lines = []
    for name in names:
        value = metrics.get(name)
        if isinstance(value, float):
            text = "n/a" if math.isnan(value) else f"{value:.1f}" if "median" in name else f"{value:.4f}"
            lines.append(f"  {name:<16} {text}")
    if vqa:
        for kind, value in metrics["accuracy_by_type"].items():
            lines.append(f"  {'accuracy ' + kind:<16} {value:.4f}")
        for kind, value in metrics.get("accuracy_by_subtype", {}).items():
            lines.append(f"  {'  ' + kind:<16} {value:.4f}")
        lines.append(f"  {'count':<16} {metrics['count']} (questions)")
    if retrieval:
        lines.append(f"  {'count':<16} {metrics['count']} (gallery pairs)")
    return "\n".join(lines)


def run_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.resume:
        checkpoint = out / "last.pt"
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}; train into --out {out} first")
        trainer = Trainer.resume(checkpoint, out, progress=args.progress)
    else:
        trainer = Trainer(config_from_args(args), out, progress=args.progress)
    try:
        result = trainer.fit()
    finally:
        trainer.dist.shutdown()
    if not trainer.dist.is_main:
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in result["test"].items() if k != "confusion_matrix"}, indent=2))
    else:
        config = trainer.config
        model = (
            f"retrieval, {config.loss} loss"
            if config.task == "retrieval"
            else f"{'vqa, ' if config.task == 'vqa' else ''}{config.fusion}"
            f"{' (reference)' if config.reference else ''}"
            f"{' on ' + ','.join(config.modalities) + ' only' if config.modalities else ''}"
        )
        selection = trainer.selection_metric
        print(
            f"{config.dataset} {model}, {result['epochs_trained']} epochs, best val "
            f"{selection.replace('_', ' ')} {result[f'best_val_{selection}']:.4f}, "
            f"{result['seconds_per_step'] * 1e3:.1f} ms per step"
        )
        print("test metrics:")
        print(format_metrics(result["test"]))
        print(f"wrote {out / 'metrics.json'}, log.jsonl, curves.png, last.pt, best.pt")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate_checkpoint(
        args.checkpoint, split=args.split, device=args.device, data_seed=args.data_seed
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        fresh = f", generated with seed {args.data_seed}" if args.data_seed is not None else ""
        print(f"{args.checkpoint} (epoch {metrics['epoch']}), {args.split} split{fresh}:")
        print(format_metrics(metrics))
    return 0
