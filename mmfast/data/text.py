"""Word-level tokenizer: a vocabulary built from a corpus, ``<pad>`` / ``<unk>``, lower-casing,
encoding to int64 ids and padding to a batch with lengths."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from mmfast.data.padding import pad_sequences

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
# Words (letters, digits, underscore, apostrophes inside words) or single punctuation marks.
_TOKEN_PATTERN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


class Tokenizer:
    """Word-level tokenizer with a fixed vocabulary; ``<pad>`` has id 0 and ``<unk>`` id 1.

    Build it from a training corpus with :meth:`from_corpus`; words it has not seen map to ``<unk>``.

    Example:
        >>> tok = Tokenizer.from_corpus(["the cat sat", "the dog"])
        >>> ids, lengths = tok.encode_batch(["The cat", "a dog sat"])  # [2, 3], [2, 3]
    """

    pad_id = 0
    unk_id = 1

    def __init__(self, words: Sequence[str], lowercase: bool = True) -> None:
        """``words``: the vocabulary after the two special tokens, in id order (ids 2, 3, ...)."""
        vocabulary = [PAD_TOKEN, UNK_TOKEN, *words]
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("words: expected distinct words, not the special tokens <pad> / <unk>")
        self.lowercase = bool(lowercase)
        self.id_to_word: list[str] = vocabulary
        self.word_to_id: dict[str, int] = {word: i for i, word in enumerate(vocabulary)}

    @classmethod
    def from_corpus(
        cls,
        corpus: Iterable[str],
        min_freq: int = 1,
        max_size: int | None = None,
        lowercase: bool = True,
    ) -> Tokenizer:
        """A vocabulary of the words seen at least ``min_freq`` times, the most frequent first
        (ties alphabetical, so the ids do not depend on the corpus order), at most ``max_size``
        words besides the special tokens."""
        if min_freq < 1:
            raise ValueError(f"min_freq: expected an int >= 1, got {min_freq}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size: expected a non-negative int or None, got {max_size}")
        counts: Counter[str] = Counter()
        for text in corpus:
            counts.update(split_words(text, lowercase))
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in (PAD_TOKEN, UNK_TOKEN)),
            key=lambda w: (-counts[w], w),
        )
        return cls(words[:max_size] if max_size is not None else words, lowercase=lowercase)

    def __len__(self) -> int:
        return len(self.id_to_word)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the embedding table size)."""
        return len(self.id_to_word)

    def tokenize(self, text: str) -> list[str]:
        """The words of ``text`` (lower-cased if the tokenizer is)."""
        return split_words(text, self.lowercase)

    def encode(self, text: str, max_length: int | None = None, truncate: bool = False) -> torch.Tensor:
        """int64 ids of ``text``; longer than ``max_length`` is an error unless ``truncate``."""
        ids = [self.word_to_id.get(word, self.unk_id) for word in self.tokenize(text)]
        if max_length is not None and len(ids) > max_length:
            if not truncate:
                raise ValueError(
                    f"text: {len(ids)} tokens > max_length={max_length}; pass truncate=True to cut it"
                )
            ids = ids[:max_length]
        return torch.tensor(ids, dtype=torch.int64)

    def encode_batch(
        self, texts: Sequence[str], max_length: int | None = None, truncate: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode and pad ``texts`` with ``<pad>``; returns ids ``[B, L]`` and lengths ``[B]``."""
        encoded = [self.encode(text, max_length, truncate) for text in texts]
        return pad_sequences(encoded, padding_value=self.pad_id, max_length=max_length, truncate=truncate)

    def decode(self, ids: torch.Tensor | Sequence[int], skip_special: bool = True) -> str:
        """The words of ``ids`` joined by spaces; ``<pad>`` (and ``<unk>`` unless kept) dropped."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        words = []
        for i in values:
            if not 0 <= i < len(self.id_to_word):
                raise ValueError(f"ids: {i} is outside the vocabulary [0, {len(self.id_to_word)})")
            if skip_special and i in (self.pad_id, self.unk_id):
                continue
            words.append(self.id_to_word[i])
        return " ".join(words)

    def state_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable) from which :meth:`from_state_dict` rebuilds the tokenizer."""
        return {"words": self.id_to_word[2:], "lowercase": self.lowercase}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Tokenizer:
        return cls(list(state["words"]), lowercase=bool(state["lowercase"]))


def split_words(text: str, lowercase: bool = True) -> list[str]:
    """Words and punctuation marks of ``text``."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    return _TOKEN_PATTERN.findall(text.lower() if lowercase else text)
