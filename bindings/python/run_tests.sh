#!/usr/bin/env bash
# Builds libstrata (cargo build -p strata-ffi) and the example plugins, installs the Python
# package with msgpack and pytest into a virtualenv, and runs its tests.
#   bash bindings/python/run_tests.sh            # debug library
#   STRATA_PROFILE=release bash bindings/python/run_tests.sh
# Exits non-zero when a test fails or when no test ran (pytest exit code 5).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
profile="${STRATA_PROFILE:-debug}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"

cd "$repo"
if [ "$profile" = release ]; then
    cargo build --release -p strata-ffi --lib
else
    cargo build -p strata-ffi --lib
fi
export STRATA_LIBRARY="$target_dir/$profile/libstrata.so"
test -f "$STRATA_LIBRARY" || { echo "no library at $STRATA_LIBRARY" >&2; exit 1; }

# The projection tests use the event-counter example plugin.
cargo build --release --target wasm32-wasip2 \
    --manifest-path plugins/examples/Cargo.toml --target-dir "$target_dir/wasm-examples"
export STRATA_TEST_PLUGIN_DIR="$target_dir/wasm-examples/wasm32-wasip2/release"

venv="${STRATA_VENV:-$target_dir/python-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet msgpack pytest
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$here"

# Run from the tests directory against the installed package (not the source tree).
cd "$here/tests"
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider .
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
