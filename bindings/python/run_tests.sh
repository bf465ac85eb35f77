#!/usr/bin/env bash
# Builds the wheel (maturin, the workspace's release profile and target directory, so the bench
# smoke run shares the build), installs it into a virtualenv as a user would, builds the example
# plugins the projection tests load, and runs the tests under pytest from outside the source
# tree, against the installed package.
#   bash bindings/python/run_tests.sh [pytest arguments]
# Exits non-zero when a test fails or when no test ran (pytest exit code 5).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# maturin runs cargo, which reads this: the wheel's build lands in the workspace target dir.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
target_dir="$CARGO_TARGET_DIR"

# The projection tests use the event-counter example plugin.
cargo build --release --target wasm32-wasip2 \
    --manifest-path "$repo/plugins/examples/Cargo.toml" --target-dir "$target_dir/wasm-examples"
export STRATA_TEST_PLUGIN_DIR="$target_dir/wasm-examples/wasm32-wasip2/release"

venv="${STRATA_VENV:-$target_dir/python-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest
# As a user installs it: pip fetches maturin into an isolated build environment, maturin
# builds the native module (release) and packs the wheel, pip installs it with msgpack.
"$venv/bin/python" -m pip install --disable-pip-version-check --force-reinstall "$here"

# From a directory outside bindings/python, so that `import strata` can only find the
# installed package (a test checks that too).
run_dir="$target_dir/python-tests"
mkdir -p "$run_dir"
cd "$run_dir"
set +e
STRATA_SOURCE_DIR="$here" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --import-mode=importlib --rootdir "$run_dir" "$here/tests" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
