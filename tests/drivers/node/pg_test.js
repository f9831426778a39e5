#!/usr/bin/env node
// node-postgres through the router: named prepared statements from many
// clients interleaved on few server connections, and session settings.
//
// Named queries ({ name, text, values }) are parsed once per connection and
// then only bound and executed. Names are chosen so that the router cannot
// get away with a global name table: `echo` is the same text on every
// client, `calc` is a different text on even and odd clients, and `add_N`
// is one text under three names. Even clients use node-postgres' pipeline
// mode (every query still ends with its own Sync, but several are in flight
// at once). Errors hit a transaction, a pipeline and a Parse, and the
// connection must work straight after each; `DEALLOCATE calc` drops a
// statement, which is then prepared again.
//
// Setters SET search_path and TimeZone outside a transaction and must see
// them on every later statement; a SET in a rolled-back transaction must not
// stick, one in a committed transaction must, and RESET brings the defaults
// back. Workers must never see a setter's values.
//
// Environment: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE (read by pg
// itself); DRIVER_CLIENTS (20), DRIVER_ITERATIONS (50), DRIVER_SETTERS (4),
// DRIVER_TIMEOUT seconds (300), DRIVER_POOL_MODE (session | transaction:
// turns on checks of how many server connections each client saw). The
// role's objects come from tests/drivers/schema.sql. Exits 1 on the first
// mismatch.
'use strict'

const assert = require('node:assert')
const pg = require('pg')

const CLIENTS = Number(process.env.DRIVER_CLIENTS || 20)
const ITERATIONS = Number(process.env.DRIVER_ITERATIONS || 50)
const SETTERS = Number(process.env.DRIVER_SETTERS || 4)
const TIMEOUT = Number(process.env.DRIVER_TIMEOUT || 300)
const POOL_MODE = process.env.DRIVER_POOL_MODE || ''
const ROLE = process.env.PGUSER || ''

const REFERENCE = '2024-01-15 12:00:00+00'
const RENDERED = {
  'Asia/Tokyo': '2024-01-15 21:00:00+09',
  'America/New_York': '2024-01-15 07:00:00-05',
  'Europe/Berlin': '2024-01-15 13:00:00+01',
  'Asia/Kolkata': '2024-01-15 17:30:00+05:30',
  'Pacific/Auckland': '2024-01-16 01:00:00+13',
}
const SETTER_ZONES = [
  ['Asia/Tokyo', 'America/New_York'],
  ['America/New_York', 'Europe/Berlin'],
  ['Europe/Berlin', 'Asia/Kolkata'],
  ['Asia/Kolkata', 'Asia/Tokyo'],
]
const ROLLED_BACK_ZONE = 'Pacific/Auckland'
const SETTER_STEPS = 30

const Q = {
  pid: 'SELECT pg_backend_pid()',
  echo: 'SELECT $1::int, $2::text, $3::numeric, $4::timestamptz, $5::bytea, $6::int[], $7::text[], $8::text',
  add: 'SELECT $1::int + $2::int',
  insert:
    'INSERT INTO items (client, iter, label, amount, at, payload, tags, note) ' +
    'VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING client, iter, label, amount, at, payload, tags, note',
  count: 'SELECT count(*)::int FROM items WHERE client = $1 AND iter = $2',
  countAll: 'SELECT count(*)::int, coalesce(sum(iter), 0)::int FROM items WHERE client = $1',
  div: 'SELECT 10 / $1::int',
  badColumn: 'SELECT no_such_column FROM items WHERE client = $1',
  settings: "SELECT current_setting('TimeZone'), current_setting('search_path')",
  render: 'SELECT $1::timestamptz::text',
  marker: 'SELECT v FROM marker',
}

class Mismatch extends Error {}

function check(what, got, want) {
  try {
    assert.deepStrictEqual(got, want)
  } catch {
    throw new Mismatch(`${what}: got ${show(got)}, want ${show(want)}`)
  }
}

function show(v) {
  return JSON.stringify(v, (_k, x) => (x && x.type === 'Buffer' ? `<bytes ${Buffer.from(x.data).toString('hex')}>` : x))
}

// Parameters of `echo` for one client and iteration: int, text, numeric
// (a string in node-postgres; NULL every third iteration), timestamptz
// (milliseconds: a Date holds no more), bytea, int[], text[], NULL.
function values(client, it) {
  const number = client * 1000 + it
  return [
    number,
    `c${client}-i${it} 'quoted' "double" ünïcødé €`,
    it % 3 === 0 ? null : `${number}.${String(it).padStart(4, '0')}`,
    new Date(Date.UTC(2024, 1, 29, 23, 59, 58) + client * 86400000 + it * 61000 + it * 7),
    Buffer.concat([Buffer.from([client % 256, it % 256, 0, 255, 92, 39]), Buffer.from('\0tail')]),
    [number, 0 - it, 0, 2147483647],
    [`c${client}`, 'with,comma', 'with"quote', '', `i${it}`],
    null,
  ]
}

function checkEcho(row, want) {
  check('echo', [...row.slice(0, 3), row[3].getTime(), ...row.slice(4)], [
    ...want.slice(0, 3),
    want[3].getTime(),
    ...want.slice(4),
  ])
}

function item(client, it, want) {
  const [, text, amount, at, payload, , tags, note] = want
  return [client, it, text, amount, at, payload, tags, note]
}

function checkItem(row, client, it, want) {
  const w = item(client, it, want)
  check('inserted row', [...row.slice(0, 4), row[4].getTime(), ...row.slice(5)], [
    ...w.slice(0, 4),
    w[4].getTime(),
    ...w.slice(5),
  ])
}

async function connect(pipeline) {
  const client = new pg.Client({ connectionTimeoutMillis: 10000, pipeline })
  // What the server last reported with ParameterStatus.
  client.reported = {}
  client.connection.on('parameterStatus', (msg) => {
    client.reported[msg.parameterName] = msg.parameterValue
  })
  await client.connect()
  // Failures reach the awaiting query; the event only must not crash us.
  client.on('error', () => {})
  return client
}

// One named statement, rows as arrays.
async function named(client, name, text, values) {
  const res = await client.query({ name, text, values, rowMode: 'array' })
  return res.rows
}

async function one(client, name, text, values) {
  const rows = await named(client, name, text, values)
  check(`${name}: row count`, rows.length, 1)
  return rows[0]
}

async function expectError(what, code, promise) {
  try {
    await promise
  } catch (e) {
    if (e.code === code) return
    throw new Mismatch(`${what}: got error ${e.code} ${e.message}, want SQLSTATE ${code}`)
  }
  throw new Mismatch(`${what}: succeeded, want SQLSTATE ${code}`)
}

async function defaults() {
  const client = await connect(false)
  try {
    const [zone, path] = await one(client, 'settings', Q.settings)
    const [rendered] = await one(client, 'render', Q.render, [REFERENCE])
    return { zone, path, rendered }
  } finally {
    await client.end()
  }
}

async function worker(index, stats, def, step) {
  const pipelined = index % 2 === 0
  const client = await connect(pipelined)
  const calc = index % 2 === 0 ? 'SELECT $1::int * 2' : 'SELECT $1::int * 3'
  const factor = index % 2 === 0 ? 2 : 3
  const addName = `add_${index % 3}`
  try {
    step('removing rows of an earlier run')
    await client.query('DELETE FROM items WHERE client = $1', [index])
    for (let it = 0; it < ITERATIONS; it++) {
      const want = values(index, it)
      step(`iteration ${it}: echo, calc, add`)
      if (pipelined) {
        // Three named statements in flight at once.
        const [echo, c, a] = await Promise.all([
          one(client, 'echo', Q.echo, want),
          one(client, 'calc', calc, [it]),
          one(client, addName, Q.add, [index, it]),
        ])
        checkEcho(echo, want)
        check('calc', c, [it * factor])
        check('add', a, [index + it])
      } else {
        checkEcho(await one(client, 'echo', Q.echo, want), want)
        check('calc', await one(client, 'calc', calc, [it]), [it * factor])
        check('add', await one(client, addName, Q.add, [index, it]), [index + it])
      }
      step(`iteration ${it}: backend pid`)
      stats.saw(`worker ${index}`, (await one(client, 'pid', Q.pid))[0])

      step(`iteration ${it}: committed transaction`)
      await client.query('BEGIN')
      checkItem(await one(client, 'insert', Q.insert, item(index, it, want)), index, it, want)
      check('count inside the transaction', await one(client, 'count', Q.count, [index, it]), [1])
      await client.query('COMMIT')

      const gone = -1 - it
      const kind = it % 5
      if (kind === 1) {
        step(`iteration ${it}: rolled-back transaction`)
        await client.query('BEGIN')
        await one(client, 'insert', Q.insert, item(index, gone, want))
        check('count before rollback', await one(client, 'count', Q.count, [index, gone]), [1])
        await client.query('ROLLBACK')
      } else if (kind === 2) {
        step(`iteration ${it}: error inside a transaction`)
        if (pipelined) {
          // BEGIN to ROLLBACK all sent before the first reply.
          const sent = [
            client.query('BEGIN'),
            named(client, 'insert', Q.insert, item(index, gone, want)),
            named(client, 'div', Q.div, [0]),
            named(client, 'calc', calc, [1]),
            client.query('ROLLBACK'),
          ]
          const settled = await Promise.allSettled(sent)
          check(
            'pipelined transaction outcomes',
            settled.map((s) => (s.status === 'fulfilled' ? 'ok' : s.reason.code)),
            ['ok', 'ok', '22012', '25P02', 'ok'],
          )
        } else {
          await client.query('BEGIN')
          await one(client, 'insert', Q.insert, item(index, gone, want))
          await expectError('10 / 0 in a transaction', '22012', one(client, 'div', Q.div, [0]))
          await expectError('statement after the error', '25P02', one(client, 'calc', calc, [1]))
          await client.query('ROLLBACK')
        }
        check('calc after the failed transaction', await one(client, 'calc', calc, [it]), [it * factor])
      } else if (kind === 3) {
        step(`iteration ${it}: error between successes`)
        // Each query has its own Sync: the error touches only itself.
        const queries = [
          () => one(client, addName, Q.add, [it, 1]),
          () => one(client, 'div', Q.div, [0]),
          () => one(client, 'div', Q.div, [5]),
          () => one(client, 'echo', Q.echo, want),
        ]
        let settled
        if (pipelined) {
          settled = await Promise.allSettled(queries.map((q) => q()))
        } else {
          settled = []
          for (const q of queries) settled.push(...(await Promise.allSettled([q()])))
        }
        check(
          'outcomes',
          settled.map((s) => (s.status === 'fulfilled' ? 'ok' : s.reason.code)),
          ['ok', '22012', 'ok', 'ok'],
        )
        check('add', settled[0].value, [it + 1])
        check('division', settled[2].value, [2])
        checkEcho(settled[3].value, want)
      } else if (kind === 4) {
        step(`iteration ${it}: Parse error`)
        await expectError('missing column', '42703', one(client, 'bad', Q.badColumn, [index]))
        checkEcho(await one(client, 'echo', Q.echo, want), want)
      }
      step(`iteration ${it}: rolled-back row absent`)
      check('rows left by rollback or error', await one(client, 'count', Q.count, [index, gone]), [0])

      if (it % 10 === 9) {
        step(`iteration ${it}: DEALLOCATE, then prepare again`)
        await client.query('DEALLOCATE calc')
        // node-postgres has no API to forget a statement: do what it would
        // do itself, so that the next `calc` is parsed again.
        delete client.connection.parsedStatements.calc
        check('calc prepared again', await one(client, 'calc', calc, [it]), [it * factor])
      }
      if (it % 7 === 0) {
        step(`iteration ${it}: no setter's settings`)
        check('worker settings', await one(client, 'settings', Q.settings), [def.zone, def.path])
        check('worker TimeZone ParameterStatus', client.reported.TimeZone, def.zone)
      }
    }
    step('final count of committed rows')
    await client.query('BEGIN')
    const total = await one(client, 'count_all', Q.countAll, [index])
    await client.query('COMMIT')
    check('committed rows and sum of iter', total, [ITERATIONS, (ITERATIONS * (ITERATIONS - 1)) / 2])
  } finally {
    await client.end()
  }
}

async function setter(index, stats, def, step) {
  let [zone, laterZone] = SETTER_ZONES[index % SETTER_ZONES.length]
  const letter = 'ab'[index % 2]
  const other = 'ba'[index % 2]
  const path = `${ROLE}_${letter}, ${ROLE}`
  const client = await connect(false)
  const who = `setter ${index}`

  async function expect(label, zone, path, marker) {
    stats.saw(who, (await one(client, 'pid', Q.pid))[0])
    check(`${label}: SHOW search_path`, await one(client, 'show_path', 'SHOW search_path'), [path])
    check(`${label}: settings`, await one(client, 'settings', Q.settings), [zone, path])
    const rendered = RENDERED[zone] || def.rendered
    check(`${label}: timestamptz as text`, await one(client, 'render', Q.render, [REFERENCE]), [rendered])
    check(`${label}: TimeZone ParameterStatus`, client.reported.TimeZone, zone)
    if (marker !== null) {
      check(`${label}: marker`, await one(client, 'marker', Q.marker), [marker])
    }
  }

  try {
    step('SET outside a transaction')
    await client.query(`SET search_path TO ${ROLE}_${letter}, ${ROLE}`)
    await client.query(`SET TimeZone TO '${zone}'`)
    for (let k = 0; k < SETTER_STEPS; k++) {
      step(`step ${k}`)
      await expect(`step ${k}`, zone, path, letter)
      if (k === Math.floor(SETTER_STEPS / 3)) {
        step(`step ${k}: SET in a rolled-back transaction`)
        await client.query('BEGIN')
        await client.query(`SET TimeZone TO '${ROLLED_BACK_ZONE}'`)
        await client.query(`SET search_path TO ${ROLE}_${other}, ${ROLE}`)
        await expect('inside the transaction', ROLLED_BACK_ZONE, `${ROLE}_${other}, ${ROLE}`, other)
        await client.query('ROLLBACK')
      }
      if (k === Math.floor((2 * SETTER_STEPS) / 3)) {
        step(`step ${k}: SET in a committed transaction, SET LOCAL`)
        await client.query('BEGIN')
        await client.query(`SET TimeZone TO '${laterZone}'`)
        await client.query('SET LOCAL search_path TO public')
        await expect('inside the transaction', laterZone, 'public', null)
        await client.query('COMMIT')
        zone = laterZone
      }
    }
    step('RESET')
    await client.query('RESET TimeZone')
    await client.query('RESET search_path')
    for (let k = 0; k < 5; k++) {
      step(`after RESET, step ${k}`)
      await expect(`after RESET, step ${k}`, def.zone, def.path, null)
    }
  } finally {
    await client.end()
  }
}

function verifyBackends(backends) {
  const everyone = new Set()
  const perClient = []
  for (const pids of backends.values()) {
    pids.forEach((p) => everyone.add(p))
    perClient.push(pids.size)
  }
  perClient.sort((a, b) => a - b)
  console.log(
    `node-postgres: ${backends.size} clients saw ${everyone.size} distinct server backends ` +
      `(per client: min ${perClient[0] || 0}, max ${perClient[perClient.length - 1] || 0})`,
  )
  if (POOL_MODE === 'session') {
    for (const [who, pids] of backends) check(`${who}: server backends in session mode`, pids.size, 1)
  } else if (POOL_MODE === 'transaction' && everyone.size < 2) {
    throw new Mismatch(
      `transaction mode, yet all clients shared one server backend: the script did not exercise connection switching`,
    )
  }
}

// Run every client; the first failure is reported with the client's name
// and step (the others are left to the exit).
async function runAll(clients) {
  return Promise.all(
    clients.map(async ([name, fn]) => {
      const where = { at: 'connecting' }
      try {
        return await fn((at) => {
          where.at = at
        })
      } catch (e) {
        const what = e instanceof Mismatch ? e.message : `${e.code || e.name}: ${e.message}`
        throw new Mismatch(`${name} at ${where.at}: ${what}`)
      }
    }),
  )
}

async function main() {
  const backends = new Map()
  const stats = {
    saw(who, pid) {
      if (!backends.has(who)) backends.set(who, new Set())
      backends.get(who).add(pid)
    },
  }
  const [def] = await runAll([['first connection', () => defaults()]])
  const clients = []
  for (let c = 0; c < CLIENTS; c++) clients.push([`worker ${c}`, (step) => worker(c, stats, def, step)])
  for (let s = 0; s < SETTERS; s++) clients.push([`setter ${s}`, (step) => setter(s, stats, def, step)])
  await runAll(clients)
  verifyBackends(backends)
}

const started = Date.now()
const timer = setTimeout(() => {
  console.error(`node-postgres: FAILED: not finished after ${TIMEOUT} s`)
  process.exit(1)
}, TIMEOUT * 1000)
console.log(`node-postgres (pg ${require('pg/package.json').version})`)
main().then(
  () => {
    clearTimeout(timer)
    console.log(
      `node-postgres: OK: ${CLIENTS} clients x ${ITERATIONS} iterations, ${SETTERS} setters x ` +
        `${SETTER_STEPS} steps, in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    )
  },
  (e) => {
    console.error(e instanceof Mismatch ? '' : e.stack)
    console.error(`node-postgres: FAILED: ${e.message}`)
    process.exit(1)
  },
)
