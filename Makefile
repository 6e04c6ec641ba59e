# Two commands on a fresh machine with Python 3 and make: `make demo` and `make test`.
# The virtual environment sees system packages, so a torch the user already has is kept;
# otherwise torch==2.13.0 is installed (on the project's CI machines that is a local CPU wheel).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RUN ?= runs/demo-vae

.PHONY: install demo test lint benchmarks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/aediff train vae --data mnist5k --out $(RUN) --bottleneck 16 --max-minutes 3 --no-progress
	$(VENV)/bin/aediff reconstruct $(RUN) --out $(RUN)/reconstruction.png
	$(VENV)/bin/aediff sample $(RUN) --n 64 --out $(RUN)/samples.png
	@echo "Demo done: $(RUN)/reconstruction.png and $(RUN)/samples.png"

test: install
	$(PY) -m pytest tests

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
