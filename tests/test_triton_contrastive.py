"""The Triton contrastive-loss kernels (`mmfast.triton.clip_loss`, `mmfast.triton.siglip_loss`)
against `clip_loss_reference` / `siglip_loss_reference`: the loss, CLIP's row and column
log-sum-exps and the four gradients, called the way the dispatcher calls them (the argument order
of the ``_forward`` / ``_backward`` schemas).

Without CUDA the kernels run on CPU tensors in triton's interpreter (small sizes: it is slow; no
bfloat16: its bf16 arithmetic is wrong); with CUDA the same cases and larger ones run compiled.
"""

from __future__ import annotations

import functools
import os

import torch

if not torch.cuda.is_available():
    # Triton reads this when the kernels are decorated, so before they are imported.
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

triton = pytest.importorskip("triton")

from mmfast.ops import clip_loss_reference, siglip_loss_reference  # noqa: E402
from mmfast.triton import _common  # noqa: E402
from mmfast.triton import clip_loss as clip_kernels  # noqa: E402
from mmfast.triton import siglip_loss as siglip_kernels  # noqa: E402

if not _common.INTERPRETED and not torch.cuda.is_available():
    raise RuntimeError(
        "mmfast.triton kernels were imported before TRITON_INTERPRET=1 was set and there is no GPU: "
        "set TRITON_INTERPRET=1 in the environment (or at the top of tests/conftest.py)"
    )

DEVICE = "cpu" if _common.INTERPRETED else "cuda"
SMALL_DTYPES = [torch.float32, torch.float16] + ([] if _common.INTERPRETED else [torch.bfloat16])
needs_compiled_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or _common.INTERPRETED,
    reason="needs a CUDA device running the compiled kernels",
)

# Allowed error beyond twice the plain-PyTorch error, relative to the largest exact value (at
# least 1 for the loss and the scalar gradients, whose natural size is O(1): CLIP's exact
# grad_logit_bias is 0), by the dtype of the result.
_SLACK = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float64: 1e-10}
_NAMES = ("loss", "grad_image", "grad_text", "grad_logit_scale", "grad_logit_bias")
ALL = (True, True, True, True)


def _compute_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _make_case(rows, texts, dim, dtype, scale, bias, device=DEVICE):
    """Unit-norm features (as CLIP feeds them), the scale and the optional bias in the compute dtype."""
    image = torch.nn.functional.normalize(torch.randn(rows, dim, device=device), dim=-1).to(dtype)
    text = torch.nn.functional.normalize(torch.randn(texts, dim, device=device), dim=-1).to(dtype)
    compute = _compute_dtype(dtype)
    logit_scale = torch.tensor(scale, dtype=compute, device=device)
    logit_bias = None if bias is None else torch.tensor(bias, dtype=compute, device=device)
    return image, text, logit_scale, logit_bias


def _reference(loss_fn, image, text, scale, bias, grad, dtype, **kwargs):
    """``[loss, grad_image, grad_text, grad_scale, grad_bias]`` of ``loss_fn`` with every leaf in
    ``dtype`` (the features' own dtype: the plain PyTorch result; float64: the exact one)."""
    compute = _compute_dtype(dtype)
    leaves = [image.detach().to(dtype), text.detach().to(dtype), scale.detach().to(compute)]
    if bias is not None:
        leaves.append(bias.detach().to(compute))
    leaves = [leaf.requires_grad_() for leaf in leaves]
    loss = loss_fn(*leaves[:3], leaves[3] if bias is not None else None, **kwargs)
    grads = torch.autograd.grad(loss, leaves, grad.to(loss.dtype))
    return [loss.detach(), *grads] + ([None] if bias is None else [])


def _logits64(image, text, scale, bias):
    logits = scale.double() * (image.double() @ text.double().T)
    return logits if bias is None else logits + bias.double()


def _assert_close_to_exact(actual, exact, plain, dtype, names=_NAMES):
    """The kernels' error against the float64 values stays within twice the plain-PyTorch error
    in ``dtype`` plus a slack relative to the values' size."""
    for name, got, expected, reference in zip(names, actual, exact, plain):
        if expected is None:
            continue
        assert got.shape == expected.shape, (name, got.shape, expected.shape)
        fused_error = (got.double() - expected).abs().max().item() if got.numel() else 0.0
        plain_error = (reference.double() - expected).abs().max().item() if got.numel() else 0.0
        floor = 1.0 if got.dim() == 0 else 1e-3
        scale = max(expected.abs().max().item() if got.numel() else 0.0, floor)
        # The loss and the scalar gradients come back in the compute dtype (float32 for 16-bit).
        slack = _SLACK[_compute_dtype(dtype) if got.dim() == 0 else dtype]
        assert fused_error <= 2 * plain_error + slack * scale, (name, fused_error, plain_error, scale)


def _run_clip(image, text, scale, bias, offset, symmetric, grad, mask=ALL):
    loss, row_lse, col_lse = clip_kernels.forward(image, text, scale, bias, offset, symmetric)
    grads = clip_kernels.backward(grad, image, text, scale, bias, row_lse, col_lse, offset, symmetric, mask)
    return loss, row_lse, col_lse, grads


# (B, B_t, D, label_offset, symmetric, bias): B in {1, 5, 37, 70} (37 and 70 span several row and
# column blocks of the interpreter's 16 x 16 tiles), D in {3, 17, 64} (one, two and four K / output
# chunks), square and rectangular (B_t > B, label_offset > 0), with and without a bias.
CLIP_CASES = [
    (1, 1, 3, 0, True, 1.0),
    (5, 5, 17, 0, True, None),
    (37, 37, 64, 0, True, -2.0),
    (70, 70, 17, 0, True, None),
    (70, 70, 3, 0, False, 0.5),
    (5, 12, 17, 4, False, None),
    (37, 45, 64, 8, False, -1.0),
    (1, 3, 3, 2, False, None),
]

SIGLIP_CASES = [
    (1, 1, 3, 0),
    (5, 5, 17, 0),
    (37, 37, 64, 0),
    (70, 70, 17, 0),
    (5, 12, 64, 4),
    (37, 45, 3, 8),
    (1, 3, 17, 2),
]


@pytest.mark.parametrize("dtype", SMALL_DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "texts", "dim", "offset", "symmetric", "bias"), CLIP_CASES)
def test_clip_matches_reference(rows, texts, dim, offset, symmetric, bias, dtype):
    image, text, scale, bias_t = _make_case(rows, texts, dim, dtype, scale=8.0, bias=bias)
    grad = torch.tensor(1.5, dtype=_compute_dtype(dtype), device=DEVICE)
    loss, row_lse, col_lse, grads = _run_clip(image, text, scale, bias_t, offset, symmetric, grad)

    compute = _compute_dtype(dtype)
    assert loss.dim() == 0 and loss.dtype == compute
    logits = _logits64(image, text, scale, bias_t)
    assert row_lse.dtype == compute and row_lse.shape == (rows,)
    torch.testing.assert_close(row_lse.double(), logits.logsumexp(1), rtol=0, atol=1e-5)
    if symmetric:
        assert col_lse.dtype == compute and col_lse.shape == (texts,)
        torch.testing.assert_close(col_lse.double(), logits.logsumexp(0), rtol=0, atol=1e-5)
    else:
        assert col_lse.shape == (0,)

    kwargs = dict(label_offset=offset, symmetric=symmetric)
    exact = _reference(clip_loss_reference, image, text, scale, bias_t, grad, torch.float64, **kwargs)
    plain = _reference(clip_loss_reference, image, text, scale, bias_t, grad, dtype, **kwargs)
    grad_image, grad_text, grad_scale, grad_bias = grads
    assert grad_image.dtype == grad_text.dtype == dtype
    assert grad_image.is_contiguous() and grad_text.is_contiguous()
    assert grad_scale.dim() == 0 and grad_scale.dtype == scale.dtype
    if bias is None:
        assert grad_bias.shape == (0,)
    else:
        assert grad_bias.dim() == 0 and grad_bias.dtype == bias_t.dtype
    _assert_close_to_exact([loss, *grads], exact, plain, dtype)


@pytest.mark.parametrize("dtype", SMALL_DTYPES, ids=str)
@pytest.mark.parametrize(("rows", "texts", "dim", "offset"), SIGLIP_CASES)
def test_siglip_matches_reference(rows, texts, dim, offset, dtype):
    # SigLIP's initial scale and bias: most pairs are far on the negative side, where the softplus
    # terms are tiny and a naive log(1 + exp(x)) loses them.
    image, text, scale, bias = _make_case(rows, texts, dim, dtype, scale=10.0, bias=-10.0)
    grad = torch.tensor(0.75, dtype=_compute_dtype(dtype), device=DEVICE)
    loss = siglip_kernels.forward(image, text, scale, bias, offset)
    grads = siglip_kernels.backward(grad, image, text, scale, bias, offset, ALL)
    assert loss.dim() == 0 and loss.dtype == _compute_dtype(dtype)
    grad_image, grad_text, grad_scale, grad_bias = grads
    assert grad_image.dtype == grad_text.dtype == dtype
    assert grad_image.is_contiguous() and grad_text.is_contiguous()
    assert grad_scale.dim() == 0 and grad_bias.dim() == 0 and grad_bias.dtype == bias.dtype

    kwargs = dict(label_offset=offset)
    exact = _reference(siglip_loss_reference, image, text, scale, bias, grad, torch.float64, **kwargs)
    plain = _reference(siglip_loss_reference, image, text, scale, bias, grad, dtype, **kwargs)
    _assert_close_to_exact([loss, *grads], exact, plain, dtype)


def test_siglip_far_negative_pairs_keep_their_precision():
    """Logits around -20: each softplus term is ~2e-9, below float32's epsilon next to 1."""
    image, text, scale, bias = _make_case(37, 37, 17, torch.float32, scale=1.0, bias=-20.0)
    loss = siglip_kernels.forward(image, text, scale, bias, 0)
    expected = siglip_loss_reference(image.double(), text.double(), scale.double(), bias.double())
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)


def test_clip_large_scale_is_stable():
    """Scale 100 (CLIP's clamp) on unit-norm features: logits up to +-100, no overflow."""
    image, text, scale, bias = _make_case(37, 37, 17, torch.float32, scale=100.0, bias=None)
    loss, row_lse, col_lse, grads = _run_clip(image, text, scale, bias, 0, True, torch.tensor(1.0))
    exact = _reference(clip_loss_reference, image, text, scale, bias, torch.tensor(1.0), torch.float64)
    plain = _reference(clip_loss_reference, image, text, scale, bias, torch.tensor(1.0), torch.float32)
    assert torch.isfinite(row_lse).all() and torch.isfinite(col_lse).all()
    _assert_close_to_exact([loss, *grads], exact, plain, torch.float32)


def test_float64_features():
    """float64 features compute (and accumulate) in float64."""
    image, text, scale, bias = _make_case(37, 45, 17, torch.float64, scale=8.0, bias=-1.0)
    grad = torch.tensor(1.0, dtype=torch.float64)
    loss, row_lse, _, grads = _run_clip(image, text, scale, bias, 5, False, grad)
    assert loss.dtype == row_lse.dtype == torch.float64
    exact = _reference(
        clip_loss_reference, image, text, scale, bias, grad, torch.float64, label_offset=5, symmetric=False
    )
    _assert_close_to_exact([loss, *grads], exact, exact, torch.float64)
    loss = siglip_kernels.forward(image, text, scale, bias, 5)
    grads = siglip_kernels.backward(grad, image, text, scale, bias, 5, ALL)
    exact = _reference(siglip_loss_reference, image, text, scale, bias, grad, torch.float64, label_offset=5)
    _assert_close_to_exact([loss, *grads], exact, exact, torch.float64)


MASKS = [
    (True, False, False, False),
    (False, True, False, False),
    (False, False, True, False),
    (False, False, False, True),
    (False, True, True, True),
    (True, False, True, False),
    (False, False, False, False),
]


def _mask_id(mask):
    return "".join("x" if needed else "-" for needed in mask)


@functools.cache
def _mask_case(op, symmetric):
    """Inputs and the full gradients of the output-mask tests, computed once per (op, symmetric)."""
    torch.manual_seed(1)
    texts, offset = (21, 0) if symmetric else (29, 6)
    if op == "clip":
        image, text, scale, bias = _make_case(21, texts, 17, torch.float32, scale=8.0, bias=0.5)
        backward = functools.partial(_clip_backward, offset=offset, symmetric=symmetric)
    else:
        image, text, scale, bias = _make_case(21, texts, 17, torch.float32, scale=10.0, bias=-5.0)
        backward = functools.partial(siglip_kernels.backward, label_offset=offset)
    args = (torch.tensor(1.0), image, text, scale, bias)
    return backward, args, backward(*args, output_mask=ALL)


def _clip_backward(grad, image, text, scale, bias, offset, symmetric, output_mask):
    _, row_lse, col_lse = clip_kernels.forward(image, text, scale, bias, offset, symmetric)
    return clip_kernels.backward(
        grad, image, text, scale, bias, row_lse, col_lse, offset, symmetric, output_mask
    )


@pytest.mark.parametrize("mask", MASKS, ids=_mask_id)
@pytest.mark.parametrize(("op", "symmetric"), [("clip", True), ("clip", False), ("siglip", False)])
def test_output_mask(op, symmetric, mask):
    """Gradients not asked for are empty [0] tensors; the others equal the full computation
    (the scalar sums come from whichever side runs)."""
    backward, args, full = _mask_case(op, symmetric)
    masked = backward(*args, output_mask=mask)
    for name, needed, got, want in zip(_NAMES[1:], mask, masked, full):
        if needed:
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
        else:
            assert got.shape == (0,), name


def test_clip_without_bias_returns_no_bias_gradient():
    image, text, scale, _ = _make_case(5, 5, 17, torch.float32, scale=8.0, bias=None)
    _, _, _, grads = _run_clip(image, text, scale, None, 0, True, torch.tensor(1.0))
    assert grads[3].shape == (0,) and grads[2].dim() == 0


def test_non_contiguous_features():
    image, text, scale, bias = _make_case(21, 21, 17, torch.float32, scale=8.0, bias=-1.0)
    image_t, text_t = image.t().contiguous().t(), text.t().contiguous().t()
    assert not image_t.is_contiguous()
    grad = torch.tensor(1.0)
    for got, want in zip(
        _run_clip(image_t, text_t, scale, bias, 0, True, grad)[3],
        _run_clip(image, text, scale, bias, 0, True, grad)[3],
    ):
        assert got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_results_are_deterministic():
    image, text, scale, bias = _make_case(37, 37, 17, torch.float32, scale=8.0, bias=-1.0)
    grad = torch.tensor(1.0)
    first = _run_clip(image, text, scale, bias, 0, True, grad)
    second = _run_clip(image, text, scale, bias, 0, True, grad)
    for a, b in zip([*first[:3], *first[3]], [*second[:3], *second[3]]):
        assert torch.equal(a, b)


def test_outputs_never_share_storage():
    """Custom ops may not return tensors that alias each other or their inputs."""
    image, text, scale, bias = _make_case(21, 21, 17, torch.float32, scale=8.0, bias=-1.0)
    loss, row_lse, col_lse, grads = _run_clip(image, text, scale, bias, 0, True, torch.tensor(1.0))
    outputs = [loss, row_lse, col_lse, *grads]
    storages = {t.untyped_storage().data_ptr() for t in outputs}
    assert len(storages) == len(outputs)
    assert storages.isdisjoint(t.untyped_storage().data_ptr() for t in [image, text, scale, bias])
    grads = siglip_kernels.backward(torch.tensor(1.0), image, text, scale, bias, 0, ALL)
    assert len({t.untyped_storage().data_ptr() for t in grads}) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i, t, o, s: (i, t[:4], o, s), "text: the symmetric loss takes 5 texts"),
        (lambda i, t, o, s: (i, t, 1, s), "label_offset 0"),
        (lambda i, t, o, s: (i, torch.cat([t, t]), 6, False), "label_offset: expected 0 to 5"),
        (lambda i, t, o, s: (i, t[:, :4], o, s), r"text: expected a 2-D tensor \[B_t, 17\]"),
        (lambda i, t, o, s: (i[:0], t[:0], o, s), "image: expected a 2-D tensor"),
        (lambda i, t, o, s: (i, t.double(), o, s), "text: expected dtype torch.float32"),
        (lambda i, t, o, s: (i.long(), t.long(), o, s), "image: expected float32, float64"),
    ],
)
def test_bad_arguments_raise_before_any_launch(change, message):
    image, text, scale, bias = _make_case(5, 5, 17, torch.float32, scale=8.0, bias=-1.0)
    image, text, offset, symmetric = change(image, text, 0, True)
    with pytest.raises(ValueError, match=message):
        clip_kernels.forward(image, text, scale, bias, offset, symmetric)


def test_scalars_must_be_0_dim():
    image, text, scale, bias = _make_case(5, 5, 17, torch.float32, scale=8.0, bias=-1.0)
    with pytest.raises(ValueError, match="logit_scale: expected a 0-dim"):
        clip_kernels.forward(image, text, scale.reshape(1), bias, 0, True)
    with pytest.raises(ValueError, match="logit_bias: expected a 0-dim"):
        siglip_kernels.forward(image, text, scale, bias.reshape(1), 0)


@pytest.mark.cuda
@needs_compiled_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("rows", "texts", "dim", "offset", "symmetric"),
    [
        (1000, 1000, 512, 0, True),
        (777, 3000, 768, 1500, False),
        (4099, 4099, 64, 0, True),
    ],
)
def test_cuda_realistic_sizes(rows, texts, dim, offset, symmetric, dtype):
    image, text, scale, bias = _make_case(rows, texts, dim, dtype, scale=50.0, bias=-1.0, device="cuda")
    grad = torch.tensor(1.0, dtype=_compute_dtype(dtype), device="cuda")
    loss, _, _, grads = _run_clip(image, text, scale, bias, offset, symmetric, grad)
    kwargs = dict(label_offset=offset, symmetric=symmetric)
    exact = _reference(clip_loss_reference, image, text, scale, bias, grad, torch.float64, **kwargs)
    plain = _reference(clip_loss_reference, image, text, scale, bias, grad, dtype, **kwargs)
    _assert_close_to_exact([loss, *grads], exact, plain, dtype)
    loss = siglip_kernels.forward(image, text, scale, bias, offset)
    grads = siglip_kernels.backward(grad, image, text, scale, bias, offset, ALL)
    kwargs = dict(label_offset=offset)
    exact = _reference(siglip_loss_reference, image, text, scale, bias, grad, torch.float64, **kwargs)
    plain = _reference(siglip_loss_reference, image, text, scale, bias, grad, dtype, **kwargs)
    _assert_close_to_exact([loss, *grads], exact, plain, dtype)


def test_zero_features():
    """D = 0: every logit is the bias; the feature gradients are empty, the scalar ones exact."""
    image, text, scale, bias = _make_case(5, 5, 0, torch.float32, scale=8.0, bias=-1.0)
    grad = torch.tensor(1.0)
    loss, row_lse, col_lse, grads = _run_clip(image, text, scale, bias, 0, True, grad)
    exact = _reference(clip_loss_reference, image, text, scale, bias, grad, torch.float64)
    _assert_close_to_exact([loss, *grads], exact, exact, torch.float32)
    assert grads[0].shape == (5, 0) and grads[1].shape == (5, 0)
    loss = siglip_kernels.forward(image, text, scale, bias, 0)
    grads = siglip_kernels.backward(grad, image, text, scale, bias, 0, ALL)
    exact = _reference(siglip_loss_reference, image, text, scale, bias, grad, torch.float64)
    _assert_close_to_exact([loss, *grads], exact, exact, torch.float32)


def test_gpu_configs_are_pruned_by_dtype_and_width():
    """The autotune lists the GPU sees (the interpreter runs a single config, so the pruning is
    only exercised here): the configs of the launch's dot kind (the features' element size and the
    dot precision), no chunk wider than needed."""
    from mmfast.triton import _contrastive_kernels as kernels

    forward_all = _common.unique_configs(kernels._FORWARD_GPU_CONFIGS)
    grad_all = _common.unique_configs(kernels._GRAD_GPU_CONFIGS)
    for c in forward_all + grad_all:
        assert all(v >= _common.MIN_DOT_BLOCK and v & (v - 1) == 0 for v in c.kwargs.values()), c
    kinds = [
        (torch.float16, "ieee", "16-bit"),
        (torch.bfloat16, "ieee", "16-bit"),
        (torch.float32, "ieee", "fp32"),
        (torch.float32, "tf32", "tf32"),
        (torch.float64, "ieee", "fp64"),
    ]
    for dtype, precision, kind in kinds:
        a = torch.empty(1, dtype=dtype)
        for sigmoid in (False, True):
            spilling = kernels._SPILLING_16BIT_TILES[sigmoid] if kind == "16-bit" else set()
            keys = {
                _common.config_key(c)
                for c in kernels._FORWARD_GPU_CONFIGS[kind]
                if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) not in spilling
            }
            pruned = kernels._prune_forward(forward_all, {"A": a}, DOT_PRECISION=precision, SIGMOID=sigmoid)
            assert {_common.config_key(c) for c in pruned} == keys and keys
        grad_keys = {_common.config_key(g) for g in kernels._GRAD_GPU_CONFIGS[kind]}
        for dim in (3, 64, 512, 768, 4096):
            pruned = kernels._prune_grad(
                grad_all, {"A": a, "D": dim}, NEED_GRAD=True, DOT_PRECISION=precision
            )
            assert pruned, (dtype, dim)
            assert all(_common.config_key(c) in grad_keys for c in pruned)
            widest = triton.next_power_of_2(dim)
            assert all(c.kwargs["BLOCK_DO"] <= widest for c in pruned) or len(pruned) == 1
        scalars_only = kernels._prune_grad(
            grad_all, {"A": a, "D": 512}, NEED_GRAD=False, DOT_PRECISION=precision
        )
        shapes = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in scalars_only]
        assert len(shapes) == len(set(shapes)) > 0
    # D = 768 (ViT-B/L text towers) can take the whole feature dim in one 16-bit chunk.
    half = torch.empty(1, dtype=torch.float16)
    wide = kernels._prune_grad(grad_all, {"A": half, "D": 768}, NEED_GRAD=True, DOT_PRECISION="ieee")
    assert max(c.kwargs["BLOCK_DO"] for c in wide) == 1024
