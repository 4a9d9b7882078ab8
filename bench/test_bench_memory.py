"""Memory of every op in a small training graph, mmfast against eager (bench/held_memory.py): what
autograd holds after the forward and the peak of a forward + backward step, each implementation
measured in a fresh process. float32 runs in the quick set, bfloat16 in the full one.

The assertions are the structural facts the README states; the figures go to the report."""

from __future__ import annotations

import pytest

from bench.concat_linear_cases import SHAPES as CONCAT_SHAPES
from bench.conftest import HELD_MEMORY
from bench.held_memory import CASES, CONCAT_SHAPE, DTYPES, ENCODER_ENDINGS, measure


def _cases():
    for case in CASES:
        for dtype in DTYPES:
            for ending in ENCODER_ENDINGS:
                marks = [pytest.mark.quick] if dtype == "float32" else []
                yield pytest.param(case, ending, dtype, marks=marks, id=f"{case.op}-{ending}-{dtype}")


@pytest.mark.parametrize(("case", "ending", "dtype"), list(_cases()))
def test_memory_in_a_training_graph(case, ending, dtype):
    row = measure(case, ending, dtype)
    HELD_MEMORY.append(row)
    fused, eager = row["mmfast_held"], row["eager_held"]
    item = DTYPES[dtype].itemsize
    if case.op == "concat_linear":
        # Eager keeps the concatenation, mmfast the inputs: the same bytes unless something else
        # (here the ReLU) keeps the inputs anyway, and then mmfast saves exactly the concatenation.
        concatenation = case.batch * sum(CONCAT_SHAPES[CONCAT_SHAPE][0]) * item
        assert eager - fused == (concatenation if ending == "relu" else 0)
    elif case.op == "film":
        # Both keep the feature map and the condition; mmfast adds its [B, 2C] modulation.
        assert fused <= eager + case.batch * 2 * 64 * item
    else:
        # The stack of inputs / projections, the B x B logits: eager keeps them, mmfast does not.
        assert fused < eager
    # What stays allocated between steps is the engine's scratch buffers, nothing else.
    assert row["mmfast_kept"] == row["mmfast_scratch"]
    assert row["eager_kept"] == row["eager_scratch"] == 0
