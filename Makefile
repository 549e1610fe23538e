# Two commands set everything up on a fresh machine (Python 3.10+ with venv):
#   make demo   - create .venv with the pinned packages, then run the embedded demo
#   make test   - create .venv if needed, then run the test suite
#   make app    - create .venv if needed, then start the web app (docs/web_app.md)
#   make typecheck - mypy on the whole engine package (glims)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean-venv lint typecheck app

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

# Lint and format check (ruff; settings in pyproject.toml) of the engine, the Slicer module and the web app
LINTED := GLIMSSegmenter/glims GLIMSSegmenter/GLIMSSegmenterLib GLIMSSegmenter/GLIMSSegmenter.py GLIMSSegmenterWeb
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

# The type check of the whole engine package, subpackages included ([tool.mypy] in pyproject.toml)
typecheck: $(STAMP)
	$(VENV)/bin/mypy GLIMSSegmenter/glims

# The web app (GLIMSSegmenterWeb) on http://127.0.0.1:8080; e.g. make app APP_ARGS="--data ~/cases"
app: $(STAMP)
	$(PY) -m GLIMSSegmenterWeb $(APP_ARGS)

clean-venv:
	rm -rf $(VENV)
