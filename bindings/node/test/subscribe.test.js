'use strict'
// Subscriptions: history then live events, from this process and from another one.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const path = require('node:path')
const { Store, ClosedError } = require('..')
const { freshStorePath } = require('./helpers')

/** The next `n` events of `subscription`, or a failure after `ms`. */
async function take (subscription, n, ms = 20_000) {
  const events = []
  const timeout = setTimeout(() => subscription.close(), ms)
  try {
    for await (const event of subscription) {
      events.push(event)
      if (events.length === n) break
    }
  } finally {
    clearTimeout(timeout)
  }
  assert.equal(events.length, n, `expected ${n} events within ${ms} ms, got ${events.length}`)
  return events
}

test('a subscription delivers history, then live events, in order, filtered by stream prefix', async () => {
  const store = await Store.open(freshStorePath())
  await store.append('order-1', [{ type: 'created' }, { type: 'paid' }])
  await store.append('user-1', [{ type: 'registered' }])
  const subscription = store.subscribe({ streamPrefix: 'order-' })
  const received = take(subscription, 4)
  setTimeout(() => {
    store.append('user-2', [{ type: 'registered' }])
      .then(() => store.append('order-2', [{ type: 'created' }, { type: 'cancelled' }]))
  }, 50)
  const events = await received
  assert.deepEqual(events.map((e) => `${e.streamId}/${e.type}`),
    ['order-1/created', 'order-1/paid', 'order-2/created', 'order-2/cancelled'])
  assert.deepEqual(events.map((e) => e.position), [1, 2, 5, 6])
  await store.close()
})

test('a subscription receives events appended by another process', async () => {
  const file = freshStorePath()
  const store = await Store.open(file)
  await store.append('local', [{ type: 'before' }])
  const subscription = store.subscribe({ fromPosition: 2, eventTypes: ['remote_event'] })
  const received = take(subscription, 3)
  const appender = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'append-from-child.js'), file, '3'],
    { stdio: ['ignore', 'inherit', 'inherit'] })
  const exitCode = await new Promise((resolve) => appender.on('exit', resolve))
  assert.equal(exitCode, 0)
  const events = await received
  assert.deepEqual(events.map((e) => e.decode()), [{ n: 0, pid: appender.pid }, { n: 1, pid: appender.pid }, { n: 2, pid: appender.pid }])
  assert.ok(events.every((e) => e.streamId === 'remote' && e.type === 'remote_event'))
  await store.close()
})

test('closing a subscription ends its iteration; closing the store ends it once delivered', async () => {
  const store = await Store.open(freshStorePath())
  await store.append('s', [{ type: 't' }])
  const first = store.subscribe()
  const pending = first.next()
  assert.equal((await pending).position, 1)
  const waiting = first.next()
  first.close()
  assert.equal(await waiting, undefined)
  assert.equal(await first.next(), undefined)

  const second = store.subscribe()
  await store.close()
  const events = []
  for await (const event of second) events.push(event)
  assert.equal(events.length, 1)
  assert.throws(() => store.subscribe(), ClosedError)
})
