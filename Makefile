# Thin wrapper: every step lives in `python -m lecture_utils <command>` (see README for running without make).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: course test check lab student doctor setup clean

course: setup      ## execute every notebook at laptop scale into build/ (results: build/results.json)
	$(PY) -m lecture_utils course

test: setup        ## lint, then the whole test suite in parallel: helpers, every notebook at smoke scale, grading, browser
	$(PY) -m lecture_utils test

check: setup       ## the fast tier (minutes): lint and every test that executes no notebook and starts no server
	$(PY) -m lecture_utils check

lab: setup         ## JupyterLab on notebooks/
	$(PY) -m lecture_utils lab

student: setup     ## the student release in build/student/
	$(PY) -m lecture_utils student

doctor: setup      ## check versions, data and model
	$(PY) -m lecture_utils doctor

setup: $(STAMP)    ## create .venv and install the pinned dependencies (skipped when already done)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

clean:             ## remove what `make course` wrote to build/ (keeps build/student/ — your work —, .venv and the caches)
	rm -rf build/notebooks build/html build/results build/results.json
