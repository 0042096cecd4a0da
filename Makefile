# Two entry points: `make report` (install + the main job) and `make test` (install + tests).
# torch is installed first and on its own: here `torch==2.13.0` resolves to a local CPU
# wheel; elsewhere override it, e.g. `make report TORCH_SPEC=torch` for your platform's build.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TL_SPEC ?= transformer-lens>=4.3,<5
# Exact tested versions; `make test CONSTRAINTS=` installs the newest releases instead.
CONSTRAINTS ?= constraints/tested.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
PROMPT ?= The sky is blue.
BIN := $(VENV)/bin

.PHONY: install install-dev report test test-strict lint docs pictures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet $(PIP_C) "$(TL_SPEC)" -e .

install-dev: install
	$(BIN)/pip install --quiet $(PIP_C) -e ".[dev,docs]"
	$(BIN)/pip install --quiet --no-deps tuned-lens==0.2.0  # the tuned-lens format tests write artifacts with it

report: install
	HF_HUB_OFFLINE=1 $(BIN)/lens-inversion report "$(PROMPT)" --out report.html

test: install-dev
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

# CI lane 1c: every annotation checked at run time (jaxtyping + beartype, see tests/shape_checks.py)
# and warnings from our own code, old spellings included, as errors.
test-strict: install-dev
	LI_STRICT_TESTS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile \
		--jaxtyping-packages=lens_inversion,shape_checks.checked  # warning filters: tests/conftest.py

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/python -m mypy  # [tool.mypy] in pyproject.toml: the package, no errors

docs: install-dev
	NO_MKDOCS_2_WARNING=1 HF_HUB_OFFLINE=1 $(BIN)/mkdocs build --strict

pictures: install
	HF_HUB_OFFLINE=1 $(BIN)/python docs/make_pictures.py

clean:
	rm -rf $(VENV) .venv-tl3 build dist *.egg-info .pytest_cache
