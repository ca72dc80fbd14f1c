PY ?= python3
PIP ?= $(PY) -m pip

.PHONY: install demo test lint

install:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"

demo: install
	$(PY) -m clustvit demo

test: install
	$(PY) -m pytest -n 2 tests

lint:
	$(PY) -m ruff check clustvit tools tests train.py test.py
