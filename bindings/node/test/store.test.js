'use strict'
// Appending and reading: round trips, paging, concurrency checks, idempotency, bad input.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const {
  Store, Event, ConflictError, DuplicateEventIdError, InvalidArgumentError, ClosedError,
  StoreFileError, StrataError
} = require('..')
const { freshDir, freshStorePath } = require('./helpers')

async function withStore (options, body) {
  const store = await Store.open(freshStorePath(), options)
  try {
    return await body(store)
  } finally {
    await store.close()
  }
}

test('an appended event reads back with the same fields, data as bytes and as MessagePack', async () => {
  await withStore({}, async (store) => {
    const raw = Buffer.from([0, 1, 2, 255])
    const result = await store.append('order-1', [
      { type: 'order_created', data: { orderId: 'o-1', amountCents: 1999, tags: ['a', 'b'] }, metadata: { user: 'u-7' } },
      { type: 'order_paid', data: raw, eventId: '0190b5a6-8f2e-7c3a-9d41-1234567890ab' }
    ], { expectedVersion: 'noStream' })
    assert.equal(result.streamId, 'order-1')
    assert.equal(result.firstPosition, 1)
    assert.equal(result.lastPosition, 2)
    assert.equal(result.lastVersion, 2)
    assert.equal(result.alreadyStored, false)
    assert.equal(result.eventIds.length, 2)
    assert.equal(result.eventIds[1], '0190b5a6-8f2e-7c3a-9d41-1234567890ab')

    const events = await store.readStream('order-1').toArray()
    assert.equal(events.length, 2)
    const [created, paid] = events
    assert.ok(created instanceof Event)
    assert.equal(created.position, 1)
    assert.equal(created.version, 1)
    assert.equal(created.streamId, 'order-1')
    assert.equal(created.type, 'order_created')
    assert.equal(created.eventId, result.eventIds[0])
    assert.deepEqual(created.decode(), { orderId: 'o-1', amountCents: 1999, tags: ['a', 'b'] })
    assert.deepEqual(created.decodeMetadata(), { user: 'u-7' })
    assert.ok(Buffer.isBuffer(paid.data))
    assert.deepEqual([...paid.data], [0, 1, 2, 255])
    assert.equal(paid.metadata.length, 0)
    assert.equal(paid.decodeMetadata(), undefined)
    assert.equal(paid.eventId, '0190b5a6-8f2e-7c3a-9d41-1234567890ab')
    const now = Date.now() * 1000
    assert.ok(created.recordedAt <= paid.recordedAt && paid.recordedAt <= now)
    assert.ok(Math.abs(created.recordedDate.getTime() - Date.now()) < 60_000)
    assert.equal(await store.streamVersion('order-1'), 2)
    assert.equal(await store.streamVersion('order-2'), 0)
    assert.equal(await store.lastPosition(), 2)
  })
})

test('the events survive closing and reopening the file', async () => {
  const file = freshStorePath()
  const first = await Store.open(file)
  await first.append('s', [{ type: 't', data: 'kept' }])
  await first.close()
  assert.equal(first.closed, true)
  const second = await Store.open(file)
  const [event] = await second.readAll().toArray()
  assert.equal(event.decode(), 'kept')
  await second.close()
})

test('reads page through the log: readAll, readStream forwards and backwards, readByType', async () => {
  await withStore({ durability: 'fast' }, async (store) => {
    for (let batch = 0; batch < 5; batch++) {
      const events = []
      for (let i = 0; i < 100; i++) {
        const n = batch * 100 + i
        events.push({ type: n % 2 === 0 ? 'even' : 'odd', data: { n } })
      }
      await store.append(`stream-${batch % 2}`, events)
    }
    const all = await store.readAll({ pageSize: 7 }).toArray()
    assert.deepEqual(all.map((e) => e.position), Array.from({ length: 500 }, (_, i) => i + 1))
    assert.deepEqual(all.map((e) => e.decode().n), Array.from({ length: 500 }, (_, i) => i))

    let pages = 0
    for await (const page of store.readAll({ fromPosition: 451, pageSize: 20 }).pages()) {
      assert.ok(page.length <= 20)
      pages++
    }
    assert.equal(pages, 3)

    const forwards = await store.readStream('stream-1', { fromVersion: 50, pageSize: 33 }).toArray()
    assert.deepEqual(forwards.map((e) => e.version), Array.from({ length: 151 }, (_, i) => i + 50))
    const backwards = await store.readStream('stream-0', { backwards: true, pageSize: 64, limit: 150 }).toArray()
    assert.equal(backwards.length, 150)
    assert.deepEqual(backwards.slice(0, 3).map((e) => e.version), [300, 299, 298])
    assert.equal(backwards.at(-1).version, 151)
    assert.deepEqual(await store.readStream('no-such-stream').toArray(), [])

    const odd = await store.readByType('odd', { pageSize: 50 }).toArray()
    assert.equal(odd.length, 250)
    assert.ok(odd.every((e) => e.type === 'odd' && e.decode().n % 2 === 1))
    const none = await store.readByType(['even', 'odd'], { to: new Date(0) }).toArray()
    assert.equal(none.length, 0)

    let seen = 0
    for await (const event of store.readAll({ fromPosition: 10 })) {
      assert.equal(event.position, 10 + seen)
      if (++seen === 5) break
    }
    assert.equal(seen, 5)
  })
})

test('a conflicting append is a ConflictError with the actual version, and stores nothing', async () => {
  await withStore({}, async (store) => {
    await store.append('account-1', [{ type: 'opened' }, { type: 'credited', data: { cents: 5 } }])
    const attempts = [
      { expectedVersion: 'noStream' },
      { expectedVersion: 1 },
      { expectedVersion: 3 }
    ]
    for (const options of attempts) {
      await assert.rejects(store.append('account-1', [{ type: 'debited' }], options), (error) => {
        assert.ok(error instanceof ConflictError)
        assert.ok(error instanceof StrataError)
        assert.ok(error instanceof Error)
        assert.equal(error.code, 'CONFLICT')
        assert.equal(error.actualVersion, 2)
        assert.match(error.message, /conflict on stream "account-1"/)
        return true
      })
    }
    await assert.rejects(store.append('account-2', [{ type: 'debited' }], { expectedVersion: 'streamExists' }),
      (error) => error instanceof ConflictError && error.actualVersion === 0)
    assert.equal(await store.lastPosition(), 2)
    const ok = await store.append('account-1', [{ type: 'debited' }], { expectedVersion: 2 })
    assert.equal(ok.lastVersion, 3)
  })
})

test('concurrent appends with the same expected version: exactly one wins', async () => {
  await withStore({}, async (store) => {
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) =>
      store.append('race', [{ type: 'claimed', data: { by: i } }], { expectedVersion: 'noStream' })))
    const won = results.filter((r) => r.status === 'fulfilled')
    const lost = results.filter((r) => r.status === 'rejected')
    assert.equal(won.length, 1)
    assert.ok(lost.every((r) => r.reason instanceof ConflictError && r.reason.actualVersion === 1))
    assert.equal((await store.readStream('race').toArray()).length, 1)
  })
})

test('retrying an append with the same event ids returns the original positions, written once', async () => {
  await withStore({}, async (store) => {
    const events = [
      { type: 'item_added', data: { sku: 'a' }, eventId: '11111111-1111-4111-8111-111111111111' },
      { type: 'item_added', data: { sku: 'b' }, eventId: '22222222-2222-4222-8222-222222222222' }
    ]
    await store.append('other', [{ type: 'noise' }])
    const first = await store.append('cart-1', events, { expectedVersion: 'noStream' })
    const retry = await store.append('cart-1', events, { expectedVersion: 'noStream' })
    assert.equal(first.alreadyStored, false)
    assert.equal(retry.alreadyStored, true)
    assert.equal(retry.firstPosition, first.firstPosition)
    assert.equal(retry.lastPosition, first.lastPosition)
    assert.deepEqual(retry.eventIds, first.eventIds)
    assert.equal((await store.readAll().toArray()).length, 3)

    await assert.rejects(store.append('cart-2', [events[0]]), (error) => {
      assert.ok(error instanceof DuplicateEventIdError)
      assert.equal(error.code, 'DUPLICATE_ID')
      return true
    })
    assert.equal(await store.lastPosition(), 3)
  })
})

test('bad input is refused with a clear error and stores nothing', async () => {
  await withStore({ maxPayloadBytes: 1024 }, async (store) => {
    await store.append('good', [{ type: 'ok' }])
    const cases = [
      [() => store.append('s', []), /non-empty array/],
      [() => store.append('s', 'not an array'), /non-empty array/],
      [() => store.append('s', [{ data: 1 }]), /event 0: type must be a string/],
      [() => store.append('s', [{ type: 'ok' }, null]), /event 1 must be an object/],
      [() => store.append('', [{ type: 'ok' }]), /stream id must be 1\.\.=255 bytes/],
      [() => store.append('x'.repeat(256), [{ type: 'ok' }]), /stream id must be 1\.\.=255 bytes/],
      [() => store.append('s', [{ type: '' }]), /event type must be 1\.\.=255 bytes/],
      [() => store.append('s', [{ type: 'ok', data: Buffer.alloc(2000) }]), /over the limit of 1024/],
      [() => store.append('s', [{ type: 'ok', eventId: 'not-a-uuid' }]), /eventId "not-a-uuid" is not a UUID/],
      [() => store.append('s', [{ type: 'ok', eventId: 7 }]), /eventId must be a UUID string/],
      [() => store.append('s', [{ type: 'ok' }], { expectedVersion: -5 }), /expectedVersion must be/],
      [() => store.append('s', [{ type: 'ok' }], { expectedVersion: 'latest' }), /expectedVersion must be/],
      [() => store.append('s', [{ type: 'ok', data: 10n ** 30n }]), /cannot be encoded as MessagePack/],
      [() => store.append(42, [{ type: 'ok' }]), /streamId must be a string/],
      // The last event is bad: the good ones before it are not stored either.
      [() => store.append('s', [{ type: 'ok' }, { type: 'ok' }, { type: 'x'.repeat(300) }]), /event type must be/]
    ]
    for (const [call, message] of cases) {
      await assert.rejects(call, (error) => {
        assert.ok(error instanceof InvalidArgumentError, `${error.name}: ${error.message}`)
        assert.equal(error.code, 'INVALID_ARGUMENT')
        assert.match(error.message, message)
        return true
      })
    }
    assert.throws(() => store.readAll({ pageSize: 0 }), InvalidArgumentError)
    await assert.rejects(store.readAll({ pageSize: 200_000 }).toArray(), /page size must be 1\.\.=100000/)
    await assert.rejects(store.readAll({ fromPosition: -1 }).toArray(), /fromPosition must be a whole number/)
    assert.equal(await store.lastPosition(), 1)
    assert.equal(await store.streamVersion('s'), 0)
  })
})

test('opening a file that is not a store is refused and leaves it untouched', async () => {
  const file = path.join(freshDir(), 'notes.txt')
  fs.writeFileSync(file, 'these are my notes, not a database '.repeat(200))
  const before = fs.readFileSync(file)
  await assert.rejects(Store.open(file), (error) => {
    assert.ok(error instanceof StoreFileError)
    assert.equal(error.code, 'CORRUPT')
    assert.match(error.message, /is not an SQLite database/)
    return true
  })
  assert.deepEqual(fs.readFileSync(file), before)
  await assert.rejects(Store.open(freshStorePath(), { durability: 'sometimes' }), /durability must be "durable" or "fast"/)
  await assert.rejects(Store.open(freshStorePath(), { bucketWidth: 'year' }), InvalidArgumentError)
  await assert.rejects(Store.open(''), InvalidArgumentError)
})

test('a closed store refuses appends and reads with ClosedError; closing twice is fine', async () => {
  const store = await Store.open(freshStorePath())
  await store.append('s', [{ type: 't' }])
  await store.close()
  await store.close()
  await assert.rejects(store.append('s', [{ type: 't' }]), (error) => error instanceof ClosedError && error.code === 'CLOSED')
  await assert.rejects(store.readAll().toArray(), ClosedError)
  assert.throws(() => store.subscribe(), ClosedError)
})
