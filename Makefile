# The front door. Each target is one cargo line or .ci/run; CI runs `make test`
# through .ci/run, exactly as a person would.

CARGO ?= cargo

.PHONY: all build demo test bench bench-smoke soak lint fmt doc ci clean

all: build

## build: the host and every plugin (debug)
build:
	$(CARGO) build --workspace

## demo: build, then run manifests/demo.toml (it ends by itself in a few seconds)
demo: build
	./target/debug/otools run manifests/demo.toml

## test: build everything the tests need, then run every test
test: build
	$(CARGO) test --workspace

## bench: release build, the Python peers (bench/peer/install.sh: OTools, service-framework, eventor), then every workload; prints the tables (see BENCHMARKS.md)
bench:
	$(CARGO) build --release --workspace
	bench/peer/install.sh
	./target/release/otools-bench
	$(CARGO) bench -p otools-host --bench hot_paths

## bench-smoke: every workload for a moment, no figure checks (CI runs it)
bench-smoke:
	$(CARGO) build --release --workspace
	bench/peer/install.sh
	./target/release/otools-bench --smoke

## soak: release build, then the chaos mix for SOAK_SECS seconds (default 600;
## SOAK_SEED replays a schedule); prints a report, fails if a goal is missed.
## Not run by CI (see BENCHMARKS.md, "Soak")
soak:
	$(CARGO) build --release --workspace
	./target/release/otools-soak

## lint: formatting and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## fmt: format the workspace
fmt:
	$(CARGO) fmt --all

## doc: API docs, warnings as errors
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

## ci: the same gate CI runs
ci:
	bash .ci/run

clean:
	$(CARGO) clean
