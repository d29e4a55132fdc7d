# The two commands of the README. Both create the virtual environment (.venv) with the pinned
# dependencies on first use; Python >= 3.11 and make are all a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint bench reference readme clean-venv

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-cache-dir -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

## run: the default workflow (config/config.yaml): every table and figure under results/
run: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --cores $(CORES) $(ARGS)

## test: unit tests (2 processes), then the workflow tests (real Snakemake, one at a time: they
## share one full run of config/digits_osr.yaml), including the SLURM test where root + apt
test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH python -m pytest tests -m "not workflow" -n 2 $(ARGS)
	PATH=$(CURDIR)/$(BIN):$$PATH python -m pytest tests -m workflow $(ARGS)

lint: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH sh -c 'ruff check src tests benchmarks examples && ruff format --check src tests benchmarks examples && snakefmt --check Snakefile workflow && snakemake --lint'

## reference: rerun each benchmark of REFERENCE_CONFIGS and rewrite its committed reference,
## results/reference/<bench>/ (table CSV/Markdown + manifest.json of sha256s), then the README
REFERENCE_CONFIGS ?= config/config.yaml config/digits_osr.yaml
reference: $(STAMP)
	for c in $(REFERENCE_CONFIGS); do \
	  PATH=$(CURDIR)/$(BIN):$$PATH snakemake --cores $(CORES) \
	    write_reference --configfile $$c $(ARGS) || exit 1; \
	done
	$(MAKE) readme

## readme: regenerate the README's "What a default run prints" tables and claim verdicts from the mnist_osr reference
## (the digits_osr one while mnist_osr has none)
readme: $(STAMP)
	ref=results/reference/mnist_osr; test -f $$ref/manifest.json || ref=results/reference/digits_osr; \
	PATH=$(CURDIR)/$(BIN):$$PATH sure-ood verify --readme README.md --reference $$ref

bench: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH python benchmarks/run_all.py
