# tfuq: the two commands a newcomer runs are `make demo` and `make test`.
# Both create .venv (Python 3.11) and install the package; a re-run reuses
# .venv while setup.cfg and pyproject.toml are unchanged.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfuq-installed
DEMO_CONFIG ?= configs/demo_mr2ct.ini
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND := tensorflow

.PHONY: demo validate test test-slow lint defaults clean-venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tfuq demo $(DEMO_CONFIG)

# The papers' uncertainty checks on the demo model (trains it first if `make demo` has not):
# noise sweep, zero-cube anomalies, aleatoric vs the phantom's true noise, and the training-set
# size sweep (three more models). Exit status from [EVALUATION] required_checks.
validate: $(STAMP)
	$(BIN)/tfuq train $(DEMO_CONFIG)
	$(BIN)/tfuq validate-uq $(DEMO_CONFIG) --set EVALUATION.overwrite=true

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check tfuq tests examples
	$(BIN)/ruff format --check tfuq tests examples

clean-venv:
	rm -rf $(VENV)

defaults: $(STAMP)
	$(BIN)/python -c "from tfuq.config import render_defaults; open('configs/defaults.ini', 'w').write(render_defaults())"
