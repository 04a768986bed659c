# The two commands a newcomer needs; both set the machine up first.
.PHONY: run test lint bootstrap

bootstrap:
	@./scripts/bootstrap.sh

## make run: set up, then run Kafka, PostgreSQL and the services with a demo hospital.
run: bootstrap
	@./scripts/run.sh

## make test: set up, lint, type-check, then unit, integration, e2e, browser and chaos tests on real servers.
## The chaos suite runs alone first (it loads both cores); the rest is spread over TEST_WORKERS
## processes, whole files at a time, each with its own broker and database (decision 0030).
TEST_WORKERS ?= 3
test: bootstrap lint
	@.venv/bin/pytest -m chaos -rP tests/chaos  # -rP: print its report (counts, recovery per fault)
	@.venv/bin/pytest -m "not chaos" -n $(TEST_WORKERS) --dist loadfile

lint:
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy
	@.venv/bin/handoff schemas check
	@promtool check config --lint=all deploy/prometheus/prometheus.yml >/dev/null
	@promtool check rules deploy/prometheus/alerts.yml >/dev/null
	@promtool test rules deploy/prometheus/tests/*.yml
	@.venv/bin/python scripts/check_k8s.py
