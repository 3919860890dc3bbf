# The two commands of the README. Both set up .venv first (a no-op when nothing changed).
.PHONY: setup run test bench docs

setup:
	bash scripts/setup.sh

# The main job: several agents sharing the embedded Gemma model through the kernel (no keys, no network).
run: setup
	.venv/bin/aios run

# The whole test suite (unit, integration with the real frameworks and the real local model).
test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m aios.bench.studies.schedulers
