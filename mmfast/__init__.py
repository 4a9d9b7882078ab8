"""mmfast: fused PyTorch kernels and drop-in layers for multimodal models."""

from __future__ import annotations

from mmfast import _backend, ops
from mmfast._info import backend_info

__version__ = "0.1.0"

__all__ = ["__version__", "backend_info", "nn", "ops"]


def __getattr__(name: str):
    # Layers import lazily so that `import mmfast` stays cheap for users of the ops alone.
    if name == "nn":
        import importlib

        return importlib.import_module("mmfast.nn")
    raise AttributeError(f"module 'mmfast' has no attribute {name!r}")


del _backend
