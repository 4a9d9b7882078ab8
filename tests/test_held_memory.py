"""The memory figures of mmfast.train.memory (the demo's and bench/held_memory.py's) count what they
say, on graphs whose allocations are known; and the fused ops' backward allocates no zero gradient
for outputs that never reached the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import mmfast.ops as ops
from mmfast.train.memory import saved_tensor_bytes, step_memory

N = 1 << 16  # 256 KiB of float32


def test_held_bytes_counts_each_saved_storage_once_and_not_what_the_caller_holds():
    x = torch.randn(N, requires_grad=True)

    def forward():
        y = x.exp()  # exp saves its output
        return y * y.t()  # mul saves y twice (y and a view of it)

    held, out = saved_tensor_bytes(forward, [x])
    assert held == N * 4
    assert out.shape == (N,)
    # x.sin() saves its input x, which the caller holds: nothing is counted.
    assert saved_tensor_bytes(lambda: x.sin(), [x])[0] == 0


def test_step_memory_peak_and_kept_of_a_known_step():
    weight = torch.randn(N, requires_grad=True)
    raw = torch.randn(N)
    figures = step_memory(lambda: (raw * weight).sum().backward(), [weight], warmup_steps=1)
    # The product [N] lives until the sum is taken; weight.grad [N] is allocated in the backward,
    # after the product is gone: the peak is one [N] tensor (plus a few scalars).
    assert N * 4 <= figures["peak"] <= N * 4 + 4096
    # Nothing but the gradient outlives the step.
    assert abs(figures["kept"]) <= 4096
    assert torch.equal(weight.grad, raw)


def _fused_calls():
    torch.manual_seed(0)
    x = [torch.randn(64, 32, requires_grad=True), torch.randn(64, 16, requires_grad=True)]
    weight, bias = torch.randn(24, 48, requires_grad=True), torch.randn(24, requires_grad=True)
    yield "concat_linear", lambda: ops.concat_linear(x, weight, bias, "gelu")
    gate = torch.randn(32, 64, requires_grad=True)
    yield "gated_fusion", lambda: ops.gated_fusion([x[0], torch.randn(64, 32)], gate, None)
    features, condition = torch.randn(8, 16, 4, 4, requires_grad=True), torch.randn(8, 12, requires_grad=True)
    film_weight = torch.randn(32, 12, requires_grad=True)
    yield "film", lambda: ops.film(features, condition, film_weight, None)
    # clip_loss: one logit tile (the forward keeps the gradients: no backward op runs) and several
    # (the backward op recomputes the tiles).
    image, text = (F.normalize(torch.randn(16, 8), dim=-1).requires_grad_() for _ in range(2))
    yield "clip_loss", lambda: ops.clip_loss(image, text, 10.0)
    image_many, text_many = (F.normalize(torch.randn(1030, 8), dim=-1).requires_grad_() for _ in range(2))
    yield "clip_loss", lambda: ops.clip_loss(image_many, text_many, 10.0)
    projections = [torch.randn(24, 32, requires_grad=True), torch.randn(24, 16, requires_grad=True)]
    score = torch.randn(2, 48, requires_grad=True)
    yield "attention_fusion", lambda: ops.attention_fusion(x, projections, None, score)


def prof_forward(call) -> list:
    """The profiler events of one call."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    return prof.events()


@pytest.mark.parametrize(("op", "call"), list(_fused_calls()), ids=lambda v: v if isinstance(v, str) else "")
def test_backward_allocates_no_zero_gradient_for_unused_outputs(op, call):
    """The ops' second outputs (the saved preactivation, the gates, the modulation, the log-sum-exps,
    the attention weights) never reach the loss; a zero tensor for their gradient would be
    allocated and written each step."""
    out = call()
    loss = out.sum() if out.dim() else out
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss.backward()
    events = prof.events()
    backward_ran = any(event.name == f"mmfast::{op}_backward" for event in events)
    # The losses' CPU forward with gradients leaves the backward only a scaling.
    with_grads = f"mmfast::{op}_forward_with_grads"
    assert backward_ran or any(event.name == with_grads for event in prof_forward(call))
    # Zeros the backward kernel itself writes (an accumulator) are its business; a zero tensor made
    # by the autograd node outside it is the materialised gradient of an unused output.
    outside = []
    for event in events:
        if event.name not in ("aten::zeros", "aten::zeros_like"):
            continue
        parents, parent = [], event.cpu_parent
        while parent is not None:
            parents.append(parent.name)
            parent = parent.cpu_parent
        if f"mmfast::{op}_backward" not in parents:
            outside.append(" <- ".join([event.name, *parents]))
    assert not outside, outside
