'use strict'
// Shared test setup: a fresh directory per store, and where the example plugins are.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

/** A new empty directory, removed when the process exits. */
function freshDir () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-node-'))
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A path for a new store file. */
function freshStorePath () {
  return path.join(freshDir(), 'events.db')
}

const repository = path.resolve(__dirname, '../../..')

/**
 * The example plugin `name` built for wasm32-wasip2 (run_tests.sh builds them; the directory
 * is $STRATA_TEST_PLUGIN_DIR, else the workspace target directory's wasm-examples).
 */
function pluginPath (name) {
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(repository, 'target')
  const dir = process.env.STRATA_TEST_PLUGIN_DIR ||
    path.join(targetDir, 'wasm-examples', 'wasm32-wasip2', 'release')
  const file = path.join(dir, `${name.replace(/-/g, '_')}.wasm`)
  if (!fs.existsSync(file)) {
    throw new Error(`no plugin at ${file}: build it with cargo build --release --target wasm32-wasip2 --manifest-path plugins/examples/Cargo.toml (bash bindings/node/run_tests.sh does)`)
  }
  return file
}

module.exports = { freshDir, freshStorePath, pluginPath, repository }
