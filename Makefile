# Peernotes — the two commands are `make run` and `make test`.
# Each target installs what is missing first, so a fresh Debian 12 machine needs
# nothing done by hand. The cargo target dir lives outside the clone so repeated
# builds (and CI runs) reuse it.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/peernotes-target
export CARGO_TERM_COLOR ?= never
CARGO ?= cargo
APP := $(CARGO_TARGET_DIR)/debug/peernotes-app
CLI := $(CARGO_TARGET_DIR)/debug/peernotes

APT_PACKAGES := libwebkit2gtk-4.1-dev build-essential pkg-config xvfb xauth iproute2 \
	webkit2gtk-driver imagemagick fonts-noto-color-emoji
TAURI_DRIVER_VERSION := 2.1.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test soak bench deps deps-apt deps-rust deps-npm ui build lint boundary e2e unit

run: deps build
	@if [ -z "$$DISPLAY" ] && [ -z "$$WAYLAND_DISPLAY" ]; then \
		echo "No display found. Start the app under a virtual display instead:"; \
		echo "    xvfb-run -a -s '-screen 0 1280x800x24' make run"; \
		exit 1; \
	fi
	$(APP)

test: deps ui boundary
	$(CARGO) build -p peernotes-sync -p peernotes-app
	$(CARGO) nextest run --workspace --no-fail-fast
	$(MAKE) e2e

# The long runs: many more crash kills, simulation seeds (sync, pairing and
# membership) and fuzz cases than `make test`.
soak: deps
	$(CARGO) build -p peernotes-sync
	PEERNOTES_CRASH_RUNS=200 PEERNOTES_SIM_SEEDS=5000 PROPTEST_CASES=10000 \
		$(CARGO) nextest run -p peernotes-tests --no-fail-fast --no-capture \
		--test crash --test simulation --test fuzz --test hostile --test hostile_member --test member_fuzz \
		--test membership --test full_disk --test network_faults

# Speed and memory beside baselines from the same run (release build; ~10 min),
# then the app row: the release app driven through WebDriver.
REL := $(CARGO_TARGET_DIR)/release
bench: deps ui
	npm --prefix bench/automerge-repo ci --no-audit --no-fund
	$(CARGO) build --release -p peernotes-sync -p peernotes-bench -p peernotes-app -p peernotes-tests --bins
	$(REL)/peernotes-bench --cli $(REL)/peernotes --baseline bench/automerge-repo --out target/bench
	PEERNOTES_APP=$(REL)/peernotes-app PEERNOTES_CLI=$(REL)/peernotes PEERNOTES_TRACE_NOTE=$(REL)/trace-note \
		xvfb-run -a -s '-screen 0 1280x800x24' node bench/app/open-long-note.mjs target/bench

unit:
	$(CARGO) nextest run --workspace --no-fail-fast

e2e: deps ui
	$(CARGO) build -p peernotes-sync -p peernotes-app -p peernotes-tests --bins
	PEERNOTES_APP=$(APP) PEERNOTES_CLI=$(CLI) PEERNOTES_LIVE_PEER=$(CARGO_TARGET_DIR)/debug/live-peer \
		PEERNOTES_TRACE_NOTE=$(CARGO_TARGET_DIR)/debug/trace-note \
		xvfb-run -a -s '-screen 0 1280x800x24' node --test --test-concurrency=1 tests/e2e/

lint: deps ui boundary
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	npm --prefix ui run typecheck

# The shells (the app, the CLI) reach the library only through its façade
# (ARCHITECTURE.md): they name neither iroh nor automerge, and the app does not
# depend on them.
SHELLS := src-tauri/src src-tauri/Cargo.toml sync/src/bin
boundary:
	@if grep -rnwE 'iroh|automerge' $(SHELLS); then \
		echo "The shells must not name iroh or automerge: use what peernotes_sync offers (see ARCHITECTURE.md)."; \
		exit 1; \
	fi
	@if $(CARGO) tree -p peernotes-app -e normal --depth 1 --prefix none | grep -E '^(iroh|automerge) '; then \
		echo "peernotes-app must not depend on iroh or automerge directly."; \
		exit 1; \
	fi

deps: deps-apt deps-rust deps-npm

# apt: only when a package is missing, so warm runs stay offline and fast.
deps-apt:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		echo "Installing apt packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

deps-rust:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	@command -v tauri-driver >/dev/null || $(CARGO) install --locked tauri-driver --version $(TAURI_DRIVER_VERSION)

deps-npm: ui/node_modules/.package-lock.json

ui/node_modules/.package-lock.json: ui/package.json ui/package-lock.json
	npm --prefix ui ci --no-audit --no-fund

# The UI must be built before the app crate: tauri embeds ui/dist at compile time.
ui: deps-npm
	npm --prefix ui run build

build: ui
	$(CARGO) build -p peernotes-sync -p peernotes-app
