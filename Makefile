# The commands a newcomer needs. See README.md.

.PHONY: run test lint fmt build

## run: the whole stack locally (PostgreSQL, NATS, the three services, a demo tenant)
run:
	@scripts/run.sh

## test: everything CI runs: formatting, lints, then every test against real PostgreSQL and NATS
test: lint
	@scripts/test.sh

## lint: rustfmt and clippy with warnings as errors
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

fmt:
	cargo fmt --all

build:
	cargo build --workspace --bins
