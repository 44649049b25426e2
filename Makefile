# Front door. `make synth` and `make test` set up a fresh machine themselves (scripts/bootstrap.sh).
STACK ?= staging
PY := .venv/bin/python

.PHONY: synth test setup schema rehearse

synth:
	@scripts/bootstrap.sh runtime
	@mkdir -p out
	$(PY) -m synth $(STACK) --json out/$(STACK).json --markdown out/$(STACK).md

test:
	@scripts/bootstrap.sh dev
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m pytest

setup:
	@scripts/bootstrap.sh dev

# Converge every host of STACK on local Debian boxes, twice, and check them (README, Rehearsal).
rehearse:
	@scripts/bootstrap.sh dev
	@mkdir -p out
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m synth rehearse $(STACK) --json out/rehearsal-$(STACK).json

schema:
	$(PY) -m stacks.schema > docs/stack-config.schema.json
