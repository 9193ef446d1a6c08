# The commands a newcomer needs. See README.md.

.PHONY: run test lint deny deploy-check fmt build fuzz bench soak

## run: the whole stack locally (PostgreSQL, NATS, the three services, a demo tenant)
run:
	@scripts/run.sh

## test: everything CI runs: formatting, lints, cargo deny, every test against real PostgreSQL
## and NATS, a short fuzzing run of the SCIM filter parser and PATCH engine, and the deployment
## files (Dockerfile, Helm chart, kustomize, collector, dashboard) validated offline
test: lint deny deploy-check
	@scripts/test.sh
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-20} scripts/fuzz.sh

## bench: release build, benchmarks as ratios within one run (results in target/bench/)
bench:
	@scripts/bench.sh

## soak: 30 minutes of steady load (SOAK_MINUTES); memory and file descriptors must stay flat
soak:
	@scripts/bench.sh soak

## fuzz: a long fuzzing run (FUZZ_SECONDS per target, default 600)
fuzz:
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-600} scripts/fuzz.sh

## lint: rustfmt and clippy with warnings as errors
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

## deny: licenses, bans, sources and (when the RustSec database is reachable) advisories
deny:
	@scripts/deny.sh

## deploy-check: Dockerfile, Helm chart, kustomize manifests, collector config and dashboard, offline
deploy-check:
	@scripts/deploy-check.sh

fmt:
	cargo fmt --all

build:
	cargo build --workspace --bins
