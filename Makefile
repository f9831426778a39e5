# pgdog-router — see README.md.
CARGO ?= cargo
BIN_DIR := build/bin

.PHONY: build test lint format run bench clean config-gen

build:
	$(CARGO) build --release --bins
	mkdir -p $(BIN_DIR)
	install -m 755 target/release/pgdog-router target/release/pgdog-config-gen $(BIN_DIR)/

# Renders the default templates (cluster default, namespace orochi-cloud,
# 32 shards) into config/pgdog.toml and config/users.toml; pass variables as
# ARGS, e.g. ARGS="-cluster-name my-cluster -namespace production".
config-gen: build
	$(BIN_DIR)/pgdog-config-gen -template config/pgdog.toml.tmpl -output config/pgdog.toml $(ARGS)
	$(BIN_DIR)/pgdog-config-gen -template config/users.toml.tmpl -output config/users.toml $(ARGS)

# Unit tests and integration tests against throwaway PostgreSQL clusters.
test:
	CARGO=$(CARGO) scripts/test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

format:
	$(CARGO) fmt --all

# Runs the router; without --config/PGDOG_CONFIG it starts a local primary and
# replica in a temporary folder and writes its configuration under .run/.
run: build
	scripts/run-local.sh $(ARGS)

# Router vs PgBouncer vs direct PostgreSQL, side by side, plus the router with
# read/write splitting over a streaming replica (not part of `test`).
bench: build
	$(CARGO) run --release -p pgdog-tests --bin bench -- $(ARGS)

clean:
	$(CARGO) clean
	rm -rf build .run
