# chat: store-and-forward chat delivery server.
#
#   make run       one node on $(PORT) (default 8000)
#   make cluster   three nodes on 8000, 8001, 8002
#   make test      unit + end-to-end tests (they start private MariaDB/Redis)
#   make stop      stop the private MariaDB/Redis used by run/cluster
#
# run/cluster use CHAT_DATABASE_URL and CHAT_REDIS_URL from the environment
# when both are set; otherwise they start private instances under .data/
# (scripts/services.sh; ports CHAT_MYSQL_PORT=13306, CHAT_REDIS_PORT=16379).

SHELL := /bin/bash
# mariadbd lives in /usr/sbin, which is not on every user's PATH.
export PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin

PORT ?= 8000
ARGS ?=
CLUSTER_PORTS := 8000 8001 8002
SERVER := ./target/release/chat-server

# Shell snippet: make CHAT_DATABASE_URL / CHAT_REDIS_URL available, starting
# the private services when the environment does not provide both.
SETUP_ENV = if [ -z "$${CHAT_DATABASE_URL:-}" ] || [ -z "$${CHAT_REDIS_URL:-}" ]; then \
		bash scripts/services.sh start && eval "$$(bash scripts/services.sh env)"; \
	else \
		echo "using CHAT_DATABASE_URL and CHAT_REDIS_URL from the environment"; \
	fi; \
	export CHAT_DATABASE_URL CHAT_REDIS_URL

.PHONY: all deps build run cluster test bench lint clean stop

# Default: build the binaries.
all: build

# Install MariaDB, Redis and telnet when missing (fast no-op otherwise).
deps:
	bash scripts/install-deps.sh

# Release build of every binary: chat-server, chat-enqueue, chat-admin, chat-bench.
build:
	cargo build --release --bins

# One node on $(PORT); extra server flags via ARGS="...".
run: deps build
	@set -e; $(SETUP_ENV); \
	echo "chat-server on port $(PORT) (connect: telnet 127.0.0.1 $(PORT))"; \
	exec $(SERVER) --port $(PORT) $(ARGS)

# Three nodes (node-8000, node-8001, node-8002); Ctrl-C stops all of them.
cluster: deps build
	@set -e; $(SETUP_ENV); \
	pids=(); \
	trap 'echo "stopping cluster"; kill "$${pids[@]}" 2>/dev/null; wait; exit 0' INT TERM; \
	for p in $(CLUSTER_PORTS); do \
		$(SERVER) --port $$p --node-id node-$$p $(ARGS) & pids+=($$!); \
	done; \
	echo "================================================================"; \
	echo " chat cluster: nodes node-8000, node-8001, node-8002"; \
	echo " connect with: telnet 127.0.0.1 8000   (or 8001, 8002)"; \
	echo " database: $$CHAT_DATABASE_URL"; \
	echo " redis:    $$CHAT_REDIS_URL"; \
	echo " Ctrl-C stops all three nodes ('make stop' stops MariaDB/Redis)"; \
	echo "================================================================"; \
	wait

# All tests; they start their own private MariaDB/Redis (binaries must be installed).
test: deps
	cargo test --all-targets

# The benchmark (docs/BENCHMARKS.md): chat against private MariaDB/Redis, Mosquitto side by side.
# Each run starts from an empty chat_bench database (a growing messages table slows inserts).
# Sizes and workloads via BENCH_ARGS="--only throughput --clients 100"; results in target/bench.json,
# and the scale curve (when the run has it) drawn from them in docs/scale.png.
BENCH_ARGS ?=
bench:
	bash scripts/install-deps.sh --bench
	cargo build --release --bins
	@set -e; bash scripts/services.sh start; eval "$$(bash scripts/services.sh env)"; \
	mariadb -h127.0.0.1 -P$${CHAT_MYSQL_PORT:-13306} -uroot -e 'DROP DATABASE IF EXISTS chat_bench'; \
	./target/release/chat-bench --database-url "$${CHAT_DATABASE_URL%/*}/chat_bench" \
		--redis-url "$$CHAT_REDIS_URL" --json target/bench.json $(BENCH_ARGS); \
	if grep -q '"workload": "scale"' target/bench.json; then \
		/usr/bin/python3 scripts/plot-bench.py target/bench.json docs/scale.png; fi

# Formatting and clippy, warnings are errors.
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Stop services, remove their data and the build output.
clean:
	-bash scripts/services.sh stop
	rm -rf .data
	cargo clean

# Stop the private MariaDB/Redis started by run/cluster.
stop:
	bash scripts/services.sh stop
