#!/usr/bin/env bash
# Builds the Node.js package (napi-rs addon, release profile, the workspace target directory)
# and the example plugins, then runs its tests with node's test runner.
#   bash bindings/node/run_tests.sh
# Exits non-zero when a test fails or when no test ran.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

# The projection test uses the event-counter example plugin.
cargo build --release --target wasm32-wasip2 \
    --manifest-path "$repo/plugins/examples/Cargo.toml" --target-dir "$CARGO_TARGET_DIR/wasm-examples"
export STRATA_TEST_PLUGIN_DIR="$CARGO_TARGET_DIR/wasm-examples/wasm32-wasip2/release"

cd "$here"
# Installs the dependencies, then the package's install script builds the addon
# (`node build.mjs`: cargo build --release -p strata-node, the workspace's release profile and
# target directory, so it shares the release build of wasmtime; no debug info) and index.d.ts.
npm install --no-audit --no-fund
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
npm test 2>&1 | tee "$log"
if ! grep -Eq '^# pass [1-9]' "$log"; then
    echo "node --test ran no passing test: failing" >&2
    exit 1
fi
