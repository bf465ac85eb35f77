'use strict'
// The TypeScript definitions are generated (index.d.ts by tsc from index.js's JSDoc,
// native.d.ts by napi-rs from the Rust code) and type-check a program that uses the API.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const root = path.resolve(__dirname, '..')

test('index.d.ts and native.d.ts declare the API', () => {
  const index = fs.readFileSync(path.join(root, 'index.d.ts'), 'utf8')
  for (const declaration of ['class Store', 'static open(path: string', 'class ConflictError', 'actualVersion: number', 'class Event ', 'pages(): AsyncGenerator<Event[]']) {
    assert.ok(index.includes(declaration), `index.d.ts lacks ${JSON.stringify(declaration)}`)
  }
  const native = fs.readFileSync(path.join(root, 'native.d.ts'), 'utf8')
  for (const declaration of ['export declare class NativeStore', 'append(streamId: string, expected: number, batch: AppendBatch): Promise<AppendOutcome>', 'export declare function openStore(']) {
    assert.ok(native.includes(declaration), `native.d.ts lacks ${JSON.stringify(declaration)}`)
  }
})

test('a TypeScript program using the API type-checks under --strict', () => {
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'node16',
    '--moduleResolution', 'node16', '--lib', 'es2022,esnext.disposable', '--types', 'node', '--skipLibCheck',
    path.join(__dirname, 'fixtures', 'uses-the-types.ts')], { cwd: root, stdio: 'inherit' })
})
