#!/usr/bin/env python3
"""asyncpg through the router: named prepared statements from many clients
interleaved on few server connections, and session settings.

asyncpg runs every parameterised query as a named statement
(`__asyncpg_stmt_N__`) kept in a per-connection LRU cache; the cache is
small here, so statements are closed (protocol Close) and prepared again all
the time. Explicit `conn.prepare()` statements are reused across iterations
and transactions, then dropped and prepared again. `executemany` sends many
Bind/Execute pairs under one Sync; a failing row must undo the whole batch.
Errors hit a transaction, a batch and a Parse, and the connection must work
straight after each.

Setters SET search_path and TimeZone (simple protocol) outside a transaction
and must see them on every later statement; a SET in a rolled-back
transaction must not stick, one in a committed transaction must, and RESET
brings the defaults back. Workers must never see a setter's values.

See common.py for the environment it reads. Exits 1 on the first mismatch.
"""

import asyncpg

from common import (
    CLIENTS,
    ITERATIONS,
    REFERENCE,
    RENDERED,
    ROLE,
    ROLLED_BACK_ZONE,
    SETTER_STEPS,
    SETTER_ZONES,
    SETTERS,
    Mismatch,
    check,
    gather_all,
    run,
    same_decimal,
    values,
)

Q_PID = "SELECT pg_backend_pid()"
Q_ECHO = "SELECT $1::int, $2::text, $3::numeric, $4::timestamptz, $5::bytea, $6::int[], $7::text[], $8::text"
Q_ADD = "SELECT $1::int + $2::int"
Q_INSERT = (
    "INSERT INTO items (client, iter, label, amount, at, payload, tags, note) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING client, iter, label, amount, at, payload, tags, note"
)
Q_COUNT = "SELECT count(*) FROM items WHERE client = $1 AND iter = $2"
Q_COUNT_ALL = "SELECT count(*), coalesce(sum(iter), 0) FROM items WHERE client = $1"
Q_NOTE = "UPDATE items SET note = $3 || (10 / $4::int)::text WHERE client = $1 AND iter = $2"
Q_GET_NOTE = "SELECT note FROM items WHERE client = $1 AND iter = $2"
Q_DIV = "SELECT 10 / $1::int"
Q_BAD_COLUMN = "SELECT no_such_column FROM items WHERE client = $1"
Q_SETTINGS = "SELECT current_setting('TimeZone'), current_setting('search_path')"
Q_RENDER = "SELECT $1::timestamptz::text"
Q_MARKER = "SELECT v FROM marker"

# Smaller than the number of texts one iteration uses.
STATEMENT_CACHE = 4


class Rollback(Exception):
    """Raised to leave `conn.transaction()` with a rollback."""


async def connect():
    return await asyncpg.connect(statement_cache_size=STATEMENT_CACHE, timeout=10, command_timeout=60)


async def defaults(step):
    conn = await connect()
    step("reading the defaults")
    try:
        zone, path = await conn.fetchrow(Q_SETTINGS)
        rendered = await conn.fetchval(Q_RENDER, REFERENCE)
        return zone, path, rendered
    finally:
        await conn.close()


def check_echo(row, want):
    number, text, amount, at, payload, ints, tags, null = want
    check("echo int, text", (row[0], row[1]), (number, text))
    if not same_decimal(row[2], amount):
        raise Mismatch(f"echo numeric: got {row[2]!r}, want {amount!r}")
    check("echo timestamptz, bytea, int[], text[], NULL", tuple(row[3:]), (at, payload, ints, tags, null))


def item(client, it, want):
    _, text, amount, at, payload, _, tags, note = want
    return (client, it, text, amount, at, payload, tags, note)


def check_item(row, client, it, want):
    want_row = item(client, it, want)
    check("inserted client, iter, text", tuple(row[:3]), want_row[:3])
    if not same_decimal(row[3], want_row[3]):
        raise Mismatch(f"inserted numeric: got {row[3]!r}, want {want_row[3]!r}")
    check("inserted timestamptz, bytea, text[], NULL", tuple(row[4:]), want_row[4:])


async def worker(client, stats, default, step):
    default_zone, default_path, _ = default
    conn = await connect()
    try:
        step("removing rows of an earlier run")
        await conn.execute("DELETE FROM items WHERE client = $1", client)
        # Explicitly prepared, reused across iterations and transactions.
        echo = await conn.prepare(Q_ECHO)
        add = await conn.prepare(Q_ADD)
        for it in range(ITERATIONS):
            want = values(client, it)
            step(f"iteration {it}: prepared echo and add")
            check_echo(await echo.fetchrow(*want), want)
            check("add", await add.fetchval(client, it), client + it)
            step(f"iteration {it}: cached statements")
            check_echo(await conn.fetchrow(Q_ECHO, *want), want)
            check("add", await conn.fetchval(Q_ADD, it, client), client + it)
            step(f"iteration {it}: backend pid")
            stats.saw(f"worker {client}", await conn.fetchval(Q_PID))

            step(f"iteration {it}: committed transaction")
            async with conn.transaction():
                check_item(await conn.fetchrow(Q_INSERT, *item(client, it, want)), client, it, want)
                check("count inside the transaction", await conn.fetchval(Q_COUNT, client, it), 1)
                check_echo(await echo.fetchrow(*want), want)

            gone = -1 - it
            kind = it % 5
            if kind == 1:
                step(f"iteration {it}: rolled-back transaction")
                try:
                    async with conn.transaction():
                        await conn.fetchrow(Q_INSERT, *item(client, gone, want))
                        check("count before rollback", await conn.fetchval(Q_COUNT, client, gone), 1)
                        check("prepared add in the transaction", await add.fetchval(1, 2), 3)
                        raise Rollback()
                except Rollback:
                    pass
            elif kind == 2:
                step(f"iteration {it}: error inside a transaction")
                try:
                    async with conn.transaction():
                        await conn.fetchrow(Q_INSERT, *item(client, gone, want))
                        await conn.fetchval(Q_DIV, 0)
                    raise Mismatch("10 / 0 inside a transaction did not fail")
                except asyncpg.DivisionByZeroError:
                    pass
                check("prepared add after the failed transaction", await add.fetchval(it, 1), it + 1)
            elif kind == 3:
                step(f"iteration {it}: failing executemany")
                # One Sync for every row: the first row's update is undone.
                try:
                    await conn.executemany(Q_NOTE, [(client, it, "first", 1), (client, it, "second", 0)])
                    raise Mismatch("executemany with 10 / 0 did not fail")
                except asyncpg.DivisionByZeroError:
                    pass
                check("note after the failed batch", await conn.fetchval(Q_GET_NOTE, client, it), None)
                step(f"iteration {it}: executemany after the failed one")
                await conn.executemany(Q_NOTE, [(client, it, "first", 1), (client, it, "second", 5)])
                check("note after the batch", await conn.fetchval(Q_GET_NOTE, client, it), "second2")
            elif kind == 4:
                step(f"iteration {it}: Parse error")
                try:
                    await conn.fetch(Q_BAD_COLUMN, client)
                    raise Mismatch("a statement naming a missing column was accepted")
                except asyncpg.UndefinedColumnError:
                    pass
                check_echo(await echo.fetchrow(*want), want)
            step(f"iteration {it}: rolled-back row absent")
            check("rows left by rollback or error", await conn.fetchval(Q_COUNT, client, gone), 0)

            if it % 10 == 9:
                step(f"iteration {it}: drop and prepare again")
                # Dropping the last reference makes asyncpg close the
                # statement on the server before its next query.
                echo = add = None
                check("cached add", await conn.fetchval(Q_ADD, it, it), 2 * it)
                echo = await conn.prepare(Q_ECHO)
                add = await conn.prepare(Q_ADD)
                check_echo(await echo.fetchrow(*want), want)
            if it % 7 == 0:
                step(f"iteration {it}: no setter's settings")
                check("worker settings", tuple(await conn.fetchrow(Q_SETTINGS)), (default_zone, default_path))
                check("worker TimeZone ParameterStatus", conn.get_settings().TimeZone, default_zone)

        step("final count of committed rows")
        async with conn.transaction():
            want_sum = ITERATIONS * (ITERATIONS - 1) // 2
            row = await conn.fetchrow(Q_COUNT_ALL, client)
            check("committed rows and sum of iter", tuple(row), (ITERATIONS, want_sum))
    finally:
        await conn.close()


async def setter(index, stats, default, step):
    default_zone, default_path, default_rendered = default
    zone, later_zone = SETTER_ZONES[index % len(SETTER_ZONES)]
    letter = "ab"[index % 2]
    other = "ba"[index % 2]
    path = f"{ROLE}_{letter}, {ROLE}"
    conn = await connect()
    who = f"setter {index}"
    render = await conn.prepare(Q_RENDER)

    async def expect(label, zone, path, marker):
        stats.saw(who, await conn.fetchval(Q_PID))
        check(f"{label}: SHOW search_path", await conn.fetchval("SHOW search_path"), path)
        check(f"{label}: settings", tuple(await conn.fetchrow(Q_SETTINGS)), (zone, path))
        rendered = RENDERED.get(zone, default_rendered)
        check(f"{label}: timestamptz as text", await conn.fetchval(Q_RENDER, REFERENCE), rendered)
        check(f"{label}: timestamptz as text, prepared", await render.fetchval(REFERENCE), rendered)
        check(f"{label}: timestamptz instant", await conn.fetchval("SELECT $1::timestamptz", REFERENCE), REFERENCE)
        check(f"{label}: TimeZone ParameterStatus", conn.get_settings().TimeZone, zone)
        if marker is not None:
            check(f"{label}: marker", await conn.fetchval(Q_MARKER), marker)

    try:
        step("SET outside a transaction")
        await conn.execute(f"SET search_path TO {ROLE}_{letter}, {ROLE}")
        await conn.execute(f"SET TimeZone TO '{zone}'")
        for k in range(SETTER_STEPS):
            step(f"step {k}")
            await expect(f"step {k}", zone, path, letter)
            if k == SETTER_STEPS // 3:
                step(f"step {k}: SET in a rolled-back transaction")
                try:
                    async with conn.transaction():
                        await conn.execute(f"SET TimeZone TO '{ROLLED_BACK_ZONE}'")
                        await conn.execute(f"SET search_path TO {ROLE}_{other}, {ROLE}")
                        await expect("inside the transaction", ROLLED_BACK_ZONE, f"{ROLE}_{other}, {ROLE}", other)
                        raise Rollback()
                except Rollback:
                    pass
            if k == 2 * SETTER_STEPS // 3:
                step(f"step {k}: SET in a committed transaction, SET LOCAL")
                async with conn.transaction():
                    await conn.execute(f"SET TimeZone TO '{later_zone}'")
                    await conn.execute("SET LOCAL search_path TO public")
                    await expect("inside the transaction", later_zone, "public", None)
                zone = later_zone
        step("RESET")
        await conn.execute("RESET TimeZone")
        await conn.execute("RESET search_path")
        for k in range(5):
            step(f"after RESET, step {k}")
            await expect(f"after RESET, step {k}", default_zone, default_path, None)
    finally:
        await conn.close()


async def main(stats):
    (default,) = await gather_all([("first connection", lambda step: defaults(step))])
    clients = [(f"worker {c}", lambda step, c=c: worker(c, stats, default, step)) for c in range(CLIENTS)]
    clients += [(f"setter {s}", lambda step, s=s: setter(s, stats, default, step)) for s in range(SETTERS)]
    await gather_all(clients)


if __name__ == "__main__":
    print(f"asyncpg {asyncpg.__version__}")
    run("asyncpg", main)
