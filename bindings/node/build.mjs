// Builds the addon the way `napi build --platform --release` does, but without `--target`:
// napi build always passes `--target <host triple>`, which makes cargo build every dependency
// again under target/<triple>/ (wasmtime alone is ~16 minutes on the CI machine). Built with a
// plain `cargo build --release -p strata-node`, the addon shares the workspace's release build
// with the C library, the CLI and the benches.
//   node build.mjs [--debug]        (or STRATA_NODE_PROFILE=dev)
// Writes strata.<platform>.node, native.js (the napi-rs loader) and native.d.ts (from the Rust
// code's #[napi] items, through napi-rs's own type generator).
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateTypeDef, writeJsBinding, parseTriple } from '@napi-rs/cli'

const here = path.dirname(fileURLToPath(import.meta.url))
const crateName = 'strata-node'
const binaryName = 'strata'
// `--debug` or STRATA_NODE_PROFILE=dev (CI: shares the dev build of `cargo test --workspace`'s
// dependencies instead of a release build of wasmtime).
const release = !process.argv.includes('--debug') && process.env.STRATA_NODE_PROFILE !== 'dev'

function hostTriple () {
  const result = spawnSync('rustc', ['-vV'], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`rustc -vV failed (is a Rust toolchain installed?): ${result.stderr}`)
  const line = result.stdout.split('\n').find((l) => l.startsWith('host: '))
  return line.slice('host: '.length).trim()
}

/** Runs cargo; answers the path of the cdylib it built. */
function cargoBuild (typeDefDir) {
  const args = ['build', '-p', crateName, '--lib', '--message-format=json-render-diagnostics']
  if (release) args.push('--release')
  // napi-derive writes each #[napi] item's type into NAPI_TYPE_DEF_TMP_FOLDER while it compiles
  // the crate; NAPI_FORCE_BUILD_<crate> (watched by napi-build) recompiles it when it is fresh.
  const env = {
    ...process.env,
    NAPI_TYPE_DEF_TMP_FOLDER: typeDefDir,
    [`NAPI_FORCE_BUILD_${crateName.replace(/-/g, '_').toUpperCase()}`]: String(Date.now())
  }
  const result = spawnSync('cargo', args, { cwd: here, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 })
  if (result.status !== 0) throw new Error(`cargo ${args.join(' ')} failed (exit ${result.status})`)
  let library
  for (const line of result.stdout.split('\n')) {
    if (!line.startsWith('{')) continue
    const message = JSON.parse(line)
    if (message.reason === 'compiler-artifact' && message.target.name === crateName.replace(/-/g, '_') &&
        message.target.kind.includes('cdylib')) {
      library = message.filenames.find((f) => /\.(so|dylib|dll)$/.test(f))
    }
  }
  if (!library) throw new Error(`cargo built no cdylib for ${crateName}`)
  return library
}

async function main () {
  const target = parseTriple(hostTriple())
  const typeDefDir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-napi-typedef-'))
  try {
    const library = cargoBuild(typeDefDir)
    const addon = path.join(here, `${binaryName}.${target.platformArchABI}.node`)
    fs.copyFileSync(library, `${addon}.tmp`)
    fs.renameSync(`${addon}.tmp`, addon)
    const { exports, dts } = await generateTypeDef({ typeDefDir, cwd: here })
    if (exports.length === 0) throw new Error('napi-rs generated no exports: the type definitions were not written by the build')
    fs.writeFileSync(path.join(here, 'native.d.ts'), dts)
    const pkg = JSON.parse(fs.readFileSync(path.join(here, 'package.json'), 'utf8'))
    await writeJsBinding({
      platform: true,
      idents: exports,
      jsBinding: 'native.js',
      binaryName,
      packageName: pkg.name,
      version: pkg.version,
      outputDir: here
    })
    console.log(`built ${path.basename(addon)} (${release ? 'release' : 'debug'}) from ${library}`)
  } finally {
    fs.rmSync(typeDefDir, { recursive: true, force: true })
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
