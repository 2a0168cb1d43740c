# taskgate — the targets a newcomer would guess.
#   make run     the whole product (server with processor, gateway), on a local
#                Postgres and Redis of its own unless TASKGATE_DATABASE_URL/_REDIS_URL are set
#   make test    install everything into .venv, lint, check, and run the tests
#                (on throwaway local servers unless TASKGATE_TEST_DATABASE_URL/_REDIS_URL are set)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DBMATE := $(BIN)/dbmate
TASKGATE_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/taskgate
TASKGATE_REDIS_URL ?= redis://127.0.0.1:6379/0
export TASKGATE_DATABASE_URL TASKGATE_REDIS_URL
# make run uses the URLs only when the caller gave them (not the defaults above).
CALLER_URLS_ONLY := env $(if $(filter file,$(origin TASKGATE_DATABASE_URL)),-u TASKGATE_DATABASE_URL) \
                        $(if $(filter file,$(origin TASKGATE_REDIS_URL)),-u TASKGATE_REDIS_URL)

.PHONY: help install run migrate migrate-check migrate-schema proto proto-check buf-lint \
        lint fmt test test-only bench bench-auth bench-abuse bench-tasks bench-gateway bench-replicas \
        bench-events bench-tracing bench-fairness bench-claim-plan \
        run-gateway demo up down clean

help:
	@echo "make run            the whole product: Postgres+Redis if none given, migrations,"
	@echo "                    server with processor, gateway (Ctrl-C stops it all)"
	@echo "make demo           a walk through the running product: grpcurl, curl, the taskgate CLI"
	@echo "make test           install into .venv, then lint + checks + all tests"
	@echo "make lint           buf lint, gen/ drift, ruff, mypy"
	@echo "make fmt            ruff format + autofix"
	@echo "make proto          regenerate gen/ from proto/"
	@echo "make migrate        apply db/migrations to TASKGATE_DATABASE_URL"
	@echo "make migrate-check  migrations vs db/schema.sql, up -> down -> up"
	@echo "make migrate-schema rewrite db/schema.sql from the migrations"
	@echo "make bench-auth     GetUser (through auth) vs health Check, calls/s"
	@echo "make bench-tasks    task drain rate vs procrastinate, end to end, latency, image work"
	@echo "make bench-fairness one user's backlog vs another's tasks, fairness on/off, vs procrastinate"
	@echo "make bench-claim-plan  EXPLAIN ANALYZE of the claim as the backlog grows to 100,000"
	@echo "make bench-abuse    server RSS under anonymous max-size floods; login latency under an argon2 flood"
	@echo "make bench-gateway  GetTask over HTTP through the gateway vs gRPC, calls/s and CPU"
	@echo "make bench-replicas read-after-write load: primary alone vs primary + a streaming replica"
	@echo "make bench-events   commit -> webhook latency, deliveries/s, the drain with vs without the outbox"
	@echo "make bench-tracing  GetTask over HTTP with tracing off, default sampling, 100% (OTLP export)"
	@echo "make run-gateway    start the HTTP/JSON gateway (python -m gateway) on 127.0.0.1:8080"
	@echo "make up / down      the whole stack in Docker (docker compose): gRPC, gateway, Grafana"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(CALLER_URLS_ONLY) $(BIN)/python -m devstack

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/demo.sh

migrate: $(VENV)/.installed
	scripts/migrate.sh up

migrate-check: $(VENV)/.installed
	scripts/check_migrations.sh

migrate-schema: $(VENV)/.installed
	scripts/dump_schema.sh

proto: $(VENV)/.installed
	scripts/gen_protos.sh gen

proto-check: $(VENV)/.installed
	rm -rf build/gen-check
	scripts/gen_protos.sh build/gen-check
	diff -r --exclude=__pycache__ gen build/gen-check \
	  || { echo "gen/ is stale: run 'make proto' and commit gen/"; exit 1; }

buf-lint: install
	scripts/third_party_protos.sh build/third_party
	$(BIN)/buf lint

lint: install buf-lint proto-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

fmt: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Throwaway local Postgres and Redis around both unless TASKGATE_TEST_*_URL are set.
test: install lint
	$(BIN)/python -m devstack.around -- $(MAKE) --no-print-directory migrate-check test-only

test-only: $(VENV)/.installed
	$(BIN)/pytest --cov --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

bench: bench-auth bench-abuse bench-tasks bench-gateway bench-replicas bench-events bench-tracing \
       bench-fairness bench-claim-plan

bench-auth: $(VENV)/.installed
	$(BIN)/python -m bench.auth $(BENCH_ARGS)

bench-gateway: $(VENV)/.installed
	$(BIN)/python -m bench.gateway $(BENCH_ARGS)

bench-replicas: $(VENV)/.installed
	$(BIN)/python -m bench.replicas $(BENCH_ARGS)

bench-tracing: $(VENV)/.installed
	$(BIN)/python -m bench.tracing $(BENCH_ARGS)

run-gateway: $(VENV)/.installed
	$(BIN)/python -m gateway

bench-abuse: $(VENV)/.installed
	$(BIN)/python -m bench.abuse $(BENCH_ARGS)

# procrastinate, the job queue the task benchmark runs next to taskgate: once.
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench-tasks: $(VENV)/.bench-installed
	$(BIN)/python -m bench.tasks $(BENCH_ARGS)

bench-events: $(VENV)/.bench-installed
	$(BIN)/python -m bench.events $(BENCH_ARGS)

bench-fairness: $(VENV)/.bench-installed
	$(BIN)/python -m bench.fairness $(BENCH_ARGS)

bench-claim-plan: $(VENV)/.installed
	$(BIN)/python -m bench.claim_plan $(BENCH_ARGS)

# The whole stack in Docker, with Prometheus and Grafana (needs Docker with compose v2).
up:
	docker compose up --build --detach

down:
	docker compose down --volumes

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
