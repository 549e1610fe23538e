# Two commands set everything up on a fresh machine (Python 3.10+ with venv):
#   make demo   - create .venv with the pinned packages, then run the embedded demo
#   make test   - create .venv if needed, then run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean-venv

$(STAMP): requirements/pinned.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/pinned.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/glims demo --out demo_out

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q Testing

clean-venv:
	rm -rf $(VENV)
