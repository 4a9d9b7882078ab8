"""Extension loading, the reference fallback and backend_info."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import mmfast


def _run(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(script)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_backend_info_names_the_compiled_cpu_kernel():
    info = mmfast.backend_info()
    assert info["concat_linear"]["cpu"].startswith("cpp")
    assert "cuda" in info["concat_linear"]


def test_reference_backend_is_used_when_asked_for_without_warning():
    result = _run(
        """
        import warnings, torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import mmfast
            from mmfast.ops import concat_linear, concat_linear_reference
            xs = [torch.randn(3, 4, requires_grad=True), torch.randn(3, 2)]
            w, b = torch.randn(5, 6, requires_grad=True), torch.randn(5)
            y = concat_linear(xs, w, b, "gelu")
            y.sum().backward()
            assert torch.equal(y, concat_linear_reference(xs, w, b, "gelu"))
        print([str(w.message) for w in caught if "mmfast" in str(w.message)])
        print(mmfast.backend_info()["concat_linear"]["cpu"])
        """,
        MMFAST_BACKEND="reference",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warnings_line, cpu = result.stdout.strip().splitlines()
    assert warnings_line == "[]"
    assert cpu.startswith("reference (MMFAST_BACKEND=reference")


def test_missing_extension_falls_back(tmp_path):
    """A copy of the package without the compiled module still imports and computes."""
    import shutil

    package = tmp_path / "mmfast"
    shutil.copytree(
        os.path.dirname(mmfast.__file__), package, ignore=shutil.ignore_patterns("_C*.so", "__pycache__")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
            import sys, warnings, torch
            # The editable install's import hook would find the source tree: look only at the copy.
            sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
            warnings.simplefilter("error", RuntimeWarning)
            try:
                import mmfast
            except RuntimeWarning as w:
                print("warned:", w)
            warnings.simplefilter("ignore")
            import mmfast
            from mmfast.ops import concat_linear
            print(concat_linear([torch.ones(2, 3)], torch.ones(4, 3), None, "relu").sum().item())
            print(mmfast.backend_info()["concat_linear"]["cpu"])
            """
            ),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("warned:") and "could not be loaded" in lines[0]
    assert lines[1] == "24.0"
    assert lines[2].startswith("reference (the compiled extension")


def test_unknown_backend_value_warns_and_uses_auto():
    result = _run(
        """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import mmfast
        print([str(w.message) for w in caught if "MMFAST_BACKEND" in str(w.message)])
        print(mmfast.backend_info()["concat_linear"]["cpu"])
        """,
        MMFAST_BACKEND="fastest",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    warnings_line, cpu = result.stdout.strip().splitlines()
    assert "'fastest' is not one of" in warnings_line and cpu.startswith("cpp")
