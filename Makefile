# The two commands a newcomer needs; both set the machine up first.
.PHONY: run test lint bootstrap

bootstrap:
	@./scripts/bootstrap.sh

## make run: set up, then run Kafka, PostgreSQL and the services with a demo hospital.
run: bootstrap
	@./scripts/run.sh

## make test: set up, lint, type-check, then unit, integration and e2e tests on real servers.
test: bootstrap lint
	@.venv/bin/pytest

lint:
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy
	@.venv/bin/handoff schemas check
	@promtool check config --lint=all deploy/prometheus/prometheus.yml >/dev/null
	@promtool check rules deploy/prometheus/alerts.yml >/dev/null
	@promtool test rules deploy/prometheus/tests/*.yml
	@.venv/bin/python scripts/check_k8s.py
