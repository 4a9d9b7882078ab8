"""Ahead-of-time compilation of the Triton kernels for sm_80 and sm_90 without a GPU
(`mmfast.triton.aot`): a few real compiles in a process of their own (the test process builds
interpreted kernels), and the parsing and bookkeeping around them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from mmfast.triton import aot  # noqa: E402  (no kernel is imported by this module)

ROOT = Path(__file__).resolve().parents[1]

# One autotuned tl.dot kernel in float16 and with TF32 dots, one fixed-tile kernel, one kernel
# shared by two ops (float64): four cases, eight compiles.
SELECTED = (
    r"gated_fusion_forward_kernel float16 M=3 .* BLOCK_R=32 BLOCK_D=64 BLOCK_K=64, 8 warps",
    r"gated_fusion_logit_grad_kernel bfloat16 M=8 ",
    r"siglip_loss contrastive_forward_kernel float32 tf32 .* BLOCK_M=64 BLOCK_N=64 BLOCK_K=16, 4 warps",
    r"clip_loss contrastive_grad_kernel float64 .* BLOCK_M=32 BLOCK_N=32 BLOCK_K=32 BLOCK_DO=64,",
)
MODULES = ("mmfast.triton.gated_fusion", "mmfast.triton.clip_loss", "mmfast.triton.siglip_loss")


def _aot(*args: str, cache: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "mmfast.triton.aot", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_compiles_for_sm80_and_sm90_through_the_triton_cache(tmp_path):
    cache = tmp_path / "cache"
    selection = [a for m in MODULES for a in ("--module", m)] + [a for s in SELECTED for a in ("--only", s)]
    run = _aot("--arch", "80,90", "--jobs", "2", "--output-dir", str(tmp_path), *selection, cache=cache)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((tmp_path / "TRITON_AOT.json").read_text())
    rows = report["rows"]
    assert len(rows) == 2 * len(SELECTED)
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90a"}
    assert {r["dtype"] for r in rows} == {"float16", "bfloat16", "float32 tf32", "float64"}
    for row in rows:
        assert row["status"] == "ok", row
        assert 16 <= row["registers"] <= 255
        assert row["spill_stores"] == row["spill_loads"] == 0
        limit = aot.SHARED_MEMORY_LIMITS[80 if row["arch"] == "sm_80" else 90]
        assert row["shared_limit"] == limit and 0 <= row["shared"] <= limit
        assert not row["cached"]
        # The cubin and the ptxas log stay in Triton's cache for inspection.
        cubin = cache / row["cubin"]
        assert cubin.name == f"{row['kernel']}.cubin" and cubin.stat().st_size > 0
        assert (cubin.parent / f"{row['kernel']}.ptxas.log").is_file()
    # The tl.dot kernels stage their operand tiles in shared memory.
    assert all(r["shared"] > 0 for r in rows if r["kernel"] != "gated_fusion_logit_grad_kernel")
    markdown = (tmp_path / "TRITON_AOT.md").read_text()
    assert "- Machine: " in markdown and "triton " in markdown and "ptxas " in markdown
    assert markdown.count("| ok |") == len(rows)

    # Again from the cache: the same numbers, from the ptxas logs kept beside the cubins.
    again_dir = tmp_path / "again"
    again = _aot("--arch", "80,90", "--jobs", "1", "--output-dir", str(again_dir), *selection, cache=cache)
    assert again.returncode == 0, again.stdout + again.stderr
    cached = json.loads((again_dir / "TRITON_AOT.json").read_text())["rows"]
    assert all(r["cached"] for r in cached)
    fields = ("kernel", "config", "dtype", "arch", "registers", "spill_stores", "spill_loads", "shared")
    assert [[r[f] for f in fields] for r in cached] == [[r[f] for f in fields] for r in rows]


def test_lists_the_cases_of_every_op_with_triton_kernels(tmp_path):
    """Every registered op's Triton module declares its launches (the protocol of `mmfast.triton.aot`),
    and every autotuned kernel's cases are configs of its own autotune list."""
    run = _aot("--list", cache=tmp_path / "cache", timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    modules = {line.split()[0] for line in lines[:-1]}
    expected = {
        "mmfast.triton.attention_fusion",
        "mmfast.triton.clip_loss",
        "mmfast.triton.gated_fusion",
        "mmfast.triton.siglip_loss",
    }
    assert expected <= modules
    assert lines[-1].endswith("cases x 2 architectures")
    assert len(set(lines[:-1])) == len(lines) - 1


def test_parses_the_ptxas_log_and_cuobjdump():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'other_kernel' for 'sm_80'
ptxas info    : Function properties for other_kernel
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 400 bytes cmem[0]
ptxas info    : Compiling entry function 'my_kernel' for 'sm_90a'
ptxas info    : Function properties for my_kernel
    216 bytes stack frame, 216 bytes spill stores, 232 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 432 bytes cmem[0]
"""
    assert aot.parse_ptxas_log(log, "my_kernel") == {
        "registers": 255,
        "stack": 216,
        "spill_stores": 216,
        "spill_loads": 232,
    }
    assert aot.parse_ptxas_log(log, "other_kernel")["registers"] == 40
    assert aot.parse_ptxas_log(log, "missing_kernel") is None
    dump = """
Resource usage:
 Common:
  GLOBAL:0
 Function my_kernel:
  REG:203 STACK:16 SHARED:0 LOCAL:0 CONSTANT[0]:432 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    assert aot.parse_resource_usage(dump, "my_kernel") == {
        "registers": 203,
        "stack": 16,
        "static_shared": 0,
        "local": 0,
    }
    assert aot.parse_resource_usage(dump, "other") is None


def test_spills_and_shared_memory_over_the_limit_fail():
    row = {"spill_stores": 0, "spill_loads": 0, "shared": 163 * 1024, "shared_limit": 163 * 1024}
    assert aot.verdict(row) == "ok"
    assert aot.verdict({**row, "spill_loads": 4}) == "spill"
    assert aot.verdict({**row, "spill_stores": 4}) == "spill"
    assert aot.verdict({**row, "shared": 163 * 1024 + 1}) == "shared memory"
    rows = [
        {"kernel": "k", "arch": "sm_80", "config": "c", "dtype": "float16", "shape": "s", "status": "ok",
         "registers": 64, **row},
        {"kernel": "k", "arch": "sm_80", "config": "d", "dtype": "float32", "shape": "s", "status": "spill",
         "registers": 255, **row, "spill_stores": 8},
        {"kernel": "k", "arch": "sm_90a", "config": "e", "dtype": "float32", "shape": "s", "status": "error",
         "error": "CompilationError: boom"},
    ]  # fmt: skip
    assert [r["config"] for r in aot.failures(rows)] == ["d", "e"]
    text = aot.markdown(rows, {"Date": "today"})
    assert "## Failures" in text and "CompilationError: boom" in text and "8 B spill stores" in text


def test_arguments_are_specialized_like_triton_launches_them():
    """The signature and attributes of a case follow the launcher's own specialization rules."""
    try:
        from triton._C.libtriton import native_specialize_impl
        from triton.backends.compiler import BaseBackend
    except ImportError:  # pragma: no cover - an older or newer triton without it
        pytest.skip("this triton has no native_specialize_impl to compare with")
    import torch

    values = [0, 1, 2, 16, 17, -16, 4096, 2**31 - 16, 2**31, 2**40 + 3, 2**63, None, True, 0.5]
    values += [(1, 32, 5), (None,)]
    for value in values:
        for specialize in (True, False):
            assert aot.specialize(value, specialize) == native_specialize_impl(
                BaseBackend, value, False, specialize, True
            ), (value, specialize)
    tensor = torch.empty(8, dtype=torch.bfloat16)
    expected = native_specialize_impl(BaseBackend, tensor, False, True, True)
    assert aot.specialize(aot.Ptr("bfloat16")) == expected
    pair = (torch.empty(4), torch.empty(4, dtype=torch.float16))
    expected = native_specialize_impl(BaseBackend, pair, False, True, True)
    assert aot.specialize((aot.Ptr("float32"), aot.Ptr("float16"))) == expected


def test_variants_cover_every_dtype_and_both_float32_dot_precisions():
    names = [(v.dtype, v.precision, v.name) for v in aot.variants()]
    assert names == [
        ("float32", "ieee", "float32"),
        ("float32", "tf32", "float32 tf32"),
        ("float16", "ieee", "float16"),
        ("bfloat16", "ieee", "bfloat16"),
    ]
    with pytest.raises(ValueError, match="unknown dtype"):
        aot.Ptr("float8")
