"""The build record and the PyTorch-version check that guards loading the compiled extension."""

from __future__ import annotations

import json

import torch

from mmfast._version_check import BUILD_CONFIG_PATH, read_build_config, torch_mismatch

CPU_BUILD = {"torch_version": "2.13.0+cpu", "torch_cuda": None, "with_cuda": False, "cuda_arch_list": None}
CUDA_BUILD = {
    "torch_version": "2.13.0+cu128",
    "torch_cuda": "12.8",
    "with_cuda": True,
    "cuda_arch_list": "8.0;9.0",
}


def test_the_build_in_this_tree_recorded_the_running_torch():
    record = read_build_config()
    assert record is not None, f"{BUILD_CONFIG_PATH} is missing: `make build` writes it"
    assert record["torch_version"] == torch.__version__
    assert torch_mismatch() is None


def test_same_release_with_another_local_label_matches():
    assert torch_mismatch(CPU_BUILD, torch_version="2.13.0+cu128", torch_cuda="12.8") is None
    assert torch_mismatch(CPU_BUILD, torch_version="2.13.0", torch_cuda=None) is None
    assert torch_mismatch(CUDA_BUILD, torch_version="2.13.0+cu126", torch_cuda="12.6") is None


def test_another_release_is_refused_with_both_versions_named():
    message = torch_mismatch(CPU_BUILD, torch_version="2.14.0+cpu", torch_cuda=None)
    assert message is not None
    assert "2.13.0+cpu" in message and "2.14.0+cpu" in message
    assert "torch==2.13.0" in message


def test_cuda_build_on_a_cpu_torch_is_refused():
    message = torch_mismatch(CUDA_BUILD, torch_version="2.13.0+cpu", torch_cuda=None)
    assert message is not None and "CUDA 12.8" in message and "has no CUDA" in message


def test_missing_or_broken_record_means_unknown(tmp_path):
    assert read_build_config(tmp_path / "absent.json") is None
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    assert read_build_config(broken) is None
    unrelated = tmp_path / "unrelated.json"
    unrelated.write_text(json.dumps({"something": 1}), encoding="utf-8")
    assert read_build_config(unrelated) is None
