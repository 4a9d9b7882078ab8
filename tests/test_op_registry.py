"""The op descriptors are the one list of ops: dispatch, backend_info(), `mmfast info` and the
README read them; their limits come from the C++ checks; no op is defined twice."""

from __future__ import annotations

import json
import pathlib
import warnings

import pytest
import torch

import mmfast
from mmfast import _backend
from mmfast.ops import _registry, input_limits

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = [op.name for op in _registry.descriptors()]


def test_every_op_has_a_descriptor_with_a_reference_and_compiled_kernels():
    assert {"concat_linear", "gated_fusion", "attention_fusion", "clip_loss", "siglip_loss"} <= set(NAMES)
    for op in _registry.descriptors():
        assert callable(op.reference) and op.reference is getattr(mmfast.ops, f"{op.name}_reference")
        assert getattr(mmfast.ops, op.name).__module__ == f"mmfast.ops.{op.name}"
        assert "cpu" in op.compiled


@pytest.mark.skipif(not _backend.extension_loaded(), reason="the C++ limits need the extension")
def test_limits_come_from_the_cpp_checks_and_agree_with_the_definitions():
    from mmfast import _C

    assert set(_C.input_limits) == set(NAMES)
    for op in _registry.descriptors():
        low, high = _C.input_limits[op.name]
        assert op.input_limits() == (low, high) == input_limits(op.name)
        assert low == op.min_inputs
        if low == high:
            continue  # a fixed number of inputs (the losses' two feature matrices)
        # The C++ check refuses one input more than its limit, with the Python check's words.
        xs = [torch.randn(2, 3) for _ in range(high + 1)]
        with pytest.raises(ValueError, match=f"inputs: expected {low} to {high} tensors, got {high + 1}"):
            getattr(mmfast.ops, op.name)(xs, *_parameters(op.name, xs))


def _parameters(name: str, xs: list[torch.Tensor]) -> tuple:
    total = sum(x.shape[-1] for x in xs)
    if name == "concat_linear":
        return torch.randn(4, total), None
    if name == "gated_fusion":
        return torch.randn(total, total), None
    return [torch.randn(4, x.shape[-1]) for x in xs], None, torch.randn(len(xs), total)


def test_backend_info_and_mmfast_info_list_every_registered_op(capsys):
    from mmfast.cli import main

    assert list(mmfast.backend_info()) == NAMES
    assert main(["info", "--json"]) == 0  # in-process: what it lists is this process's state
    info = json.loads(capsys.readouterr().out)
    assert [row["op"] for row in info["ops"]] == NAMES
    assert list(info["backends"]) == NAMES
    for row in info["ops"]:
        low, high = input_limits(row["op"])
        assert row["inputs"] == (f"{low} to {high}" if high is not None else f"at least {low}")


def test_no_op_is_defined_twice():
    """The Triton kernels are kernels of the ops, not ops of their own."""
    schemas = [s.name for s in torch._C._jit_get_all_schemas() if s.name.startswith("mmfast::")]
    assert schemas, "no mmfast op is registered"
    assert not [name for name in schemas if "triton" in name]
    for name in NAMES:
        assert {f"mmfast::{name}", f"mmfast::{name}_forward", f"mmfast::{name}_backward"} <= set(schemas)
    stems = {
        n.removeprefix("mmfast::")
        .removesuffix("_forward_with_grads")
        .removesuffix("_forward")
        .removesuffix("_backward")
        for n in schemas
    }
    assert stems == set(NAMES)
    # The losses' forward that also returns the gradients (what autograd runs on the CPU).
    assert {n for n in schemas if n.endswith("_with_grads")} <= {
        f"mmfast::{n}_forward_with_grads" for n in NAMES
    }


def test_readme_documents_every_op_and_every_folder():
    readme = (REPO / "README.md").read_text()
    for name in NAMES:
        assert f"`{name}`" in readme
        assert f"csrc/ops/{name}/" in readme or "csrc/ops/<op>/" in readme
    for folder in ("kernels/", "csrc/engine/", "csrc/ops/", "mmfast/ops/", "mmfast/triton/", "mmfast/nn/"):
        assert f"`{folder}" in readme, folder
    for package in ("encoders", "models", "data", "train", "cli"):
        assert f"`mmfast/{package}/`" in readme, package


def test_old_reference_module_warns_and_forwards():
    from mmfast.ops import fusion_reference

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = fusion_reference.gated_fusion_reference
    assert old is mmfast.ops.gated_fusion_reference
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    with pytest.raises(AttributeError):
        fusion_reference.not_an_op  # noqa: B018
