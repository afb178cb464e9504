# The two commands of the README. Both create .venv from pyproject.toml when it is missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: env test test-slow lint demo clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

env: $(BIN)/.installed

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The default suite: lint, format, then every test not marked slow.
test: lint
	$(BIN)/python -m pytest -q

test-slow: env
	$(BIN)/python -m pytest -q -m slow

# Generate the synthetic benchmark, train ISSF on it, evaluate, print the table.
demo: env
	$(BIN)/python -m launch.demo --workdir $${WORKDIR:-runs/demo}

clean:
	rm -rf $(VENV) runs
