// Batched append and read-all through Node: strata's package vs better-sqlite3 (version 12) on
// the same rows and indexes, in the same run. Results: benches/RESULTS.md, "Node.js package".
//
//   npm --prefix bindings/node/bench install      # better-sqlite3 12, once
//   node bindings/node/bench.mjs [--events 200000] [--batch 1000] [--runs 3] [--durability durable|fast|both]
//
// The baseline is a plain SQLite table with what strata stores and the indexes strata's
// checks need: position (primary key), (stream_id, version) unique, event_id unique, and
// (event_type, recorded_at). Appends: batches of `batch` events to one stream each, one
// transaction per batch, with the same synchronous setting as strata's durability (FULL for
// durable, NORMAL for fast), WAL. Reads: every event in position order into JavaScript objects,
// touching position, stream id, type and data length of each; the baseline reads pages of
// 1,000 rows by position (.all()) and also the whole table with .iterate(), and the faster of
// the two counts. Each side opens its file anew before reading (strata's in-process cache is
// cold; the OS page cache is warm for both).
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)
const { Store } = require('./index.js')
let Database
try {
  Database = createRequire(path.join(here, 'bench', 'package.json'))('better-sqlite3')
} catch (error) {
  console.error(`better-sqlite3 is missing: run npm --prefix ${path.join(here, 'bench')} install (${error.message})`)
  process.exit(2)
}

function argument (name, fallback) {
  const at = process.argv.indexOf(`--${name}`)
  return at === -1 ? fallback : process.argv[at + 1]
}
const EVENTS = Number(argument('events', 200_000))
const BATCH = Number(argument('batch', 1_000))
const RUNS = Number(argument('runs', 3))
const DURABILITIES = argument('durability', 'both') === 'both' ? ['durable', 'fast'] : [argument('durability')]
const STREAMS = 100
const TYPES = ['order_created', 'order_paid', 'order_shipped', 'user_registered', 'item_added']
const DATA_BYTES = 100
const METADATA_BYTES = 20

/** The same rows for both sides: batches of events, each batch for one stream. */
function workload () {
  const batches = []
  for (let b = 0; b * BATCH < EVENTS; b++) {
    const events = []
    for (let i = 0; i < BATCH && b * BATCH + i < EVENTS; i++) {
      events.push({ type: TYPES[(b + i) % TYPES.length], data: randomBytes(DATA_BYTES), metadata: randomBytes(METADATA_BYTES) })
    }
    batches.push({ stream: `stream-${b % STREAMS}`, events })
  }
  return batches
}

function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

function seconds (started) {
  return Number(process.hrtime.bigint() - started) / 1e9
}

async function strataAppend (file, batches, durability) {
  const store = await Store.open(file, { durability })
  const started = process.hrtime.bigint()
  for (const { stream, events } of batches) await store.append(stream, events)
  const elapsed = seconds(started)
  await store.close()
  return elapsed
}

async function strataRead (file, mode) {
  const store = await Store.open(file)
  let checksum = 0
  let count = 0
  const started = process.hrtime.bigint()
  if (mode === 'events') {
    for await (const event of store.readAll()) {
      checksum += event.position + event.streamId.length + event.type.length + event.data.length
      count++
    }
  } else {
    for await (const page of store.readAll().pages()) {
      for (const event of page) {
        checksum += event.position + event.streamId.length + event.type.length + event.data.length
        count++
      }
    }
  }
  const elapsed = seconds(started)
  await store.close()
  if (count !== EVENTS) throw new Error(`strata read ${count} events, expected ${EVENTS}`)
  return { elapsed, checksum }
}

function sqliteOpen (file, durability) {
  const db = new Database(file)
  db.pragma('journal_mode = WAL')
  db.pragma(`synchronous = ${durability === 'durable' ? 'FULL' : 'NORMAL'}`)
  return db
}

function sqliteAppend (file, batches, durability) {
  const db = sqliteOpen(file, durability)
  db.exec(`CREATE TABLE events (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    event_id BLOB NOT NULL UNIQUE,
    recorded_at INTEGER NOT NULL,
    data BLOB NOT NULL,
    metadata BLOB NOT NULL,
    UNIQUE (stream_id, version));
  CREATE INDEX events_by_type ON events (event_type, recorded_at);`)
  const insert = db.prepare('INSERT INTO events (stream_id, version, event_type, event_id, recorded_at, data, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)')
  const versions = new Map()
  const appendBatch = db.transaction((stream, events) => {
    let version = versions.get(stream) ?? 0
    const ids = randomBytes(16 * events.length)
    const recordedAt = Date.now() * 1000
    for (let i = 0; i < events.length; i++) {
      const event = events[i]
      insert.run(stream, ++version, event.type, ids.subarray(16 * i, 16 * i + 16), recordedAt, event.data, event.metadata)
    }
    versions.set(stream, version)
  })
  const started = process.hrtime.bigint()
  for (const { stream, events } of batches) appendBatch(stream, events)
  const elapsed = seconds(started)
  db.close()
  return elapsed
}

function sqliteRead (file, mode) {
  const db = sqliteOpen(file, 'durable')
  let checksum = 0
  let count = 0
  const started = process.hrtime.bigint()
  if (mode === 'pages') {
    const page = db.prepare('SELECT position, stream_id, version, event_type, event_id, recorded_at, data, metadata FROM events WHERE position >= ? ORDER BY position LIMIT 1000')
    let from = 1
    for (;;) {
      const rows = page.all(from)
      if (rows.length === 0) break
      for (const row of rows) {
        checksum += row.position + row.stream_id.length + row.event_type.length + row.data.length
        count++
      }
      from = rows[rows.length - 1].position + 1
    }
  } else {
    const all = db.prepare('SELECT position, stream_id, version, event_type, event_id, recorded_at, data, metadata FROM events ORDER BY position')
    for (const row of all.iterate()) {
      checksum += row.position + row.stream_id.length + row.event_type.length + row.data.length
      count++
    }
  }
  const elapsed = seconds(started)
  db.close()
  if (count !== EVENTS) throw new Error(`better-sqlite3 read ${count} rows, expected ${EVENTS}`)
  return { elapsed, checksum }
}

async function main () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-node-bench-'))
  const batches = workload()
  console.log(`# ${EVENTS} events of ${DATA_BYTES} + ${METADATA_BYTES} bytes, batches of ${BATCH}, ${STREAMS} streams, ${RUNS} runs; node ${process.version}; loadavg ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`)
  const rows = []
  try {
    for (const durability of DURABILITIES) {
      const times = { strataAppend: [], sqliteAppend: [], strataEvents: [], strataPages: [], sqlitePages: [], sqliteIterate: [] }
      for (let run = 0; run < RUNS; run++) {
        const strataFile = path.join(dir, `strata-${durability}-${run}.db`)
        const sqliteFile = path.join(dir, `sqlite-${durability}-${run}.db`)
        times.sqliteAppend.push(sqliteAppend(sqliteFile, batches, durability))
        times.strataAppend.push(await strataAppend(strataFile, batches, durability))
        const events = await strataRead(strataFile, 'events')
        const pages = await strataRead(strataFile, 'pages')
        const sqlitePages = sqliteRead(sqliteFile, 'pages')
        const sqliteIterate = sqliteRead(sqliteFile, 'iterate')
        if (events.checksum !== sqlitePages.checksum || pages.checksum !== sqliteIterate.checksum) {
          throw new Error('strata and better-sqlite3 read different data')
        }
        times.strataEvents.push(events.elapsed)
        times.strataPages.push(pages.elapsed)
        times.sqlitePages.push(sqlitePages.elapsed)
        times.sqliteIterate.push(sqliteIterate.elapsed)
        for (const file of [strataFile, sqliteFile]) {
          for (const suffix of ['', '-wal', '-shm']) fs.rmSync(file + suffix, { force: true })
        }
      }
      const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]))
      const sqliteBestRead = Math.min(m.sqlitePages, m.sqliteIterate)
      const rate = (s) => Math.round(EVENTS / s).toLocaleString('en-US')
      rows.push([`append (${durability})`, rate(m.strataAppend), rate(m.sqliteAppend), m.sqliteAppend / m.strataAppend, 0.8])
      rows.push([`read-all, for await per event (${durability} file)`, rate(m.strataEvents), rate(sqliteBestRead), sqliteBestRead / m.strataEvents, 1.0])
      rows.push([`read-all, .pages() (${durability} file)`, rate(m.strataPages), rate(sqliteBestRead), sqliteBestRead / m.strataPages, 1.0])
      console.log(`# ${durability}: medians (s) ${JSON.stringify(Object.fromEntries(Object.entries(m).map(([k, v]) => [k, Number(v.toFixed(4))])))}`)
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
  console.log('| what | strata events/s | better-sqlite3 events/s | ratio | goal | met |')
  console.log('|---|---:|---:|---:|---:|---|')
  for (const [what, strata, sqlite, ratio, goal] of rows) {
    console.log(`| ${what} | ${strata} | ${sqlite} | ${ratio.toFixed(2)}x | ${goal.toFixed(1)}x | ${ratio >= goal ? 'met' : 'not met'} |`)
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
