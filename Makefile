# ncbi-retrain: each target is one command; `make` lists them.
SHELL := /bin/bash
PYTHON ?= python3
PROFILE ?= cpu
EXECUTOR ?= local
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.DEFAULT_GOAL := help

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup:  ## Create .venv (orchestration) and .venv-train (training) with uv; idempotent (docs/setup.md)
	@bash scripts/setup.sh

demo: setup  ## The main job: import, publish, run the ncbi_retrain DAG (PROFILE=cpu|tiny), print results
	@bash scripts/demo.sh $(PROFILE)

evolve: setup  ## Data that grows: v1 (half of train) -> v2 (+ data add) -> v3 (noise, refused); PROFILE=tiny|cpu
	@.venv/bin/ncbi-retrain evolve --profile $(PROFILE)

test: setup  ## Run every test tier (both environments)
	@bash scripts/test.sh

lint:  ## ruff check + format check
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

up: setup  ## Start the real stack on 127.0.0.1: PostgreSQL, MLflow, Airflow (EXECUTOR=local|celery)
	@NCBI_STACK_EXECUTOR=$(EXECUTOR) bash scripts/stack.sh up

down:  ## Stop the stack started by `make up`
	@bash scripts/stack.sh down

bench: setup  ## Training throughput: ncbi-retrain train vs NeMo driven directly
	@.venv-train/bin/python bench/train_throughput.py

.PHONY: help setup demo evolve test lint up down bench
