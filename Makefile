# featuremass: the two README commands.
#   make demo   set up .venv and run the main job on the embedded simulated survey
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EXTRAS ?= dev,cnn,dask

.PHONY: demo test setup lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/featuremass demo --out demo-output

# The suite runs on TEST_WORKERS processes (pytest-xdist), a test file per worker.
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(BIN)/ruff check featuremass tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache
