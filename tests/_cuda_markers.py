"""A pytest plugin for tests/test_gpu_check.py: with ``--list-unmarked-cuda`` it prints, at
collection, every test that is skipped without a CUDA device (a ``skipif`` whose reason says it
needs CUDA or a GPU) but lacks the ``cuda`` marker, which `make gpu-check` selects the CUDA tests by.

    python -m pytest --collect-only -q -p tests._cuda_markers --list-unmarked-cuda tests
"""

from __future__ import annotations

import re

import pytest

# "needs a CUDA device", "the GPU section needs a CUDA device", "requires a GPU", ...
CUDA_REASON = re.compile(r"\b(needs?|requires?)\b.*\b(cuda|gpu)\b", flags=re.IGNORECASE)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--list-unmarked-cuda", action="store_true", help="print tests needing CUDA without the marker"
    )


def unmarked(items: list[pytest.Item]) -> list[str]:
    found = []
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            continue
        reasons = [str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif")]
        if any(CUDA_REASON.search(reason) for reason in reasons):
            found.append(item.nodeid)
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--list-unmarked-cuda"):
        for nodeid in unmarked(items):
            print(f"UNMARKED-CUDA {nodeid}")
