# racestack: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.racestack-installed
export YOLO_OFFLINE ?= 1

.PHONY: venv demo test bench lint gpu-check engines clean-venv

venv: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml
	@scripts/ensure_system_deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@$(PY) -c "import rclpy, open3d, torch, cvxpy, onnxruntime, rosbags, ultralytics" \
		|| { echo "racestack: the venv does not import its dependencies (see above)"; exit 1; }
	@touch $(STAMP)

demo: venv
	$(VENV)/bin/racestack demo

test: venv
	$(VENV)/bin/ruff check .
	PY=$(PY) scripts/run_tests.sh

bench: venv
	$(PY) -m bench

lint: venv
	$(VENV)/bin/ruff check .

engines: venv
	$(VENV)/bin/racestack build-engines all

gpu-check: venv
	scripts/gpu_check.sh

clean-venv:
	rm -rf $(VENV)
