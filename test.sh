#!/usr/bin/env bash
# The whole test suite: Rust (unit, store on SQLite and PostgreSQL, end to end against the
# real binary) and the Python SDK under pytest. Needs python3 and a PostgreSQL reachable at
# 127.0.0.1:5432 as user postgres (override with SLUICE_TEST_PG_URL).
set -euo pipefail
cd "$(dirname "$0")"

python3 -m pip install --quiet --disable-pip-version-check -r python/requirements-test.txt 2>&1 | grep -v "Running pip as the 'root' user" || true

# Real client libraries the protocol tests drive (crates/sluice/tests/clients), and
# playwright-core, which drives Debian's chromium in the IDE test (crates/sluice/tests/ide.rs).
(cd crates/sluice/tests/clients && npm ci --silent --no-audit --no-fund)

# The IDE's editor bundle (crates/sluice-ide/assets/editor.js) is committed so cargo alone
# builds Sluice; it must be exactly what web/ and its lockfile produce. On drift:
# `cd web && npm ci && npm run build`, and commit the bundle.
(cd web && npm ci --silent --no-audit --no-fund && node build.mjs --check)

cargo fmt --all -- --check
# Generated Kubernetes CRDs (deploy/crds, the chart's crds/) match the Rust types; on drift,
# regenerate with `cargo run -p sluice -- crds --write .` and commit.
cargo test -p sluice-kube --test integration --quiet crds::committed_crds_match_the_rust_types
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
python3 -m openapi_spec_validator docs/openapi.json
(cd python && python3 -m pytest -q)
