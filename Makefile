# Front door. `make synth` and `make test` set up a fresh machine themselves (scripts/bootstrap.sh).
STACK ?= staging
PY := .venv/bin/python

.PHONY: synth test test-rehearsal test-all setup schema rehearse

synth:
	@scripts/bootstrap.sh runtime
	@mkdir -p out
	$(PY) -m synth $(STACK) --json out/$(STACK).json --markdown out/$(STACK).md

# The fast and real-tool tiers, in parallel (pytest-xdist). The lab tier (real Debian boxes,
# marker `rehearsal`) runs with `make test-rehearsal`, and both in sequence with `make test-all`
# (README, "The lab tier in CI": not in `make test` until it has had a green run).
#
# PYTHONDONTWRITEBYTECODE is emptied for the tests (this machine's image sets it): without
# bytecode caches every xdist worker rewrites and compiles every test module again, and every
# `python -m synth` a test starts compiles the program again (collection 8 CPU s -> 4 per
# worker; README, "Test cost"). The caches are __pycache__/ folders, ignored by git.
test:
	@scripts/bootstrap.sh dev
	PYTHONDONTWRITEBYTECODE= PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -n auto -m "not rehearsal"

# The lab tier in one pytest session, never in parallel: the modules that boot labs of their
# own first, then one staging lab shared by the rest (tests/rehearsal/conftest.py).
test-rehearsal:
	@scripts/bootstrap.sh dev
	PYTHONDONTWRITEBYTECODE= PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -p no:xdist -m rehearsal

test-all: test test-rehearsal

setup:
	@scripts/bootstrap.sh dev

# Converge every host of STACK on local Debian boxes, twice, and check them (README, Rehearsal).
rehearse:
	@scripts/bootstrap.sh dev
	@mkdir -p out
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m synth rehearse $(STACK) --json out/rehearsal-$(STACK).json

schema:
	$(PY) -m stacks.schema > docs/stack-config.schema.json
