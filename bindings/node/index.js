'use strict'
// strata for Node.js: the public API over the native addon (native.js, built by napi-rs).
// The addon takes packed batches and answers pages in columns (one call per append and per
// page); this file turns them into JavaScript's conventions: promises, async iterators, Error
// subclasses with a `code`, Buffers and MessagePack values. index.d.ts is generated from the
// JSDoc here by `tsc` (see package.json), native.d.ts from the Rust code by napi-rs.

const fs = require('node:fs/promises')
const { encode, decode } = require('@msgpack/msgpack')
const native = require('./native.js')

/** Events per native read call unless `pageSize` says otherwise. */
const DEFAULT_PAGE_SIZE = 1000
/** How long one native subscription wait lasts before it checks whether it was closed. */
const SUBSCRIPTION_WAIT_MS = 200

// ---------------------------------------------------------------------------------------------
// Errors

/** Any error strata raises. `code` names the failure (the C ABI's status without `STRATA_`). */
class StrataError extends Error {
  /**
   * @param {string} message
   * @param {string} code
   */
  constructor (message, code) {
    super(message)
    this.name = 'StrataError'
    /** @type {string} */
    this.code = code
  }
}

/** The stream's version was not the expected one; nothing of the append was stored. */
class ConflictError extends StrataError {
  /**
   * @param {string} message
   * @param {number} actualVersion
   */
  constructor (message, actualVersion) {
    super(message, 'CONFLICT')
    this.name = 'ConflictError'
    /** The stream's current version (0 when it has no events). @type {number} */
    this.actualVersion = actualVersion
  }
}

/** An event id is already stored, and not as this same append. */
class DuplicateEventIdError extends StrataError {
  /** @param {string} message */
  constructor (message) { super(message, 'DUPLICATE_ID'); this.name = 'DuplicateEventIdError' }
}

/** An argument breaks a rule or a limit; nothing was stored. */
class InvalidArgumentError extends StrataError {
  /** @param {string} message */
  constructor (message) { super(message, 'INVALID_ARGUMENT'); this.name = 'InvalidArgumentError' }
}

/** The store (or subscription) is closed. */
class ClosedError extends StrataError {
  /** @param {string} message */
  constructor (message) { super(message, 'CLOSED'); this.name = 'ClosedError' }
}

/** No such projection, or the events asked for were archived or dropped. */
class NotFoundError extends StrataError {
  /** @param {string} message */
  constructor (message) { super(message, 'NOT_FOUND'); this.name = 'NotFoundError' }
}

/** A WASM projection trapped, ran out of its budget or returned an error. */
class ProjectionFaultError extends StrataError {
  /** @param {string} message */
  constructor (message) { super(message, 'PROJECTION_FAULT'); this.name = 'ProjectionFaultError' }
}

/** The file is not a strata store this version can open, or is damaged. */
class StoreFileError extends StrataError {
  /**
   * @param {string} message
   * @param {string} code `CORRUPT` or `INCOMPATIBLE`
   */
  constructor (message, code) { super(message, code); this.name = 'StoreFileError' }
}

/** SQLite or the disk failed (`BUSY`, `FULL`, `IO`), or strata itself did (`INTERNAL`). */
class StorageError extends StrataError {
  /**
   * @param {string} message
   * @param {string} code
   */
  constructor (message, code) { super(message, code); this.name = 'StorageError' }
}

/**
 * The error the native layer rejected with, as its class. Native failures carry JSON
 * (`{"code", "message", "actualVersion"?}`); anything else is napi refusing an argument.
 * @param {any} error
 * @returns {Error}
 */
function translate (error) {
  if (error instanceof StrataError || !(error instanceof Error)) return error
  let detail
  try {
    detail = JSON.parse(error.message)
  } catch {
    return new InvalidArgumentError(error.message)
  }
  if (!detail || typeof detail.code !== 'string') return new InvalidArgumentError(error.message)
  const { code, message } = detail
  switch (code) {
    case 'CONFLICT': return new ConflictError(message, detail.actualVersion)
    case 'DUPLICATE_ID': return new DuplicateEventIdError(message)
    case 'INVALID_ARGUMENT': return new InvalidArgumentError(message)
    case 'CLOSED': return new ClosedError(message)
    case 'NOT_FOUND': return new NotFoundError(message)
    case 'PROJECTION_FAULT': return new ProjectionFaultError(message)
    case 'CORRUPT': case 'INCOMPATIBLE': return new StoreFileError(message, code)
    default: return new StorageError(message, code)
  }
}

/**
 * Runs a native call, rejecting with strata's error classes.
 * @template T
 * @param {() => Promise<T>} call
 * @returns {Promise<T>}
 */
async function guarded (call) {
  try {
    return await call()
  } catch (error) {
    throw translate(error)
  }
}

// ---------------------------------------------------------------------------------------------
// Events

/** A stored event. `data` and `metadata` are Buffers; `decode()` reads MessagePack. */
class Event {
  /**
   * @param {number} position
   * @param {string} streamId
   * @param {number} version
   * @param {string} type
   * @param {string} eventId
   * @param {number} recordedAt
   * @param {Buffer} data
   * @param {Buffer} metadata
   */
  constructor (position, streamId, version, type, eventId, recordedAt, data, metadata) {
    /** Global position: gap-free, in commit order, from 1. @type {number} */
    this.position = position
    /** @type {string} */
    this.streamId = streamId
    /** Version within the stream, from 1. @type {number} */
    this.version = version
    /** What happened, such as `order_created`. @type {string} */
    this.type = type
    /** The idempotency key (a UUID). @type {string} */
    this.eventId = eventId
    /** When the writer stored it, unix microseconds UTC. @type {number} */
    this.recordedAt = recordedAt
    /** @type {Buffer} */
    this.data = data
    /** @type {Buffer} */
    this.metadata = metadata
  }

  /** `data` decoded from MessagePack. @returns {unknown} */
  decode () { return decode(this.data) }

  /** `metadata` decoded from MessagePack (`undefined` when empty). @returns {unknown} */
  decodeMetadata () { return this.metadata.length === 0 ? undefined : decode(this.metadata) }

  /** `recordedAt` as a Date (millisecond precision). @returns {Date} */
  get recordedDate () { return new Date(Math.floor(this.recordedAt / 1000)) }
}

/**
 * The events of a native page.
 * @param {import('./native.js').EventPage} page
 * @returns {Event[]}
 */
function eventsOf (page) {
  const { count, positions, versions, recordedAt, strings, streamIndex, typeIndex, eventIds, payload, offsets } = page
  const events = new Array(count)
  for (let i = 0; i < count; i++) {
    const start = offsets[2 * i]
    const middle = offsets[2 * i + 1]
    const end = offsets[2 * i + 2]
    events[i] = new Event(
      positions[i], strings[streamIndex[i]], versions[i], strings[typeIndex[i]],
      eventIds.substr(36 * i, 36), recordedAt[i],
      payload.subarray(start, middle), payload.subarray(middle, end))
  }
  return events
}

/**
 * @typedef {object} NewEvent
 * @property {string} type What happened: 1..=255 bytes of UTF-8.
 * @property {unknown} [data] A Buffer/Uint8Array stored as is, or any other value stored as MessagePack.
 * @property {unknown} [metadata] Same rules as `data`; absent: empty.
 * @property {string} [eventId] A UUID: the idempotency key. Absent: generated.
 */

/**
 * Bytes for a data or metadata field.
 * @param {unknown} value
 * @param {number} index
 * @param {string} what
 * @returns {Uint8Array}
 */
function payloadOf (value, index, what) {
  if (value === undefined) return EMPTY
  if (value instanceof Uint8Array) return value
  try {
    return encode(value)
  } catch (error) {
    throw new InvalidArgumentError(`event ${index}: ${what} cannot be encoded as MessagePack: ${error.message}`)
  }
}
const EMPTY = new Uint8Array(0)

/**
 * Packs events into the native batch format: a type table, one payload buffer, offsets.
 * @param {NewEvent[]} events
 */
function pack (events) {
  if (!Array.isArray(events) || events.length === 0) {
    throw new InvalidArgumentError('events must be a non-empty array of { type, data } objects')
  }
  const count = events.length
  const types = []
  const typeSlots = new Map()
  const typeIndex = new Uint32Array(count)
  const parts = new Array(2 * count)
  let eventIds
  let total = 0
  for (let i = 0; i < count; i++) {
    const event = events[i]
    if (event === null || typeof event !== 'object') {
      throw new InvalidArgumentError(`event ${i} must be an object with a type, got ${event}`)
    }
    const type = event.type
    if (typeof type !== 'string') {
      throw new InvalidArgumentError(`event ${i}: type must be a string, got ${typeof type}`)
    }
    let slot = typeSlots.get(type)
    if (slot === undefined) {
      slot = types.length
      types.push(type)
      typeSlots.set(type, slot)
    }
    typeIndex[i] = slot
    const data = payloadOf(event.data, i, 'data')
    const metadata = payloadOf(event.metadata, i, 'metadata')
    parts[2 * i] = data
    parts[2 * i + 1] = metadata
    total += data.length + metadata.length
    if (event.eventId !== undefined && event.eventId !== null) {
      if (typeof event.eventId !== 'string') {
        throw new InvalidArgumentError(`event ${i}: eventId must be a UUID string`)
      }
      eventIds ??= new Array(count).fill(null)
      eventIds[i] = event.eventId
    }
  }
  const payload = Buffer.allocUnsafe(total)
  const offsets = new Float64Array(2 * count + 1)
  let at = 0
  for (let j = 0; j < parts.length; j++) {
    payload.set(parts[j], at)
    at += parts[j].length
    offsets[j + 1] = at
  }
  return { types, typeIndex, payload, offsets, eventIds }
}

/**
 * `expectedVersion` as the native layer's number.
 * @param {ExpectedVersion} expected
 */
function expectedCode (expected) {
  if (expected === undefined || expected === 'any') return -1
  if (expected === 'noStream') return -2
  if (expected === 'streamExists') return -3
  if (Number.isSafeInteger(expected) && expected >= 0) return expected
  throw new InvalidArgumentError(
    `expectedVersion must be 'any', 'noStream', 'streamExists' or a whole number >= 0, got ${String(expected)}`)
}

/**
 * @typedef {'any' | 'noStream' | 'streamExists' | number} ExpectedVersion
 */

/** What an append stored. */
class AppendResult {
  /** @param {import('./native.js').AppendOutcome} outcome */
  constructor (outcome) {
    /** @type {string} */
    this.streamId = outcome.streamId
    /** Position of the first event of this append. @type {number} */
    this.firstPosition = outcome.firstPosition
    /** Position of the last event of this append. @type {number} */
    this.lastPosition = outcome.lastPosition
    /** The stream's version after the append. @type {number} */
    this.lastVersion = outcome.lastVersion
    /** True when every event was already stored with these ids: nothing was written. @type {boolean} */
    this.alreadyStored = outcome.alreadyStored
    /** @private */
    this._ids = outcome.eventIds
  }

  /** The event ids in order, generated ones included. @returns {string[]} */
  get eventIds () {
    const ids = new Array(this._ids.length / 36)
    for (let i = 0; i < ids.length; i++) ids[i] = this._ids.substr(36 * i, 36)
    return ids
  }
}

// ---------------------------------------------------------------------------------------------
// Reading

/**
 * Events fetched page by page (one native call each). Iterate with `for await`, or take whole
 * pages with `pages()`.
 * @implements {AsyncIterable<Event>}
 */
class EventReader {
  /**
   * @param {(pageSize: number) => Promise<import('./native.js').EventPage>} fetchPage called with the page size;
   *   keeps its own cursor.
   * @param {number} pageSize
   * @param {number} limit
   */
  constructor (fetchPage, pageSize, limit) {
    /** @private */
    this._fetchPage = fetchPage
    /** @private */
    this._pageSize = pageSize
    /** @private */
    this._limit = limit
  }

  /** Arrays of events, one per native page. @returns {AsyncGenerator<Event[]>} */
  async * pages () {
    let left = this._limit
    while (left > 0) {
      const page = await guarded(() => this._fetchPage(Math.min(this._pageSize, left)))
      if (page.count === 0) return
      left -= page.count
      yield eventsOf(page)
    }
  }

  /** @returns {AsyncIterator<Event>} */
  [Symbol.asyncIterator] () {
    const pages = this.pages()
    /** @type {Event[]} */
    let buffer = []
    let next = 0
    return {
      async next () {
        while (next === buffer.length) {
          const page = await pages.next()
          if (page.done) return { value: undefined, done: true }
          buffer = page.value
          next = 0
        }
        return { value: buffer[next++], done: false }
      },
      async return () {
        await pages.return(undefined)
        return { value: undefined, done: true }
      }
    }
  }

  /** Every event, in one array. @returns {Promise<Event[]>} */
  async toArray () {
    const all = []
    for await (const page of this.pages()) {
      for (const event of page) all.push(event)
    }
    return all
  }
}

/**
 * @param {number | undefined} value
 * @param {number} fallback
 * @param {string} what
 */
function count (value, fallback, what) {
  if (value === undefined) return fallback
  if (value === Infinity || (Number.isSafeInteger(value) && value >= 1)) return value
  throw new InvalidArgumentError(`${what} must be a whole number >= 1, got ${String(value)}`)
}

/**
 * Unix microseconds from a Date or a number of microseconds.
 * @param {Date | number | undefined} time
 * @param {number} fallback
 */
function micros (time, fallback) {
  if (time === undefined) return fallback
  if (time instanceof Date) return time.getTime() * 1000
  if (typeof time === 'number') return time
  throw new InvalidArgumentError('a time must be a Date or unix microseconds')
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/**
 * History from a position, then live events as they are committed (by this process or
 * another), in order, with no gap and no duplicate. `for await` it; `break` or `close()` ends it.
 * @implements {AsyncIterable<Event>}
 */
class Subscription {
  /**
   * @param {import('./native.js').NativeSubscription} inner
   * @param {number} pageSize
   */
  constructor (inner, pageSize) {
    /** @private */
    this._inner = inner
    /** @private */
    this._pageSize = pageSize
    /** @private @type {Event[]} */
    this._buffer = []
    /** @private */
    this._next = 0
    /** @private */
    this._closed = false
  }

  /**
   * The next event, waiting for one; `undefined` once closed.
   * @returns {Promise<Event | undefined>}
   */
  async next () {
    while (this._next === this._buffer.length) {
      if (this._closed) return undefined
      const page = await guarded(() => this._inner.nextPage(this._pageSize, SUBSCRIPTION_WAIT_MS))
      if (page === null) {
        this._closed = true
        return undefined
      }
      this._buffer = eventsOf(page)
      this._next = 0
    }
    return this._buffer[this._next++]
  }

  /** Ends the subscription; a pending `next()` answers `undefined` shortly. */
  close () {
    this._closed = true
    this._buffer = []
    this._next = 0
    this._inner.close()
  }

  /** @returns {AsyncIterator<Event>} */
  [Symbol.asyncIterator] () {
    return {
      next: async () => {
        const event = await this.next()
        return event === undefined ? { value: undefined, done: true } : { value: event, done: false }
      },
      return: async () => {
        this.close()
        return { value: undefined, done: true }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The store

/**
 * @typedef {object} OpenOptions
 * @property {'durable' | 'fast'} [durability] `durable` (default): an append resolves after fsync.
 * @property {'hour' | 'day' | 'week' | 'month'} [bucketWidth] Fixed when the store is created.
 * @property {number} [cacheBytes] Bytes of the in-process event cache (0 turns it off).
 * @property {number} [readConnections]
 * @property {number} [maxPayloadBytes]
 * @property {number} [maxEventsPerAppend]
 * @property {number} [busyTimeoutMs] How long to wait for another process's write lock.
 */

/**
 * @typedef {object} ProjectionStatus
 * @property {string} name
 * @property {number} version
 * @property {string[]} eventTypes Types it reads (empty: all).
 * @property {number} checkpoint Last position folded into its state.
 * @property {number} lag Events between the checkpoint and the head of the log.
 * @property {string} phase `catching_up`, `live`, `faulted`, `rebuilding` or `retired`.
 * @property {number} [faultPosition]
 * @property {string} [faultMessage]
 */

/** An open event store: one SQLite file. Close it when done (or `await using`). */
class Store {
  /**
   * @private
   * @param {import('./native.js').NativeStore} inner
   */
  constructor (inner) {
    /** @private */
    this._inner = inner
  }

  /**
   * Opens the store at `path`, creating it if it does not exist.
   * @param {string} path
   * @param {OpenOptions} [options]
   * @returns {Promise<Store>}
   */
  static async open (path, options = {}) {
    if (typeof path !== 'string' || path.length === 0) {
      throw new InvalidArgumentError('path must be a non-empty string')
    }
    return new Store(await guarded(() => native.openStore(path, options)))
  }

  /**
   * Appends `events` to `streamId`, all or nothing, if the stream's version is
   * `expectedVersion` (default `'any'`). Resolves once committed (fsynced when durable); the
   * write runs off the JavaScript thread. Rejects with `ConflictError` on a version mismatch.
   * @param {string} streamId
   * @param {NewEvent[]} events
   * @param {{ expectedVersion?: ExpectedVersion }} [options]
   * @returns {Promise<AppendResult>}
   */
  async append (streamId, events, options = {}) {
    if (typeof streamId !== 'string') throw new InvalidArgumentError('streamId must be a string')
    const expected = expectedCode(options.expectedVersion)
    const batch = pack(events)
    return new AppendResult(await guarded(() => this._inner.append(streamId, expected, batch)))
  }

  /**
   * The events of one stream, from `fromVersion` (default: first, or last when backwards).
   * @param {string} streamId
   * @param {{ fromVersion?: number, backwards?: boolean, pageSize?: number, limit?: number }} [options]
   * @returns {EventReader}
   */
  readStream (streamId, options = {}) {
    const backwards = options.backwards === true
    let from = options.fromVersion ?? (backwards ? Infinity : 1)
    const fetch = async (/** @type {number} */ max) => {
      if (from < 1) return emptyPage()
      const page = await this._inner.readStream(streamId, from, backwards, max)
      if (page.count > 0) {
        const last = page.versions[page.count - 1]
        from = backwards ? last - 1 : last + 1
      }
      return page
    }
    return new EventReader(fetch, count(options.pageSize, DEFAULT_PAGE_SIZE, 'pageSize'),
      count(options.limit, Infinity, 'limit'))
  }

  /**
   * Every event in position order, from `fromPosition` (default 1).
   * @param {{ fromPosition?: number, pageSize?: number, limit?: number }} [options]
   * @returns {EventReader}
   */
  readAll (options = {}) {
    let from = options.fromPosition ?? 1
    const fetch = async (/** @type {number} */ max) => {
      const page = await this._inner.readAll(from, max)
      if (page.count > 0) from = page.positions[page.count - 1] + 1
      return page
    }
    return new EventReader(fetch, count(options.pageSize, DEFAULT_PAGE_SIZE, 'pageSize'),
      count(options.limit, Infinity, 'limit'))
  }

  /**
   * The events of the given types, in position order, recorded in `[from, to)` (Dates or unix
   * microseconds; default: any time).
   * @param {string | string[]} eventTypes
   * @param {{ from?: Date | number, to?: Date | number, fromPosition?: number, pageSize?: number, limit?: number }} [options]
   * @returns {EventReader}
   */
  readByType (eventTypes, options = {}) {
    const types = typeof eventTypes === 'string' ? [eventTypes] : eventTypes
    const recordedFrom = micros(options.from, -Number.MAX_VALUE)
    const recordedTo = micros(options.to, Number.MAX_VALUE)
    let from = options.fromPosition ?? 1
    const fetch = async (/** @type {number} */ max) => {
      const page = await this._inner.readByType(types, recordedFrom, recordedTo, from, max)
      if (page.count > 0) from = page.positions[page.count - 1] + 1
      return page
    }
    return new EventReader(fetch, count(options.pageSize, DEFAULT_PAGE_SIZE, 'pageSize'),
      count(options.limit, Infinity, 'limit'))
  }

  /**
   * Subscribes to the events matching the filter from `fromPosition` (default 1: the whole
   * log; `await store.lastPosition() + 1` for live events only).
   * @param {{ fromPosition?: number, stream?: string, streamPrefix?: string, eventTypes?: string[], pageSize?: number }} [options]
   * @returns {Subscription}
   */
  subscribe (options = {}) {
    try {
      const inner = this._inner.subscribe(options.fromPosition ?? 1, options.stream,
        options.streamPrefix, options.eventTypes)
      return new Subscription(inner, count(options.pageSize, DEFAULT_PAGE_SIZE, 'pageSize'))
    } catch (error) {
      throw translate(error)
    }
  }

  /**
   * The position of the last committed event (0 when empty), other processes' included.
   * @returns {Promise<number>}
   */
  lastPosition () { return guarded(() => this._inner.lastPosition()) }

  /**
   * The current version of a stream (0 when it has no events).
   * @param {string} streamId
   * @returns {Promise<number>}
   */
  streamVersion (streamId) { return guarded(() => this._inner.streamVersion(streamId)) }

  /**
   * Registers a projection compiled to a WebAssembly component (a `.wasm` path or its bytes).
   * @param {string | Uint8Array} wasm
   * @returns {Promise<ProjectionStatus>}
   */
  async registerProjection (wasm) {
    const bytes = typeof wasm === 'string' ? await fs.readFile(wasm) : wasm
    if (!(bytes instanceof Uint8Array)) {
      throw new InvalidArgumentError('registerProjection takes a .wasm path or its bytes')
    }
    return statusOf(await guarded(() => this._inner.registerProjection(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))))
  }

  /**
   * Folds every event not yet folded into the projection `name`.
   * @param {string} name
   * @returns {Promise<ProjectionStatus>}
   */
  async catchUp (name) { return statusOf(await guarded(() => this._inner.catchUp(name))) }

  /**
   * The stored status of the projection `name`.
   * @param {string} name
   * @returns {Promise<ProjectionStatus>}
   */
  async projectionStatus (name) { return statusOf(await guarded(() => this._inner.projectionStatus(name))) }

  /**
   * Queries the projection `name`. `request` is MessagePack-encoded unless it is bytes; the
   * response is decoded from MessagePack unless `raw`. By default the projection first folds
   * the events committed so far (`catchUp: false` answers from its state as it is).
   * @param {string} name
   * @param {unknown} [request]
   * @param {{ catchUp?: boolean, raw?: boolean }} [options]
   * @returns {Promise<unknown>}
   */
  async query (name, request = {}, options = {}) {
    const bytes = request instanceof Uint8Array ? request : encode(request)
    if (options.catchUp !== false) await this.catchUp(name)
    const response = await guarded(() => this._inner.query(name, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)))
    return options.raw ? response : decode(response)
  }

  /**
   * Waits for queued appends, then closes the store. Idempotent.
   * @returns {Promise<void>}
   */
  close () { return guarded(() => this._inner.close()) }

  /** Whether `close()` was called. @returns {boolean} */
  get closed () { return this._inner.closed }

  /** For `await using store = await Store.open(...)`. @returns {Promise<void>} */
  [Symbol.asyncDispose] () { return this.close() }
}

/** @returns {import('./native.js').EventPage} */
function emptyPage () {
  return { count: 0, positions: new Float64Array(0), versions: new Float64Array(0), recordedAt: new Float64Array(0), strings: [], streamIndex: new Uint32Array(0), typeIndex: new Uint32Array(0), eventIds: '', payload: Buffer.alloc(0), offsets: new Float64Array(1) }
}

/**
 * @param {import('./native.js').ProjectionInfo} info
 * @returns {ProjectionStatus}
 */
function statusOf (info) {
  /** @type {ProjectionStatus} */
  const status = {
    name: info.name,
    version: info.version,
    eventTypes: info.eventTypes,
    checkpoint: info.checkpoint,
    lag: info.lag,
    phase: info.phase
  }
  if (info.faultPosition !== undefined && info.faultPosition !== null) status.faultPosition = info.faultPosition
  if (info.faultMessage !== undefined && info.faultMessage !== null) status.faultMessage = info.faultMessage
  return status
}

module.exports = {
  Store,
  Event,
  AppendResult,
  EventReader,
  Subscription,
  StrataError,
  ConflictError,
  DuplicateEventIdError,
  InvalidArgumentError,
  ClosedError,
  NotFoundError,
  ProjectionFaultError,
  StoreFileError,
  StorageError,
  encode,
  decode
}
