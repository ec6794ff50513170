# The two front-door commands (see README.md):
#   make demo   set up, build, and classify the bundled sample image
#   make test   the whole test suite (what CI runs)
SHELL := /bin/bash
# A Rust toolchain that setup just installed is not on the PATH of this make yet.
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
PYTHON ?= python3

.PHONY: demo test setup setup-dev rust-checks rust-tests python-tests

demo: setup
	$(CARGO) run --release -- classify assets/astronaut.png --pretty

setup:
	./scripts/setup.sh

setup-dev:
	./scripts/setup.sh --dev

test: setup-dev rust-checks rust-tests python-tests

rust-checks:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

rust-tests:
	$(CARGO) test

python-tests:
	$(PYTHON) -m pytest models/tests -q
