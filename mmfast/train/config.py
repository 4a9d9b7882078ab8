"""`TrainConfig`: everything that defines a training run, saved in its checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

AUTOCAST_CHOICES = ("none", "bf16")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
TASK_CHOICES = ("classification", "retrieval", "vqa")
# The number of epochs of a task when `TrainConfig.epochs` is not given: easy-VQA's 35k training
# questions (9 or 10 per image) take 4 epochs, each 544 steps at batch 64 (2 leave the shapes unlearnt).
TASK_EPOCHS = {"classification": 10, "retrieval": 10, "vqa": 4}
# Datasets whose default number of epochs is not their task's: Sort-of-CLEVR's 192k training
# questions (20 per image) at batch 64 are 3,000 steps an epoch; the film model learns the
# non-relational questions in 2-3 epochs, the count questions in the 3rd to 6th, and closest /
# furthest still climb after that; 10 epochs took 28.8 to 33.9 minutes on a 2-core AMD EPYC Zen 4 VM
# (the task allows 30; the README's Sort-of-CLEVR section says which run took what).
DATASET_EPOCHS = {"sort-of-clevr": 10}
# AdamW's peak learning rate when `TrainConfig.lr` is not given, and the datasets whose own differs:
# on Sort-of-CLEVR the film model stays on the global-counts plateau at 3e-3 and leaves it at 1e-3.
DEFAULT_LR = 3e-3
DATASET_LR = {"sort-of-clevr": 1e-3}
# The datasets with questions, answers and question types that task="vqa" trains on.
VQA_DATASETS = ("easy-vqa", "sort-of-clevr")
TEXT_ENCODER_CHOICES = ("lstm", "transformer")
LOSS_CHOICES = ("clip", "siglip")


@dataclass
class TrainConfig:
    """A training run of a multimodal classifier, or of a dual encoder for image-text retrieval.

    Attributes:
        task: ``"classification"`` (a :class:`~mmfast.models.MultimodalClassifier`, cross-entropy)
            or ``"retrieval"`` (a :class:`~mmfast.models.DualEncoder` of the image and the text,
            contrastive loss, recall@K over the whole gallery; ``fusion``, ``modalities``,
            ``reference``, ``dropout`` and ``modality_dropout`` do not apply) or ``"vqa"`` (visual
            question answering: a :class:`~mmfast.models.VQAModel` of the image and the question,
            cross-entropy over the answers, accuracy per question type; ``modality_dropout`` does
            not apply).
        dataset: ``"av-digits"``, ``"synthetic"``, ``"scenes"`` (retrieval needs image and text) or
            ``"easy-vqa"`` (for ``task="vqa"``).
        dataset_options: options of the dataset (see :func:`mmfast.data.load_dataset`).
        model_settings: ``task="vqa"``: settings of the model (the keys of
            :data:`mmfast.models.vqa.VQA_MODEL_DEFAULTS`) in place of the dataset's defaults
            (:func:`mmfast.models.vqa.vqa_model_settings`); the config holds every setting,
            resolved, so that a checkpoint rebuilds the model it was trained with after the
            defaults change. Empty for the other tasks.
        fusion: ``"concat"``, ``"gated"``, ``"attention"`` or ``"transformer"`` (and, for
            ``task="vqa"``, ``"film"``).
        modalities: the modalities to train on (default: all of the dataset's).
        reference: train the plain-PyTorch twin of the model instead of the fused one.
        hidden: encoder output size and fusion width.
        text_encoder: ``"lstm"`` or ``"transformer"``, the text (question) encoder.
        loss: retrieval: ``"clip"`` (symmetric InfoNCE) or ``"siglip"`` (pairwise sigmoid).
        embed_dim: retrieval: size of the joint image-text embedding.
        dropout: dropout before the head (and in the transformer fusion).
        modality_dropout: train-time probability of dropping each modality of a sample.
        epochs: maximum number of epochs (None: the task's default, :data:`TASK_EPOCHS`: 10, for
            ``"vqa"`` 4); the config holds the resolved number.
        batch_size: samples per optimizer step (per process under torchrun).
        lr: peak learning rate of AdamW (None: :data:`DEFAULT_LR`, or the dataset's own in
            :data:`DATASET_LR`); the config holds the resolved rate.
        weight_decay: AdamW's decoupled weight decay.
        warmup_ratio: fraction of the steps spent warming the learning rate up linearly, before
            the cosine decay to zero.
        grad_clip: maximum global gradient norm (0 disables clipping).
        patience: stop after this many epochs without a better validation accuracy (retrieval: mean
            recall@1 of both directions) (0 disables).
        autocast: ``"none"`` or ``"bf16"`` (bfloat16 autocast of the forward, on CPU and CUDA).
        seed: seeds the parameters, the data order, dropout and the dataset split.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
    """

    task: str = "classification"
    dataset: str = "av-digits"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    model_settings: dict[str, Any] = field(default_factory=dict)
    fusion: str = "concat"
    modalities: list[str] | None = None
    reference: bool = False
    hidden: int = 128
    text_encoder: str = "lstm"
    loss: str = "clip"
    embed_dim: int = 64
    dropout: float = 0.1
    modality_dropout: float = 0.0
    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 1e-2
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    patience: int = 5
    autocast: str = "none"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.task not in TASK_CHOICES:
            raise ValueError(f"task: expected one of {', '.join(TASK_CHOICES)}, got {self.task!r}")
        if self.epochs is None:
            self.epochs = DATASET_EPOCHS.get(self.dataset, TASK_EPOCHS[self.task])
        if self.lr is None:
            self.lr = DATASET_LR.get(self.dataset, DEFAULT_LR)
        positive = {
            "hidden": self.hidden,
            "embed_dim": self.embed_dim,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: expected a fraction in [0, 1), got {self.warmup_ratio!r}")
        if self.grad_clip < 0 or self.patience < 0 or self.weight_decay < 0:
            raise ValueError("grad_clip, patience and weight_decay must be non-negative")
        if self.autocast not in AUTOCAST_CHOICES:
            raise ValueError(
                f"autocast: expected one of {', '.join(AUTOCAST_CHOICES)}, got {self.autocast!r}"
            )
        if self.task == "vqa" and self.dataset not in VQA_DATASETS:
            raise ValueError(f"dataset: task='vqa' trains on {', '.join(VQA_DATASETS)}, got {self.dataset!r}")
        if self.task == "vqa":
            # Imported here: the command line reads this module for its defaults without torch.
            from mmfast.models.vqa import vqa_model_settings

            self.model_settings = vqa_model_settings(self.dataset, **self.model_settings)
        elif self.model_settings:
            raise ValueError(f"model_settings: only task='vqa' has model settings, got {self.model_settings}")
        if self.text_encoder not in TEXT_ENCODER_CHOICES:
            raise ValueError(
                f"text_encoder: expected one of {', '.join(TEXT_ENCODER_CHOICES)}, got {self.text_encoder!r}"
            )
        if self.loss not in LOSS_CHOICES:
            raise ValueError(f"loss: expected one of {', '.join(LOSS_CHOICES)}, got {self.loss!r}")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"device: expected one of {', '.join(DEVICE_CHOICES)}, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (what checkpoints and ``metrics.json`` store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config of :meth:`to_dict`'s values; unknown fields are an error, missing ones default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config: unknown field(s) {unknown}")
        return cls(**values)


def config_defaults() -> dict[str, Any]:
    """Each field's default value, by name (a fresh copy of those built by a factory). The command
    line takes its defaults from here, so that each is written once, in :class:`TrainConfig`."""
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(TrainConfig)
    }
