# Two entry points: `make demo` (set-up + the main job) and `make test` (set-up + the whole suite).
# Both create .venv when it is missing and (re)install the project when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fcs-installed
DEMO   := demo

.PHONY: demo test lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/fcs synth $(DEMO)/raw --episodes 12 --min-len 60 --max-len 100 --seed 0
	$(VENV)/bin/fcs validate $(DEMO)/raw
	$(VENV)/bin/fcs convert $(DEMO)/raw --to zarr -o $(DEMO)/store.zarr --workers 2 --verify
	$(VENV)/bin/fcs info $(DEMO)/store.zarr --preview 0 --out $(DEMO)/episode0.png
	$(VENV)/bin/fcs train --preset tiny --set data.store=$(DEMO)/store.zarr --set train.run_dir=$(DEMO)/run
	$(VENV)/bin/fcs plan-eval $(DEMO)/store.zarr --checkpoint $(DEMO)/run/checkpoints/latest.pt --pairs 4
	$(VENV)/bin/fcs plan-eval $(DEMO)/store.zarr --checkpoint $(DEMO)/run/checkpoints/latest.pt --closed-loop --episodes 6 --solvers icem

bench: $(STAMP)
	$(PY) benchmarks/validate.py
	$(PY) benchmarks/convert.py
	$(PY) benchmarks/loader.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/plan.py
	$(PY) benchmarks/fit.py

clean-demo:
	rm -rf $(DEMO)
