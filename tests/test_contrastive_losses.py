"""clip_loss and siglip_loss (the compiled ops, or the references without the extension) against
their references: every dtype, odd and tile-crossing batches, the one-direction (label_offset)
forms, non-contiguous features, gradcheck, opcheck, torch.compile, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmfast import _backend
from mmfast.ops import clip_loss, clip_loss_reference, cpu_gemm, siglip_loss, siglip_loss_reference
from tests._tolerances import TOLERANCES

compiled = pytest.mark.skipif(not _backend.extension_loaded(), reason="needs the compiled extension")

# bfloat16 features are computed in float32, so the fused result matches the reference (which
# upcasts too) to float32 accuracy; the sums over B x B logits set the float32 tolerance.
LOSS_TOLERANCE = {
    torch.float64: TOLERANCES[torch.float64],
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.bfloat16: {"rtol": 1e-5, "atol": 1e-5},
}


def _features(rows: int, dim: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)
    return x.to(dtype).requires_grad_()


def _scalars(dtype: torch.dtype, bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    scalar_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    scale = torch.tensor(14.3, dtype=scalar_dtype, requires_grad=True)
    return scale, (torch.tensor(-2.5, dtype=scalar_dtype, requires_grad=True) if bias else None)


def _compare(fused_fn, reference_fn, args: list, kwargs: dict, dtype: torch.dtype) -> None:
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    got = fused_fn(*args, **kwargs)
    want = reference_fn(*args, **kwargs)
    assert got.shape == () and got.dtype == want.dtype
    torch.testing.assert_close(got, want, **LOSS_TOLERANCE[dtype])
    got_grads = torch.autograd.grad(got, leaves)
    want_grads = torch.autograd.grad(want, leaves)
    for g, w, leaf in zip(got_grads, want_grads, leaves):
        assert g.dtype == leaf.dtype and g.shape == leaf.shape
        if leaf.dtype == torch.bfloat16:
            # Gradients of bfloat16 features are rounded to bfloat16 once, like the reference's.
            tolerance = {"rtol": 1e-2, "atol": 1e-4}
        elif leaf.dim() == 0 and dtype != torch.float64:
            # The scale and bias gradients are sums over B x B float32 terms, summed in another
            # order than the reference's: their rounding grows with the count.
            tolerance = {"rtol": 1e-4, "atol": 1e-4}
        else:
            tolerance = LOSS_TOLERANCE[dtype]
        scale = max(1.0, w.abs().max().item())
        torch.testing.assert_close(g, w, rtol=tolerance["rtol"], atol=tolerance["atol"] * scale)


DTYPES = [torch.float64, torch.float32, torch.bfloat16]
# Batches below, at and across the 1024-row tiles; feature dims odd and even.
SHAPES = [(1, 3), (5, 17), (37, 64), (1030, 8)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "dim"), SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_clip_loss_matches_open_clip(dtype, rows, dim, bias):
    scale, logit_bias = _scalars(dtype, bias)
    args = [_features(rows, dim, dtype, 0), _features(rows, dim, dtype, 1), scale, logit_bias]
    _compare(clip_loss, clip_loss_reference, args, {}, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "texts", "offset"), [(1, 1, 0), (7, 20, 13), (30, 1100, 1050)])
def test_clip_loss_one_direction_with_label_offset(dtype, rows, texts, offset):
    scale, bias = _scalars(dtype, True)
    args = [_features(rows, 9, dtype, 2), _features(texts, 9, dtype, 3), scale, bias]
    _compare(clip_loss, clip_loss_reference, args, {"label_offset": offset, "symmetric": False}, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "dim"), SHAPES)
def test_siglip_loss_matches_open_clip(dtype, rows, dim):
    scale, bias = _scalars(dtype, True)
    args = [_features(rows, dim, dtype, 4), _features(rows, dim, dtype, 5), scale, bias]
    _compare(siglip_loss, siglip_loss_reference, args, {}, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_siglip_loss_with_more_texts_than_images(dtype):
    scale, bias = _scalars(dtype, True)
    args = [_features(6, 11, dtype, 6), _features(1040, 11, dtype, 7), scale, bias]
    _compare(siglip_loss, siglip_loss_reference, args, {"label_offset": 1030}, dtype)


@pytest.mark.parametrize("engine", ["aten", "onednn"])
@pytest.mark.parametrize(("rows", "texts"), [(37, 37), (1030, 1030), (6, 1040)])
def test_feature_gradients_on_every_engine(engine, rows, texts):
    """Each engine of the feature-gradient GEMMs (the text gradient's row-order and transposed
    products), with one tile (the product handed over as the gradient) and with several (written,
    then added)."""
    scale, bias = _scalars(torch.float32, True)
    args = [_features(rows, 9, torch.float32, 10), _features(texts, 9, torch.float32, 11), scale, bias]
    with cpu_gemm.force(engine):
        _compare(clip_loss, clip_loss_reference, args, {"symmetric": rows == texts}, torch.float32)
        _compare(siglip_loss, siglip_loss_reference, args, {}, torch.float32)


def test_open_clip_formulas_hold_for_the_references():
    """The references are open_clip's losses: the symmetric cross-entropies and the 2*eye-1 labels."""
    a, b = _features(6, 5, torch.float64, 8), _features(6, 5, torch.float64, 9)
    logits = 3.0 * a @ b.T - 1.0
    labels = torch.arange(6)
    expected_clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(clip_loss_reference(a, b, 3.0, -1.0), expected_clip)
    expected_siglip = -F.logsigmoid((2 * torch.eye(6) - 1) * logits).sum() / 6
    torch.testing.assert_close(siglip_loss_reference(a, b, 3.0, -1.0), expected_siglip)


def test_float_scale_and_non_contiguous_features():
    base = torch.randn(9, 40, dtype=torch.float64)
    a = base[:, ::2]  # strided rows
    b = torch.randn(20, 9, dtype=torch.float64).T  # transposed
    torch.testing.assert_close(clip_loss(a, b, 2.0), clip_loss_reference(a.contiguous(), b.contiguous(), 2.0))
    torch.testing.assert_close(
        siglip_loss(a, b, 2.0, -1.0), siglip_loss_reference(a.contiguous(), b.contiguous(), 2.0, -1.0)
    )


def test_gradients_only_for_what_requires_them():
    a = _features(8, 4, torch.float64, 10)
    b = _features(8, 4, torch.float64, 11).detach()
    loss = clip_loss(a, b, torch.tensor(5.0, dtype=torch.float64))
    (grad,) = torch.autograd.grad(loss, [a])
    (want,) = torch.autograd.grad(clip_loss_reference(a, b, 5.0), [a])
    torch.testing.assert_close(grad, want)
    with torch.no_grad():
        torch.testing.assert_close(siglip_loss(a, b, 5.0, -2.0), siglip_loss_reference(a, b, 5.0, -2.0))


def test_gradcheck_in_float64():
    a, b = _features(5, 3, torch.float64, 12), _features(5, 3, torch.float64, 13)
    scale, bias = _scalars(torch.float64, True)
    assert torch.autograd.gradcheck(lambda *t: clip_loss(*t), (a, b, scale, bias))
    assert torch.autograd.gradcheck(lambda *t: siglip_loss(*t), (a, b, scale, bias))
    c = _features(9, 3, torch.float64, 14)
    assert torch.autograd.gradcheck(
        lambda x, y, s: clip_loss(x, y, s, None, label_offset=3, symmetric=False), (a, c, scale)
    )


@compiled
def test_opcheck():
    a, b = _features(7, 5, torch.float32, 15), _features(7, 5, torch.float32, 16)
    scale, bias = _scalars(torch.float32, True)
    torch.library.opcheck(torch.ops.mmfast.clip_loss_forward.default, (a, b, scale, bias, 0, True))
    torch.library.opcheck(torch.ops.mmfast.clip_loss_forward.default, (a, b, scale, None, 0, True))
    torch.library.opcheck(torch.ops.mmfast.siglip_loss_forward.default, (a, b, scale, bias, 0))
    # Called by the autograd formula below autograd (it has no derivative of its own): plain tensors.
    plain = [t.detach() for t in (a, b, scale, bias)]
    for mask in ([True, True, True, True], [False, True, False, True]):
        torch.library.opcheck(torch.ops.mmfast.siglip_loss_forward_with_grads.default, (*plain, 0, mask))
        clip_with_grads = torch.ops.mmfast.clip_loss_forward_with_grads.default
        torch.library.opcheck(clip_with_grads, (*plain, 0, True, mask))
        torch.library.opcheck(clip_with_grads, (*plain[:3], None, 0, True, mask))


@compiled
def test_torch_compile_fullgraph():
    a, b = _features(12, 6, torch.float32, 17), _features(12, 6, torch.float32, 18)
    scale, bias = _scalars(torch.float32, True)

    def both(x, y, s, t):
        return clip_loss(x, y, s, t) + siglip_loss(x, y, s, t)

    compiled_fn = torch.compile(both, fullgraph=True, backend="aot_eager")
    got = compiled_fn(a, b, scale, bias)
    torch.testing.assert_close(got, both(a, b, scale, bias))
    grads = torch.autograd.grad(got, [a, b, scale, bias])
    want = torch.autograd.grad(
        clip_loss_reference(a, b, scale, bias) + siglip_loss_reference(a, b, scale, bias), [a, b, scale, bias]
    )
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@compiled
def test_second_derivative_raises():
    """The CPU backward scales the gradients the forward kept: it refuses to build a graph of itself
    (which would carry no derivative with respect to the inputs) rather than return one."""
    a, b = _features(4, 3, torch.float64, 19), _features(4, 3, torch.float64, 20)
    with pytest.raises(NotImplementedError, match="clip_loss has no second derivative"):
        torch.autograd.grad(clip_loss(a, b, 2.0), [a], create_graph=True)
    with pytest.raises(NotImplementedError, match="siglip_loss has no second derivative"):
        torch.autograd.grad(siglip_loss(a, b, 2.0, -1.0), [a], create_graph=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    ("rows", "texts", "symmetric"), [(33, 33, True), (1030, 1030, True), (20, 1040, False)]
)
def test_clip_forward_with_grads(dtype, rows, texts, symmetric):
    """One tile (the gradients from the forward's pass) and several (the tiles passed over again):
    the loss, the log-sum-exps and the gradients of the loss, and autograd scaling them."""
    scale, bias = _scalars(dtype, True)
    a, b = _features(rows, 7, dtype, 25), _features(texts, 7, dtype, 26)
    offset = 0 if symmetric else 1000
    loss, row_lse, col_lse, *grads = torch.ops.mmfast.clip_loss_forward_with_grads(
        a, b, scale, bias, offset, symmetric, [True, True, True, True]
    )
    want_loss, want_row_lse, want_col_lse = torch.ops.mmfast.clip_loss_forward(
        a, b, scale, bias, offset, symmetric
    )
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(row_lse, want_row_lse)
    torch.testing.assert_close(col_lse, want_col_lse)
    reference = clip_loss_reference(a, b, scale, bias, label_offset=offset, symmetric=symmetric)
    want = torch.autograd.grad(reference, [a, b, scale, bias], torch.tensor(0.75))
    got = torch.autograd.grad(
        clip_loss(a, b, scale, bias, label_offset=offset, symmetric=symmetric),
        [a, b, scale, bias],
        torch.tensor(0.75),
    )
    for g, w, raw in zip(got, want, grads):
        assert g.dtype == w.dtype and raw.dtype == loss.dtype
        tolerance = {"rtol": 2e-2, "atol": 1e-4} if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-5}
        if g.dim() == 0 and dtype != torch.float64:  # sums over B x B float32 terms (as in _compare)
            tolerance = {"rtol": 1e-4, "atol": 1e-4}
        torch.testing.assert_close(g, w, **tolerance)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_with_grads_scales_by_the_incoming_gradient(dtype):
    """Autograd on the CPU keeps the gradients the forward's tile pass formed: the backward scales
    them by the incoming gradient, rounds once to the features' dtype, and returns only those asked
    for."""
    scale, bias = _scalars(dtype, True)
    a, b = _features(33, 7, dtype, 23), _features(33, 7, dtype, 24)
    for leaves in ([a, b, scale, bias], [b, bias], [a]):
        got = torch.autograd.grad(siglip_loss(a, b, scale, bias), leaves, torch.tensor(-2.5))
        want = torch.autograd.grad(siglip_loss_reference(a, b, scale, bias), leaves, torch.tensor(-2.5))
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            torch.testing.assert_close(g, w, rtol=2e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-4)
    mask = [True, False, True, False]
    loss, *grads = torch.ops.mmfast.siglip_loss_forward_with_grads(a, b, scale, bias, 0, mask)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    assert loss.dtype == grads[0].dtype == compute and grads[0].shape == a.shape
    assert grads[1].numel() == 0 and grads[3].numel() == 0 and grads[2].shape == ()
    torch.testing.assert_close(loss, siglip_loss(a, b, scale, bias))


def _good():
    return torch.randn(4, 3), torch.randn(4, 3)


BAD_CASES = [
    (lambda a, b: (a[0], b, 1.0, None), ValueError, r"image_features: expected a 2-D tensor \[B, D\]"),
    (lambda a, b: (a, b[:, :2], 1.0, None), ValueError, r"text_features: expected feature dim 3"),
    (lambda a, b: (a, b[:3], 1.0, None), ValueError, r"text_features: expected 4 rows like image_features"),
    (lambda a, b: (a, b.double(), 1.0, None), TypeError, r"text_features: expected dtype torch.float32"),
    (lambda a, b: (a.long(), b.long(), 1.0, None), TypeError, r"image_features: expected torch.float32"),
    (lambda a, b: (a, b, torch.ones(2), None), ValueError, r"logit_scale: expected a 0-dim tensor"),
    (lambda a, b: (a, b, "big", None), TypeError, r"logit_scale: expected a 0-dim tensor or a float"),
    (lambda a, b: (a, b, 1.0, torch.ones(1)), ValueError, r"logit_bias: expected a 0-dim tensor"),
    (lambda a, b: (a[:0], b[:0], 1.0, None), ValueError, r"image_features: expected a batch of at least 1"),
    (lambda a, b: (a, b.to("meta"), 1.0, None), ValueError, r"text_features: expected device cpu"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD_CASES)
def test_bad_input_names_the_argument(change, error, message):
    args = change(*_good())
    with pytest.raises(error, match=message):
        clip_loss(*args)
    # SigLIP takes more texts than images, never fewer.
    message = message.replace("expected 4 rows like image_features", "expected at least 4 rows")
    with pytest.raises(error, match=message):
        siglip_loss(*args[:3], -1.0 if args[3] is None else args[3])


def test_label_offset_out_of_range():
    a, b = torch.randn(4, 3), torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"label_offset: .* expected 0 to 2 .* got 3"):
        clip_loss(a, b, 1.0, label_offset=3, symmetric=False)
    with pytest.raises(ValueError, match=r"label_offset: expected 0 for the symmetric loss"):
        clip_loss(a, a, 1.0, label_offset=1)
    with pytest.raises(TypeError, match=r"logit_bias: expected a 0-dim tensor or a float, got None"):
        siglip_loss(a, b, 1.0, None)


@compiled
@pytest.mark.parametrize(("change", "error", "message"), BAD_CASES[:5] + BAD_CASES[8:])
def test_cpp_checks_raise_the_same_errors(change, error, message):
    a, b, scale, bias = change(*_good())
    scale = torch.tensor(float(scale)) if not isinstance(scale, torch.Tensor) else scale
    with pytest.raises(error, match=message):
        torch.ops.mmfast.clip_loss(a, b, scale, bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_autocast_leaves_the_losses_in_float32(dtype):
    """Inside a bfloat16 autocast region (a model's features often come out of one) the losses still
    compute in float32 and give the result they give outside it."""
    scale, bias = _scalars(dtype, True)
    args = [_features(1030, 16, dtype, 21), _features(1030, 16, dtype, 22), scale, bias]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [clip_loss(*args), siglip_loss(*args)]
        grads = torch.autograd.grad(sum(got), args)
    want = [clip_loss_reference(*args), siglip_loss_reference(*args)]
    want_grads = torch.autograd.grad(sum(want), args)
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, **LOSS_TOLERANCE[dtype])
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-2, atol=1e-4 * max(1.0, w.abs().max().item()))
