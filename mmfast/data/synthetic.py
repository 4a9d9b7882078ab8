"""A synthetic image + text + audio classification set with a controllable difficulty.

Every sample has a class ``y``. Each modality independently *shows* a class: ``y`` itself, or,
with probability ``difficulty``, a class drawn uniformly at random (possibly ``y`` again). What a
modality shows is then rendered with noise:

- ``image`` ``[3, S, S]``: the shown class's smooth random template plus Gaussian noise.
- ``text`` ``[L]`` token ids (6 to 14 words): filler words, at least one keyword of the shown
  class, and now and then an out-of-vocabulary word that becomes ``<unk>``.
- ``audio`` ``[T, n_mels]``: the log-mel spectrogram (per-utterance normalised) of two sine tones
  characteristic of the shown class plus white noise, 0.25 to 0.6 s at 8 kHz (16 to 38 frames).

So one modality alone reaches about ``1 - difficulty * (C - 1) / C`` accuracy and fusing them does
better: ``difficulty=0`` is clean, ``difficulty=1`` is chance. Everything is drawn from ``seed``:
the same seed and options give the same tensors. Samples are split 70 / 15 / 15 % per class.
The class each modality shows is kept in ``dataset.extras["shown_classes"]``.

Options:
    num_samples: total number of samples over the three splits (default 1200).
    num_classes: 2 to 8 (default 4).
    difficulty: in [0, 1] (default 0.3).
    image_size: side of the images (default 16).
    n_mels: mel bands of the audio frames (default 32).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from mmfast.data.audio import batch_log_mel_spectrogram, normalize_utterance, num_frames
from mmfast.data.dataset import MultimodalDataset
from mmfast.data.image import resize_image
from mmfast.data.info import DatasetInfo
from mmfast.data.splits import check_split, stratified_split
from mmfast.data.text import Tokenizer

NAME = "synthetic"
SAMPLE_RATE = 8000
N_FFT = 256
HOP_LENGTH = 128
MIN_SAMPLES, MAX_SAMPLES = 2000, 4800
MIN_WORDS, MAX_WORDS = 6, 14
KEYWORDS_PER_CLASS = 3
MAX_CLASSES = 8
FILLER_WORDS = (
    "the a an this that it is was has had with without very quite some many few more less "
    "and or but then so of on in at to from by near over under about again still just also"
).split()
KEYWORD_POOL = (
    "amber basalt cobalt delta ember fjord glacier harbor indigo jasper kelp lagoon meadow nectar "
    "obsidian prairie quartz river saffron tundra umber violet willow xenon yarrow zephyr"
).split()
_DEFAULTS: dict[str, Any] = {
    "num_samples": 1200,
    "num_classes": 4,
    "difficulty": 0.3,
    "image_size": 16,
    "n_mels": 32,
}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with defaults filled in; unknown or invalid ones raise ``ValueError``."""
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"{NAME}: unknown option(s) {sorted(unknown)}; expected some of {sorted(_DEFAULTS)}")
    resolved = {**_DEFAULTS, **options}
    classes = resolved["num_classes"]
    if not isinstance(classes, int) or not 2 <= classes <= MAX_CLASSES:
        raise ValueError(f"num_classes: expected an int in [2, {MAX_CLASSES}], got {classes!r}")
    samples = resolved["num_samples"]
    if not isinstance(samples, int) or samples < 3 * classes:
        raise ValueError(f"num_samples: expected an int >= 3 * num_classes = {3 * classes}, got {samples!r}")
    difficulty = resolved["difficulty"]
    if not isinstance(difficulty, (int, float)) or not 0 <= difficulty <= 1:
        raise ValueError(f"difficulty: expected a number in [0, 1], got {difficulty!r}")
    resolved["difficulty"] = float(difficulty)
    for key, low in (("image_size", 4), ("n_mels", 4)):
        if not isinstance(resolved[key], int) or resolved[key] < low:
            raise ValueError(f"{key}: expected an int >= {low}, got {resolved[key]!r}")
    return resolved


@functools.lru_cache(maxsize=1)
def tokenizer() -> Tokenizer:
    """The tokenizer of the synthetic text: its vocabulary is the generator's lexicon."""
    return Tokenizer.from_corpus([" ".join(FILLER_WORDS + KEYWORD_POOL)])


def info(**options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of the synthetic set with these options (generates nothing)."""
    resolved = check_options(options)
    side = resolved["image_size"]
    return DatasetInfo(
        name=NAME,
        modalities=("audio", "image", "text"),
        num_classes=resolved["num_classes"],
        class_names=tuple(f"class_{c}" for c in range(resolved["num_classes"])),
        image_shape=(3, side, side),
        audio_features=resolved["n_mels"],
        vocab_size=tokenizer().vocab_size,
        pad_id=Tokenizer.pad_id,
        max_audio_frames=int(num_frames(MAX_SAMPLES, N_FFT, HOP_LENGTH)),
        max_text_length=MAX_WORDS,
        options=resolved,
    )


def load(split: str, seed: int = 0, **options: Any) -> MultimodalDataset:
    """The ``split`` (``train``, ``val`` or ``test``) of the synthetic set; see the module docstring."""
    check_split(split)
    resolved = check_options(options)
    images, texts, audio, labels, shown = _generate(int(seed), tuple(sorted(resolved.items())))
    index = stratified_split(labels.numpy(), seed)[split]
    return MultimodalDataset(
        {"audio": [audio[i] for i in index], "image": images[index], "text": [texts[i] for i in index]},
        labels[index],
        info(**resolved),
        source_ids={m: torch.from_numpy(index) for m in ("audio", "image", "text")},
        extras={"shown_classes": {m: s[index] for m, s in shown.items()}},
    )


@functools.lru_cache(maxsize=4)
def _generate(seed: int, options_key: tuple) -> tuple:
    options = dict(options_key)
    count, classes, difficulty = options["num_samples"], options["num_classes"], options["difficulty"]
    world = np.random.default_rng([seed, 11])
    rng = np.random.default_rng([seed, 12])
    labels = rng.permutation(np.arange(count) % classes)
    shown = {}
    for modality in ("audio", "image", "text"):
        replaced = rng.random(count) < difficulty
        shown[modality] = np.where(replaced, rng.integers(0, classes, count), labels)

    coarse = torch.from_numpy(world.standard_normal((classes, 3, 4, 4)).astype(np.float32))
    templates = resize_image(coarse, options["image_size"], mode="bicubic")
    templates = templates / templates.flatten(1).std(dim=1).view(-1, 1, 1, 1)
    noise = rng.standard_normal((count, 3, options["image_size"], options["image_size"])).astype(np.float32)
    images = templates[torch.from_numpy(shown["image"])] + 0.8 * torch.from_numpy(noise)

    keywords = world.permutation(KEYWORD_POOL)[: classes * KEYWORDS_PER_CLASS].reshape(classes, -1)
    vocabulary = tokenizer()
    texts = []
    for c in shown["text"]:
        words = list(rng.choice(FILLER_WORDS, size=rng.integers(MIN_WORDS, MAX_WORDS + 1)))
        for position in range(len(words)):
            if rng.random() < 0.25:
                words[position] = rng.choice(keywords[c])
            elif rng.random() < 0.05:
                words[position] = "".join(rng.choice(list("qxzjk"), size=5))
        words[rng.integers(len(words))] = rng.choice(keywords[c])
        texts.append(vocabulary.encode(" ".join(words)))

    tones = world.permutation(np.geomspace(250.0, 3500.0, 2 * MAX_CLASSES))[: 2 * classes].reshape(classes, 2)
    waveforms = []
    for c in shown["audio"]:
        length = int(rng.integers(MIN_SAMPLES, MAX_SAMPLES + 1))
        t = np.arange(length) / SAMPLE_RATE
        phases = rng.uniform(0, 2 * np.pi, 2)
        wave = sum(0.5 * np.sin(2 * np.pi * f * t + p) for f, p in zip(tones[c], phases))
        waveforms.append(torch.from_numpy((wave + 0.5 * rng.standard_normal(length)).astype(np.float32)))
    features, frames = batch_log_mel_spectrogram(
        waveforms, SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=options["n_mels"]
    )
    features = normalize_utterance(features, frames)
    audio = [f[:n].clone() for f, n in zip(features, frames.tolist())]
    shown_t = {m: torch.from_numpy(s) for m, s in shown.items()}
    return images.contiguous(), texts, audio, torch.from_numpy(labels.astype(np.int64)), shown_t
