# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test test-all demo lint format wheel clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[train,dev]'
	rm -f $(VENV)/.installed-* && touch $@

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

# dist/edge_mtl-VERSION-py3-none-any.whl: the runtime, every stage and the built-in configs.
wheel:
	rm -f dist/edge_mtl-*.whl
	$(PYTHON) -m pip wheel -q --disable-pip-version-check --no-deps -w dist .

# Removes the demo's synthetic scenes (data/) too; other runs cache theirs in $EDGE_MTL_CACHE,
# else $XDG_CACHE_HOME/edge-mtl or ~/.cache/edge-mtl: delete that folder to clear it.
clean:
	rm -rf $(VENV) runs demo data dist build .pytest_cache .ruff_cache
