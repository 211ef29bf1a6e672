# The two commands a new user runs (see README):
#   make demo   set up ./venv and run the main job on the dev stack
#   make test   set up ./venv and run the test suite
VENV ?= venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m sgp_infra demo --stack dev

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) rendered .pytest_cache .hypothesis
