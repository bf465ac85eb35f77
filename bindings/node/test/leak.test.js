'use strict'
// A loop of 100,000 open/append/close keeps the resident set bounded.
//
// The bound: after a warm-up of 2,000 cycles (allocator pools, V8 heap, SQLite's page cache and
// the tokio blocking pool have grown to their working size), the remaining 98,000 cycles may add
// at most 48 MiB. Anything kept per cycle, a store handle, its writer thread's stack, a read
// connection, an event page, leaks at least ~500 bytes a cycle (one SQLite connection is ~100
// KiB, a thread stack 2 MiB of address space of which several KiB are touched), which is
// 98,000 x 500 B = 47 MiB or more: over the bound. The bound leaves room for allocator
// fragmentation, which does not grow with the count.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const path = require('node:path')
const { freshStorePath } = require('./helpers')

const ITERATIONS = Number(process.env.STRATA_LEAK_ITERATIONS || 100_000)
const WARMUP = 2_000
const BOUND_BYTES = 48 * 1024 * 1024

test(`${ITERATIONS} cycles of open, append and close keep the resident set bounded`, { timeout: 15 * 60_000 }, () => {
  const output = execFileSync(process.execPath,
    ['--expose-gc', path.join(__dirname, 'fixtures', 'leak-loop.js'), freshStorePath(), String(ITERATIONS), String(WARMUP)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 })
  const report = JSON.parse(output.trim().split('\n').at(-1))
  const growth = report.atEnd - report.afterWarmup
  const mib = (bytes) => (bytes / (1 << 20)).toFixed(1)
  console.log(`# leak check: ${report.iterations} cycles in ${report.seconds} s; RSS ${mib(report.afterWarmup)} MiB after warm-up, ${mib(report.atEnd)} MiB at the end (${mib(growth)} MiB growth, bound ${mib(BOUND_BYTES)} MiB)`)
  assert.equal(report.events, ITERATIONS)
  assert.ok(growth < BOUND_BYTES, `RSS grew by ${mib(growth)} MiB over ${ITERATIONS - WARMUP} cycles (bound ${mib(BOUND_BYTES)} MiB)`)
})
