"""Data for multimodal models: preprocessing (images, text, audio), padding and batching, datasets.

A sample is a ``dict``: modality name -> tensor (``"image"`` ``[C, H, W]`` float, ``"audio"``
``[T, F]`` float frames, ``"text"`` ``[L]`` int64 token ids) and ``"label"`` (int64 scalar).
:func:`collate` pads the sequence modalities of a list of samples and adds ``"<modality>_lengths"``.
"""

from mmfast.data.audio import (
    batch_log_mel_spectrogram,
    log_mel_spectrogram,
    mel_filterbank,
    normalize_utterance,
    num_frames,
)
from mmfast.data.collate import collate
from mmfast.data.dataset import MultimodalDataset
from mmfast.data.image import channel_stats, normalize_image, resize_image, to_unit_range
from mmfast.data.info import DatasetInfo
from mmfast.data.padding import lengths_to_padding_mask, lengths_to_valid_mask, pad_sequences
from mmfast.data.registry import DATASET_NAMES, dataset_info, load_dataset
from mmfast.data.text import Tokenizer

__all__ = [
    "DATASET_NAMES",
    "DatasetInfo",
    "batch_log_mel_spectrogram",
    "MultimodalDataset",
    "Tokenizer",
    "channel_stats",
    "collate",
    "dataset_info",
    "lengths_to_padding_mask",
    "lengths_to_valid_mask",
    "load_dataset",
    "log_mel_spectrogram",
    "mel_filterbank",
    "normalize_image",
    "normalize_utterance",
    "num_frames",
    "pad_sequences",
    "resize_image",
    "to_unit_range",
]
