# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment, install the pinned stack and warm numba's cache first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: setup test test-fast demo bench clean dataflow-image worker-pool

setup: $(STAMP)

# Reinstall when the pins or the C extension change. torch==2.13.0 resolves to the CPU build on this
# machine's disk. setup.py builds shards.format._jpeg_region against the system's libjpeg-turbo headers
# (Debian/Ubuntu: libjpeg-dev) where they exist; without them the input decodes whole frames.
$(STAMP): pyproject.toml setup.py shards/format/_jpeg_region.c
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (Python 3.11) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,test]'
	# numba compiles librosa's kernels on first use (~14 s); pay it once here, not in each Beam worker.
	$(BIN)/python -m pipelines.warmup
	touch $(STAMP)

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/mbt demo --output $(DEMO_OUT)

bench: setup
	$(BIN)/mbt bench ingest
	$(BIN)/mbt bench input

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache

# Dataflow worker image (needs a Docker engine; see README "Scaling out"). BuildKit reads
# docker/Dockerfile.dataflow.dockerignore, which keeps .venv out of the build context.
IMAGE ?= mbt-ingest:latest
dataflow-image: requirements-worker.txt
	DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile.dataflow -t $(IMAGE) .

# Beam's --requirements_file for workers: pyproject.toml's base dependencies, the one source of truth.
requirements-worker.txt: pyproject.toml
	@{ echo "# What an ingestion worker needs: pyproject.toml's base [project] dependencies, verbatim (no JAX/torch)."; \
	  echo "# Regenerate with \`make requirements-worker.txt\`; tests/pipelines/test_dataflow_options.py checks that"; \
	  echo "# the two agree. Pass it as --requirements_file=requirements-worker.txt together with"; \
	  echo "# --setup_file=./setup.py (which ships this project's code), or bake both into the worker image"; \
	  echo "# (docker/Dockerfile.dataflow)."; \
	  $(PY) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")'; \
	} > $@

# An SDK worker pool for `mbt ingest --runner=PortableRunner --job_endpoint=embed
# --environment_type=EXTERNAL --environment_config=localhost:$(PORT)`. It starts each worker as plain
# `python`, so the venv goes first on PATH.
PORT ?= 50000
worker-pool: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m apache_beam.runners.worker.worker_pool_main --service_port=$(PORT)
