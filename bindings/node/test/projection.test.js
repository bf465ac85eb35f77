'use strict'
// WASM projections registered from a .wasm file and queried.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const { Store, InvalidArgumentError, NotFoundError } = require('..')
const { freshStorePath, pluginPath } = require('./helpers')

test('the event-counter projection counts the events of each type, and keeps its checkpoint', async () => {
  const file = freshStorePath()
  const store = await Store.open(file)
  await store.append('order-1', [{ type: 'order_created' }, { type: 'order_paid' }])
  await store.append('order-2', [{ type: 'order_created' }])
  const registered = await store.registerProjection(pluginPath('event-counter'))
  assert.equal(registered.name, 'event-counter')
  assert.equal(registered.version, 1)
  assert.deepEqual(registered.eventTypes, [])

  assert.deepEqual(await store.query('event-counter'), { order_created: 2, order_paid: 1 })
  const status = await store.projectionStatus('event-counter')
  assert.equal(status.checkpoint, 3)
  assert.equal(status.lag, 0)
  assert.equal(status.phase, 'live')

  await store.append('order-1', [{ type: 'order_shipped' }])
  // Without catching up it answers from the state as committed; then it folds the new event.
  assert.deepEqual(await store.query('event-counter', {}, { catchUp: false }), { order_created: 2, order_paid: 1 })
  assert.deepEqual(await store.query('event-counter'), { order_created: 2, order_paid: 1, order_shipped: 1 })
  const raw = await store.query('event-counter', Buffer.from([0x80]), { raw: true })
  assert.ok(Buffer.isBuffer(raw))
  await store.close()

  // Reopened, registered from its bytes: it resumes from its checkpoint.
  const again = await Store.open(file)
  const resumed = await again.registerProjection(fs.readFileSync(pluginPath('event-counter')))
  assert.equal(resumed.checkpoint, 4)
  assert.deepEqual(await again.query('event-counter'), { order_created: 2, order_paid: 1, order_shipped: 1 })
  await again.close()
})

test('bytes that are not a projection component, and unknown names, are clear errors', async () => {
  const store = await Store.open(freshStorePath())
  await assert.rejects(store.registerProjection(Buffer.from('not wasm at all')), (error) => {
    assert.ok(error instanceof InvalidArgumentError)
    assert.match(error.message, /compiling the component/)
    return true
  })
  await assert.rejects(store.registerProjection(42), InvalidArgumentError)
  await assert.rejects(store.query('no-such-projection'), (error) => error instanceof NotFoundError && error.code === 'NOT_FOUND')
  await store.close()
})
