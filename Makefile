# esmm — make all (demo pipeline), make test, make bench, make clean.
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target
BIN := $(CARGO_TARGET_DIR)/release/esmm
PIPELINE ?= pipeline/demo.yaml
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export ESMM_PYTHON := $(PY)
# The real tools of the scheduler and CLI tests, pinned, each in its own venv, made once and kept
# outside the clone (a fresh clone in CI reuses them): Apache Airflow and the DuckDB CLI.
TOOLS_CACHE ?= $(HOME)/.cache/esmm
export ESMM_AIRFLOW_VENV ?= $(TOOLS_CACHE)/airflow-venv
export ESMM_DUCKDB_CLI_VENV ?= $(TOOLS_CACHE)/duckdb-cli-venv

.PHONY: all build test pyenv tools bench quality clean

# The demo also trains the paper's baselines and the conversion models after ESMM on the same data
# (their data stages are up to date, so skipped), each at the defaults, then `make all` ends with
# the report of the run directory (REPORT_RUN; by default the parent of the pipeline's
# paths.metrics): Table 2 with every kind. BASELINES= skips them.
ifeq ($(PIPELINE),pipeline/demo.yaml)
BASELINES ?= pipeline/demo_naive.yaml pipeline/demo_ns.yaml pipeline/demo_escm2_ips.yaml pipeline/demo_escm2_dr.yaml pipeline/demo_dcmt.yaml pipeline/demo_aitm.yaml
REPORT_RUN ?= data/demo
endif

all: build
	$(BIN) run $(PIPELINE)
	@for p in $(BASELINES); do echo "$(BIN) run $$p"; $(BIN) run $$p || exit 1; done
	$(BIN) report $(if $(REPORT_RUN),--run $(REPORT_RUN),--config $(PIPELINE))

build:
	$(CARGO) build --release --locked

# Python readers (pyarrow, duckdb, xxhash) that check our Parquet and hashing independently.
pyenv: $(VENV)/.ok
$(VENV)/.ok: tests/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r tests/requirements.txt
	touch $@

# tests/tool_venv.sh installs a tool only when its venv is missing or its requirements changed,
# and prints the wall time it took; exit 3 = PyPI unreachable: the tests of that tool skip, saying so.
tools:
	@bash tests/tool_venv.sh $(ESMM_AIRFLOW_VENV) tests/requirements-airflow.txt || [ $$? -eq 3 ]
	@bash tests/tool_venv.sh $(ESMM_DUCKDB_CLI_VENV) tests/requirements-duckdb-cli.txt || [ $$? -eq 3 ]

test: pyenv tools
	$(CARGO) test --release --locked

# One table for every stage, with the PyTorch reference (bash ../shared/peers/setup.sh makes its
# venv) and the sgemm ceiling; sizes via BENCH_* (see tests/bench.sh). Run it on a quiet machine.
# BENCH_FULLSCALE=1 then runs the whole chain at Ali-CCP's full scale (tests/fullscale.sh:
# time per stage, peak memory, disk, test AUCs; ~50 min and ~40 GB).
bench: build pyenv
	$(CARGO) build --release --locked --example towers_bench
	bash tests/bench.sh $(BIN)
	if [ "$${BENCH_FULLSCALE:-0}" = 1 ]; then bash tests/fullscale.sh $(BIN); fi

# The quality sweep: esmm's defaults, the conversion family (each kind, on the towers and over the
# mixture of experts) and the peers on four generated worlds, one table of test AUCs beside each
# world's oracles, the counterfactual scores and the valid yardstick (tests/quality.sh;
# QUALITY_* sizes and settings, ~2½ h on 2 cores).
quality: build pyenv
	bash tests/quality.sh $(BIN)

clean:
	rm -rf data/demo $(CURDIR)/target $(VENV)
