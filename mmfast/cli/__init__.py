"""The ``mmfast`` command line: ``train``, ``evaluate``, ``demo``, ``bench`` and ``info``."""

from mmfast.cli.main import main

__all__ = ["main"]
