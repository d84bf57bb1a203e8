# AILB. `make run` and `make test` work on a fresh clone with only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config/ailb.yaml

.PHONY: run test lint typecheck check binary smoke release bench soak proto clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "AILB needs Python 3.11 or newer" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(STAMP)  ## start AILB with config/ailb.yaml
	$(BIN)/ailb --config $(CONFIG)

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

binary: $(STAMP)  ## dist/ailb: one executable with everything inside
	$(BIN)/python scripts/release.py binary  # PyInstaller, with the commit and build date inside

smoke: binary  ## run the built binary as a subprocess and exercise it
	$(BIN)/python tests/smoke_binary.py dist/ailb

release: $(STAMP)  ## dist/release/: the binary (rebuilt if stale), its .sha256, CycloneDX SBOM, BUILD_INFO.json
	$(BIN)/python scripts/release.py

bench: $(STAMP)  ## gateway vs bare pass-through vs direct, see docs/benchmarks.md
	$(BIN)/python bench/run.py

soak: $(STAMP)  ## 10 minutes of load with faults and a SIGKILL of AILB (SOAK_SECONDS=...), see docs/soak.md
	$(BIN)/python bench/soak.py

proto: $(STAMP)  ## regenerate ailb/grpc_api/gen and tests/grpc_stubs from proto/ (committed)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache
