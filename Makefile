# One-command set-up: each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast check docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	@# the face recipes' weights: npm package @vladmandic/face-api, pinned by version and SHA-256
	$(VENV)/bin/diycnn weights fetch || echo "warning: face weights or TensorFlow.js not fetched (needs npm): the face recipes say how to get them, TF.js exports are written unchecked" >&2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/diycnn demo

# Test-only JavaScript (npm): full TensorFlow.js and Teachable Machine's image library, to run face-api.js and
# TM's own loader in the tests. The TF.js packages that check exports come with `make install` (diycnn weights fetch).
TFJS := tests/js/node_modules/.installed

$(TFJS): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/js --no-audit --no-fund --silent && touch $(TFJS) \
	  || echo "warning: npm ci failed: the TensorFlow.js export tests will be skipped" >&2; \
	else echo "warning: npm not found: the TensorFlow.js export tests will be skipped" >&2; fi

test: $(STAMP) $(TFJS) check
	$(PY) -m pytest -q

# Static checks, part of `make test` (and so of CI): ruff (imports inside functions only for heavy
# libraries, each with its reason), mypy (strict on the entry points and the run's records), the
# import-layer contracts (also a test), and the docs site built with no warning (broken links fail).
check: $(STAMP) docs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The fast lane for development: everything but the tests marked slow (real data, browsers,
# TF.js, multi-process training); CI runs `make test`, the whole suite.
test-fast: $(STAMP) $(TFJS)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs site .pytest_cache tests/js/node_modules
