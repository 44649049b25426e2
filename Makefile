# Front door. `make synth` and `make test` set up a fresh machine themselves (scripts/bootstrap.sh).
STACK ?= staging
PY := .venv/bin/python

.PHONY: synth test test-rehearsal test-all setup schema rehearse

synth:
	@scripts/bootstrap.sh runtime
	@mkdir -p out
	$(PY) -m synth $(STACK) --json out/$(STACK).json --markdown out/$(STACK).md

# The fast and real-tool tiers, in parallel (pytest-xdist); then, in one pytest session, the
# lab tier's rehearsal of staging (every host of the four products on real Debian boxes, built
# from nothing on a fresh machine, converged twice, checked with testinfra, the reachability
# matrix probed) and the host broken on purpose (README, "The lab tier in CI"). The rest of the
# lab tier (backups, drills, zero-downtime, the box and image tests) runs with
# `make test-rehearsal`; `make test-all` runs both.
#
# PYTHONDONTWRITEBYTECODE is emptied for the tests (this machine's image sets it): without
# bytecode caches every xdist worker rewrites and compiles every test module again, and every
# `python -m synth` a test starts compiles the program again (collection 8 CPU s -> 4 per
# worker; README, "Test cost"). The caches are __pycache__/ folders, ignored by git.
LAB_IN_CI := tests/rehearsal/test_rehearse_broken.py tests/rehearsal/test_rehearse_staging.py

test:
	@scripts/bootstrap.sh dev
	PYTHONDONTWRITEBYTECODE= PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -n auto -m "not rehearsal"
	PYTHONDONTWRITEBYTECODE= PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -p no:xdist -m rehearsal $(LAB_IN_CI)

# The lab tier in one pytest session, never in parallel: the modules that boot labs of their
# own first, then one staging lab shared by the rest (tests/rehearsal/conftest.py).
test-rehearsal:
	@scripts/bootstrap.sh dev
	PYTHONDONTWRITEBYTECODE= PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -p no:xdist -m rehearsal

# `make test`, then the lab tier without what `make test` ran of it.
test-all: test
	PYTHONDONTWRITEBYTECODE= PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -p no:xdist -m rehearsal \
		$(addprefix --ignore=,$(LAB_IN_CI))

setup:
	@scripts/bootstrap.sh dev

# Converge every host of STACK on local Debian boxes, twice, and check them (README, Rehearsal).
rehearse:
	@scripts/bootstrap.sh dev
	@mkdir -p out
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m synth rehearse $(STACK) --json out/rehearsal-$(STACK).json

schema:
	$(PY) -m stacks.schema > docs/stack-config.schema.json
