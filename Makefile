# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint check clean setup screenshots

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "kvitto needs Python >= 3.10")'
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# An independent COSE verifier for the evidence tests: pycose 1.1 breaks with cbor2 >= 6, so it
# gets its own venv inside $(VENV) (ignored by git, removed by `make clean`).
PYCOSE := $(VENV)/pycose
$(PYCOSE)/.installed: | $(STAMP)
	@test -x $(PYCOSE)/bin/python || $(BIN)/python -m venv $(PYCOSE)
	$(PYCOSE)/bin/pip install -q 'pycose>=1.1,<2' 'cbor2<6'
	@touch $@

setup: $(STAMP) $(PYCOSE)/.installed
	@sh .ci/ensure-mosquitto

demo: $(STAMP)
	$(BIN)/kvitto demo

test: setup lint
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The web pages at 1280 and 390 px, as the browser tests see them (needs /usr/bin/chromium).
screenshots: $(STAMP)
	KVITTO_SCREENSHOTS=docs/img $(BIN)/pytest -q -p no:cacheprovider tests/test_web_browser.py \
	  tests/test_door_browser.py

lint: $(STAMP)
	$(BIN)/ruff check host tests bench
	$(BIN)/ruff format --check host tests bench
	$(BIN)/pyright -p pyrightconfig.json
	$(BIN)/python .ci/pyright_firmware.py
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV)
