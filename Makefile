# To run: make tune   (set-up + the quickstart tuning job)   |   make test   (set-up + lint + tests)
VENV   ?= .venv
PY     := $(VENV)/bin/python
CAVIAR := $(VENV)/bin/caviar
# NSMC offline: point NSMC_DIR at a folder holding ratings_train.txt and ratings_test.txt.
ifeq ($(NSMC_DIR),)
  ifneq ($(wildcard ../shared/data/nsmc/ratings_train.txt),)
    export NSMC_DIR := $(abspath ../shared/data/nsmc)
  endif
endif

.PHONY: setup tune train test lint format clean

# --no-deps on the last line: requirements-dev.txt has already installed the pinned set
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.installed

tune: setup
	$(CAVIAR) tune tune_jobs/quickstart.yaml

train: setup
	$(CAVIAR) train tune_jobs/quickstart.yaml

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q -p no:cacheprovider -n 3 --dist loadscope --durations=15

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
