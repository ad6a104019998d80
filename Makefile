# The two fresh-machine commands: `make demo` and `make test`. Each runs the set-up it needs
# (scripts/setup.sh: libtorch, data, model into ~/.cache/vpt), idempotently, then builds.

SHELL := /bin/bash
LIBTORCH := $(shell scripts/setup.sh libtorch)
export LIBTORCH
# The `python` designer plugin embeds the interpreter of the venv whose torch provides libtorch
# (one libtorch for the host and Python's torch); pyo3 builds against it. Falls back to python3.
PYO3_PYTHON ?= $(firstword $(wildcard $(abspath $(LIBTORCH)/../../../../bin/python)) python3)
export PYO3_PYTHON
# Keep libtorch from oversubscribing small machines; `vpt` also sets its thread count explicitly.
export OMP_NUM_THREADS ?= $(shell nproc)
CARGO ?= cargo
RELEASE := target/release

# `make install PREFIX=…`: where `vpt` (PREFIX/bin) and its plugins, SDK and designer template
# (PREFIX/share/vpt) go.
PREFIX ?= $(HOME)/.local

.PHONY: demo test build install setup clippy fmt bench clean-cache

build:
	$(CARGO) build --release --workspace
	@# The designer template is its own crate (outside the workspace); building it into the
	@# workspace's target dir reuses the compiled dependencies (seconds, not minutes).
	$(CARGO) build --release --manifest-path examples/designer-template/Cargo.toml --target-dir target

install: build
	scripts/install.sh "$(PREFIX)"

setup:
	@scripts/setup.sh data
	@scripts/setup.sh model >/dev/null

demo: setup build
	VPT_SMOLLM2_GGUF=$$(scripts/setup.sh model) $(RELEASE)/vpt compare examples/lm-smollm2.toml \
	  --arms baseline,v,random_feedback --seeds 1 --out runs/demo

test: setup build
	@# Python side of the export interoperability test (tests/tests/export.rs): transformers,
	@# gguf and tensorboard in the venv, once.
	@scripts/setup.sh interop >/dev/null
	VPT_SMOLLM2_GGUF=$$(scripts/setup.sh model) $(CARGO) test --release --workspace -- --test-threads=1

bench: setup build
	VPT_SMOLLM2_GGUF=$$(scripts/setup.sh model) $(CARGO) bench --workspace

clippy:
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --manifest-path examples/designer-template/Cargo.toml --target-dir target --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
