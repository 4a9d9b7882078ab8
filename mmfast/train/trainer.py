"""`Trainer`: trains, evaluates and checkpoints a multimodal classifier, a VQA model or an image-text
dual encoder."""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from mmfast.data import collate, load_dataset
from mmfast.train.build import build_model
from mmfast.train.checkpoint import (
    CheckpointError,
    checkpoint_config,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mmfast.train.config import TrainConfig
from mmfast.train.distributed import DistributedContext
from mmfast.train.evaluation import evaluate_model, evaluate_vqa
from mmfast.train.metrics import METRIC_NAMES
from mmfast.train.records import append_jsonl, plot_curves, write_json
from mmfast.train.retrieval import RETRIEVAL_METRIC_NAMES, SELECTION_METRIC, evaluate_retrieval
from mmfast.train.runtime import resolve_device, seed_everything
from mmfast.train.schedule import warmup_cosine

# Steps left out of the mean step time: the first ones pay for GEMM tuning and allocations.
TIMING_WARMUP_STEPS = 5

# What `Trainer.state_dict` saves, all of which `Trainer.resume` needs.
STATE_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "epoch",
    "best_accuracy",
    "best_state",
    "epochs_without_improvement",
    "history",
    "step_seconds",
    "rng",
    "loader_rng",
    "config",
)


class Trainer:
    """Trains a `MultimodalClassifier` (or, with ``config.task == "retrieval"``, a `DualEncoder`) as
    `config` says, writing to `out_dir` (when given): ``last.pt`` / ``best.pt`` checkpoints,
    ``log.jsonl`` (one record per epoch), ``curves.png`` and, at the end, ``metrics.json`` with the
    test metrics of the best epoch under ``"test"``.

    AdamW with a warm-up + cosine schedule stepped per optimizer step, cross-entropy, gradient
    clipping, optional bfloat16 autocast, evaluation on the validation split every epoch, early
    stopping on validation accuracy. For retrieval the loss is the model's own (CLIP's or SigLIP's,
    over the pairs of each process's batch), the metrics are those of
    :func:`~mmfast.train.retrieval.evaluate_retrieval` (recall@K and median rank both ways over the
    whole split), and the validation metric that selects the best epoch and stops early is
    ``mean_recall@1`` (``best_accuracy`` then holds it). A VQA run (``config.task == "vqa"``) trains
    like a classifier over the answers; its metrics add ``accuracy_by_type`` and ``count``. Under
    `torchrun` each process trains on
    its shard of every epoch (`DistributedSampler`) and gradients are averaged
    (`DistributedDataParallel`); the first process writes the files. The data order depends only
    on the seed and the epoch, and checkpoints carry every RNG state, so a resumed run ends with
    the same weights as one that was never interrupted.
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path | None = None, progress: bool = True) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dist = DistributedContext.from_environment(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.retrieval = config.task == "retrieval"
        # The metrics logged per epoch (as val_<name>) and the one that selects the best epoch.
        self.metric_names: tuple[str, ...] = RETRIEVAL_METRIC_NAMES if self.retrieval else METRIC_NAMES
        self.selection_metric = SELECTION_METRIC if self.retrieval else "accuracy"
        self.progress = progress and self.dist.is_main
        seed_everything(config.seed)
        # The train loader draws its per-epoch base seed from its own generator, saved in checkpoints,
        # so evaluation and user code touching the global RNG cannot shift the training data stream.
        self.loader_generator = torch.Generator().manual_seed(config.seed)
        options = dict(config.dataset_options)
        self.splits: dict[str, Dataset] = {
            split: load_dataset(config.dataset, split, seed=config.seed, **options)
            for split in ("train", "val", "test")
        }
        self.model = build_model(config).to(self.device)
        self._wrapped: nn.Module = self.model
        if self.dist.enabled:
            if self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self._wrapped = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        # The fused AdamW (one kernel over every parameter, on CPU and CUDA) instead of the default
        # loop of a dozen small ops per parameter: 0.3 ms instead of 1.4 ms a step for the
        # Sort-of-CLEVR film model's 43 parameters (AMD EPYC Zen 4); the same update up to rounding.
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True
        )
        self.steps_per_epoch = math.ceil(len(self._sampler(0)) / config.batch_size)
        self.scheduler = warmup_cosine(
            self.optimizer, self.steps_per_epoch * config.epochs, config.warmup_ratio
        )
        self.epoch = 0
        self.best_accuracy = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epochs_without_improvement = 0
        self.history: list[dict[str, Any]] = []
        self.step_seconds: list[float] = []

    # -- data ---------------------------------------------------------------------------------
    def _sampler(self, epoch: int) -> DistributedSampler:
        # Also for one process: the order is then a function of (seed, epoch) only.
        sampler = DistributedSampler(
            self.splits["train"],
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.config.seed,
        )
        sampler.set_epoch(epoch)
        return sampler

    def _train_loader(self, epoch: int) -> DataLoader:
        return DataLoader(
            self.splits["train"],
            batch_size=self.config.batch_size,
            sampler=self._sampler(epoch),
            collate_fn=collate,
            generator=self.loader_generator,
        )

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _autocast(self):
        if self.config.autocast == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # -- steps --------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimizer step on `batch` (this process's share of it under torchrun); the loss."""
        self._wrapped.train()
        batch = self._to_device(batch)
        labels = batch.pop("label")
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            output = self._wrapped(batch)
        # A dual encoder returns its contrastive loss; a classifier its logits.
        loss = output.float() if self.retrieval else F.cross_entropy(output.float(), labels)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def evaluate(self, split: str = "val") -> dict[str, Any]:
        """Loss and metrics (see `classification_metrics`, or for retrieval `evaluate_retrieval`,
        whose loss is over batches of ``config.batch_size`` pairs, or for VQA `evaluate_vqa`, which
        adds the accuracy per question type) of the current model on `split`;
        under `torchrun` each process evaluates its shard and all get the metrics of the whole split."""
        if self.retrieval:
            return evaluate_retrieval(
                self.model,
                self.splits[split],
                self.device,
                self._autocast,
                dist=self.dist,
                loss_batch_size=self.config.batch_size,
            )
        if self.config.task == "vqa":
            return evaluate_vqa(self.model, self.splits[split], self.device, self._autocast, dist=self.dist)
        return evaluate_model(self.model, self.splits[split], self.device, self._autocast, dist=self.dist)

    def train_epoch(self) -> float:
        """One pass over this process's shard of the training split; the mean training loss over
        all processes' samples."""
        total, count = 0.0, 0
        loader = self._train_loader(self.epoch)
        bar = tqdm(
            loader,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            disable=not self.progress,
            leave=False,
        )
        for batch in bar:
            size = len(batch["label"])
            start = time.perf_counter()
            loss = self.train_step(batch)
            elapsed = time.perf_counter() - start
            self.step_seconds.append(elapsed)
            total += loss * size
            count += size
            bar.set_postfix(loss=f"{loss:.4f}", samples_per_s=f"{size * self.dist.world_size / elapsed:.0f}")
        return self.dist.global_mean(total, count)

    @property
    def seconds_per_step(self) -> float:
        """Mean wall time of a training step, without the first `TIMING_WARMUP_STEPS`."""
        timed = self.step_seconds[TIMING_WARMUP_STEPS:] or self.step_seconds
        return float(np.mean(timed)) if timed else math.nan

    # -- the run ------------------------------------------------------------------------------
    def fit(self, max_epochs: int | None = None) -> dict[str, Any]:
        """Trains from the current epoch to `config.epochs` (or `max_epochs` more epochs, to stop
        early as an interruption would), stopping early when the validation metric stalls. Returns
        the final metrics (also written to ``metrics.json``) once the run is complete."""
        stop_at = (
            self.config.epochs if max_epochs is None else min(self.config.epochs, self.epoch + max_epochs)
        )
        stopped_early = False
        while self.epoch < stop_at and not stopped_early:
            train_loss = self.train_epoch()
            val = self.evaluate("val")
            self.epoch += 1
            improved = val[self.selection_metric] > self.best_accuracy
            if improved:
                self.best_accuracy = val[self.selection_metric]
                self.best_state = copy.deepcopy(self.model.state_dict())
                self.epochs_without_improvement = 0
            else:
                self.epochs_without_improvement += 1
            record = {
                "epoch": self.epoch,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                **{f"val_{name}": val[name] for name in self.metric_names},
                "lr": self.scheduler.get_last_lr()[0],
                "seconds_per_step": self.seconds_per_step,
            }
            self.history.append(record)
            stopped_early = 0 < self.config.patience <= self.epochs_without_improvement
            self._write_epoch(record, improved)
        if self.epoch < self.config.epochs and not stopped_early:
            return {}
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Test metrics of the best epoch's weights; writes ``metrics.json`` and the plot."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        results = {
            "test": self.evaluate("test"),
            f"best_val_{self.selection_metric}": self.best_accuracy,
            "epochs_trained": self.epoch,
            "seconds_per_step": self.seconds_per_step,
            "config": self.config.to_dict(),
        }
        if self.out_dir is not None and self.dist.is_main:
            write_json(self.out_dir / "metrics.json", results)
        self.dist.barrier()
        return results

    def _write_epoch(self, record: dict[str, Any], improved: bool) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.out_dir / "log.jsonl", record)
        plot_curves(self.history, self.out_dir / "curves.png", metric=self.selection_metric)
        state = self.state_dict()
        save_checkpoint(self.out_dir / "last.pt", state)
        if improved:
            save_checkpoint(self.out_dir / "best.pt", state)

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best_accuracy": self.best_accuracy,
            "best_state": self.best_state,
            "epochs_without_improvement": self.epochs_without_improvement,
            "history": self.history,
            "step_seconds": self.step_seconds,
            "rng": rng_state(),
            "loader_rng": self.loader_generator.get_state(),
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.best_accuracy = state["best_accuracy"]
        self.best_state = state["best_state"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        self.history = list(state["history"])
        self.step_seconds = list(state["step_seconds"])
        set_rng_state(state["rng"])
        self.loader_generator.set_state(state["loader_rng"])

    @classmethod
    def resume(
        cls, checkpoint: str | Path, out_dir: str | Path | None = None, progress: bool = True
    ) -> Trainer:
        """The run saved in `checkpoint` (its config, weights, optimizer, schedule, RNG states),
        ready to `fit` its remaining epochs; writes to `out_dir` (default: the checkpoint's folder).

        Raises:
            FileNotFoundError: no file at `checkpoint`.
            CheckpointError: `checkpoint` is not a readable checkpoint of a `Trainer`.
        """
        state = load_checkpoint(checkpoint, required=STATE_KEYS)
        config = checkpoint_config(state, checkpoint)
        trainer = cls(config, out_dir if out_dir is not None else Path(checkpoint).parent, progress)
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            # A checkpoint of another model, optimizer or torch version than its config describes.
            raise CheckpointError.of(checkpoint, "does not fit the run of its config", error) from error
        return trainer
