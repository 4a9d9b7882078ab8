"""Deprecated: the references now live with their ops (``mmfast.ops.<op>_reference``). This
module keeps the old import path working for one release."""

from __future__ import annotations

import warnings


def __getattr__(name: str):
    import mmfast.ops

    if name.endswith("_reference") and hasattr(mmfast.ops, name):
        warnings.warn(
            f"mmfast.ops.fusion_reference.{name} is deprecated; import it from mmfast.ops",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(mmfast.ops, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
