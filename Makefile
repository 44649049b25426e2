# Front door. `make synth` and `make test` set up a fresh machine themselves (scripts/bootstrap.sh).
STACK ?= staging
PY := .venv/bin/python

.PHONY: synth test test-rehearsal setup schema rehearse

synth:
	@scripts/bootstrap.sh runtime
	@mkdir -p out
	$(PY) -m synth $(STACK) --json out/$(STACK).json --markdown out/$(STACK).md

# The fast and real-tool tiers, in parallel (pytest-xdist). The lab tier (real Debian boxes,
# marker `rehearsal`) runs alone with `make test-rehearsal`: its cold CI run is unmeasured (README).
test:
	@scripts/bootstrap.sh dev
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -n auto -m "not rehearsal"

test-rehearsal:
	@scripts/bootstrap.sh dev
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest -m rehearsal

setup:
	@scripts/bootstrap.sh dev

# Converge every host of STACK on local Debian boxes, twice, and check them (README, Rehearsal).
rehearse:
	@scripts/bootstrap.sh dev
	@mkdir -p out
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m synth rehearse $(STACK) --json out/rehearsal-$(STACK).json

schema:
	$(PY) -m stacks.schema > docs/stack-config.schema.json
