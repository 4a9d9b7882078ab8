"""The CPU kernels' builds per capability (csrc/engine/cpu_capability.h): which one runs, forcing
the AVX2 one with MMFAST_CPU_CAPABILITY, bad values refused before anything loads, the op tests
passing on the AVX2 build too, and no AVX-512 instruction outside the AVX-512 build's code."""

from __future__ import annotations

import bisect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmfast import _backend

pytestmark = pytest.mark.skipif(not _backend.extension_loaded(), reason="compiled extension not built")

REPO = Path(__file__).resolve().parents[1]
X86 = _backend._cpu_flags() is not None
CPU_FLAGS = _backend._cpu_flags() or set()
HAS_AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= CPU_FLAGS


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=REPO, timeout=300
    )


def _capability_in_fresh_process(**env: str) -> dict:
    result = _run("import mmfast._backend as b; print(repr(b.cpu_capability()))", **env)
    assert result.returncode == 0, result.stderr
    return eval(result.stdout.strip())  # noqa: S307  (a dict literal we printed)


@pytest.mark.skipif(not X86, reason="the AVX2 / AVX-512 builds are x86-64 builds")
def test_both_x86_builds_are_in_the_library_and_the_best_one_this_cpu_runs_is_active():
    info = _backend.cpu_capability()
    assert info["built"] == ("AVX2", "AVX512")
    assert info["supported"] == (("AVX2", "AVX512") if HAS_AVX512 else ("AVX2",))
    if os.environ.get("MMFAST_CPU_CAPABILITY", "auto").lower() in ("", "auto"):
        aten = torch.backends.cpu.get_cpu_capability()
        expected = "AVX512" if HAS_AVX512 and aten == "AVX512" else "AVX2"
        assert info["active"] == expected
        assert info["reason"].startswith("auto")


@pytest.mark.skipif(not X86, reason="the AVX2 / AVX-512 builds are x86-64 builds")
def test_the_environment_forces_the_avx2_build_and_aten_capability_caps_the_automatic_choice():
    forced = _capability_in_fresh_process(MMFAST_CPU_CAPABILITY="avx2")
    assert forced["active"] == "AVX2" and forced["reason"] == "MMFAST_CPU_CAPABILITY=avx2"
    capped = _capability_in_fresh_process(MMFAST_CPU_CAPABILITY="auto", ATEN_CPU_CAPABILITY="avx2")
    assert capped["active"] == "AVX2" and capped["reason"].startswith("auto")
    if HAS_AVX512:
        # Forcing names the build, whatever ATen chose for its own kernels.
        both = _capability_in_fresh_process(MMFAST_CPU_CAPABILITY="AVX512", ATEN_CPU_CAPABILITY="avx2")
        assert both["active"] == "AVX512"


def test_an_unknown_capability_is_an_error_naming_the_variable_and_the_choices():
    result = _run("import mmfast", MMFAST_CPU_CAPABILITY="avx9")
    assert result.returncode != 0
    expected = "MMFAST_CPU_CAPABILITY='avx9' is not a CPU kernel build: expected one of auto, avx2, avx512"
    assert f"ValueError: {expected}" in result.stderr


@pytest.mark.skipif(not X86 or HAS_AVX512, reason="this CPU runs the AVX-512 build")
def test_forcing_a_build_this_cpu_cannot_run_is_an_error():
    result = _run("import mmfast", MMFAST_CPU_CAPABILITY="avx512")
    assert result.returncode != 0 and "this CPU lacks avx512" in result.stderr


def _op_test_files() -> list[str]:
    """Every registered op's own test files (tests/test_<op>*.py), as tools/check_cuda_wheel.py runs them."""
    from mmfast.ops import _registry

    files = set()
    for op in _registry.descriptors():
        files |= {str(path.relative_to(REPO)) for path in (REPO / "tests").glob(f"test_{op.name}*.py")}
    files |= {
        f"tests/test_{name}.py"
        for name in ("contrastive_losses", "fusion_cpu_engines", "activation_scalar_math")
    }
    return sorted(files)


@pytest.mark.skipif(not (X86 and HAS_AVX512), reason="the AVX2 build is what already ran")
def test_the_op_tests_pass_on_the_avx2_build():
    """The suite runs the AVX-512 build on this CPU; every op's tests run again on the AVX2 one."""
    files = _op_test_files()
    assert len(files) >= 6
    code = (
        "import sys, pytest, mmfast._backend as b\n"
        "assert b.cpu_capability()['active'] == 'AVX2', b.cpu_capability()\n"
        f"sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', '-m', 'not slow', *{files!r}]))\n"
    )
    result = _run(code, MMFAST_CPU_CAPABILITY="avx2")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 100, result.stdout[-2000:]


# Instructions only AVX-512 (EVEX) has: its registers (zmm, the upper 16 xmm / ymm, the mask
# registers), embedded broadcasts, and the mnemonics with no VEX form.
_AVX512_OPERAND = re.compile(r"%zmm\d+|%[xy]mm(?:1[6-9]|2\d|3[01])\b|%k[0-7]\b|\{1to\d+\}")
_AVX512_MNEMONIC = re.compile(
    r"^(?:k(?:mov|and|or|xor|not|shift|ortest|test|unpck|add)\w*|vpternlog\w+|vperm[it]2\w+|vp?compress\w+|"
    r"vp?expand\w+|vrndscale\w+|vrsqrt14\w+|vrcp14\w+|vgetexp\w+|vgetmant\w+|vscalef\w+|vfixupimm\w+|"
    r"vpmov(?:[qdw][bwd]|us\w+|s[qdw]\w+)|vcvtt?p[sd]2u?qq|vcvtu?qq2\w+|vcvt\w*2u\w+|vpabsq|vp(?:max|min)[su]q|"
    r"vpsraq|vpmullq|vpconflict\w+|vplzcnt\w+|v(?:insert|extract)[fi](?:32x4|64x2|32x8|64x4)|"
    r"vbroadcast[fi](?:32x[248]|64x[24])|vshuf[fi](?:32x4|64x2)|valign[dq]|vp?blendm\w+|vpcmpu?[bwdq]|"
    r"vfpclass\w+|vpro[lr]v?[dq]|vpermw|vpermb)\b"
)


def _disassembly(library: Path) -> tuple[dict[int, str], dict[int, int], dict[int, set[int]]]:
    """From objdump's disassembly (AT&T syntax), functions by address (local functions of two
    builds can share a name, e.g. "f [clone .isra.0]"): their names, their counts of AVX-512
    instructions, and the functions whose code refers to them (calls, jumps, addresses taken)."""
    command = ["objdump", "-d", "-C", "--no-show-raw-insn", str(library)]
    listing = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    names: dict[int, str] = {}
    counts: dict[int, int] = {}
    references: list[tuple[int, int]] = []  # (referrer, target address)
    function = -1
    for line in listing.splitlines():
        header = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
        if header:
            function = int(header.group(1), 16)
            names[function] = header.group(2)
            counts[function] = 0
            continue
        parts = line.split("\t")
        if len(parts) < 2 or function < 0:
            continue
        instruction = parts[-1].strip()
        if _AVX512_OPERAND.search(instruction) or _AVX512_MNEMONIC.match(instruction):
            counts[function] += 1
        # Operands that name code: "call 1234 <f>", "jmp 1234 <f+0x10>", "lea 0x10(%rip),%rax  # 1234 <f>".
        target = re.search(r"(?:^j\w+|^call\w*|#)\s+([0-9a-f]+) <", instruction)
        if target:
            references.append((function, int(target.group(1), 16)))
    starts = sorted(names)
    referrers: dict[int, set[int]] = {}
    for referrer, address in references:
        index = bisect.bisect_right(starts, address) - 1  # the function the address lies in
        if index >= 0 and starts[index] != referrer:
            referrers.setdefault(starts[index], set()).add(referrer)
    return names, counts, referrers


@pytest.mark.skipif(not X86, reason="x86-64 disassembly")
@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
def test_no_avx512_instruction_is_reachable_outside_the_avx512_build():
    """An AVX2-only CPU runs the shared engine, the AVX2 build and every build's static
    initializers. So a function with AVX-512 instructions must be the AVX-512 build's own
    (mmfast::cpu::AVX512::, at::vec::AVX512::, or a template over their types), or a header function
    (std::vector's, the schema inference's...) that only such code refers to: where both builds emit
    it, the linker keeps the first copy, the AVX2 build's, which is what this checks. A function
    no code refers to (a static initializer, reached from .init_array) must have none."""
    from mmfast import _C

    names, counts, referrers = _disassembly(Path(_C.__file__))
    contained: dict[int, bool] = {}

    def is_contained(function: int, visiting: frozenset = frozenset()) -> bool:
        if "AVX512" in names[function]:
            return True
        if function not in contained:
            callers = referrers.get(function, set()) - visiting
            contained[function] = bool(referrers.get(function)) and all(
                is_contained(c, visiting | {function}) for c in callers
            )
        return contained[function]

    reachable = sorted((names[f], n) for f, n in counts.items() if n and not is_contained(f))
    assert not reachable, f"AVX-512 instructions an AVX2-only CPU can reach: {reachable[:10]}"
    inside = [f for f, n in counts.items() if n and "mmfast::cpu::AVX512::" in names[f]]
    assert len(inside) >= 10, f"the AVX-512 build has {len(inside)} functions with AVX-512 code"
    avx2_build = [f for f in names if "mmfast::cpu::AVX2::" in names[f]]
    assert len(avx2_build) >= 10 and not any(counts[f] for f in avx2_build)
