#!/usr/bin/env python3
"""psycopg 3 through the router: named server-side prepared statements from
many clients interleaved on few server connections, and session settings.

Every statement with `prepare=True` (and, with prepare_threshold=0, every
other parameterised one) runs as a named statement psycopg calls `_pg3_N`,
numbered per connection in order of first use. Even and odd clients first
use their statements in different orders, so the same name means different
texts on different clients, and one text has different names. prepared_max
is small so psycopg keeps closing statements (protocol Close; the bundled
libpq is 17+) and preparing them again; `DEALLOCATE ALL` empties its cache
too. Errors hit a transaction, a pipeline and a Parse, and the connection
must work straight after each.

Setters SET search_path and TimeZone outside a transaction and must see them
(SHOW, current_setting, a timestamptz rendered in the zone, the table the
path picks, psycopg's ParameterStatus) on every later statement; a SET in a
rolled-back transaction must not stick, one in a committed transaction must,
and RESET brings the defaults back. Workers must never see a setter's values.

See common.py for the environment it reads. Exits 1 on the first mismatch.
"""

import datetime
import logging

import psycopg
from psycopg import errors

from common import (
    CLIENTS,
    ITERATIONS,
    REFERENCE,
    REFERENCE_SQL,
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
Q_ECHO = "SELECT %s::int, %s::text, %s::numeric, %s::timestamptz, %s::bytea, %s::int[], %s::text[], %s::text"
Q_ADD = "SELECT %s::int + %s::int"
Q_INSERT = (
    "INSERT INTO items (client, iter, label, amount, at, payload, tags, note) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING client, iter, label, amount, at, payload, tags, note"
)
Q_COUNT = "SELECT count(*) FROM items WHERE client = %s AND iter = %s"
Q_COUNT_ALL = "SELECT count(*), coalesce(sum(iter), 0) FROM items WHERE client = %s"
Q_DIV = "SELECT 10 / %s::int"
Q_BAD_COLUMN = "SELECT no_such_column FROM items WHERE client = %s"
Q_SETTINGS = "SELECT current_setting('TimeZone'), current_setting('search_path')"
Q_RENDER = "SELECT %s::timestamptz::text"
Q_MARKER = "SELECT v FROM marker"

# Small, so that the statements of one iteration do not all fit.
PREPARED_MAX = 5


async def connect():
    conn = await psycopg.AsyncConnection.connect(autocommit=True, prepare_threshold=0, connect_timeout=10)
    conn.prepared_max = PREPARED_MAX
    return conn


async def one(conn, query, params=None, prepare=True):
    cur = await conn.execute(query, params, prepare=prepare)
    return await cur.fetchone()


async def defaults(step):
    """TimeZone, search_path and the reference instant's rendering of a fresh
    connection, before any client has SET anything."""
    conn = await connect()
    step("reading the defaults")
    try:
        zone, path = await one(conn, Q_SETTINGS)
        (rendered,) = await one(conn, Q_RENDER, (REFERENCE_SQL,))
        return zone, path, rendered
    finally:
        await conn.close()


def check_echo(row, want):
    number, text, amount, at, payload, ints, tags, null = want
    check("echo int", row[0], number)
    check("echo text", row[1], text)
    if not same_decimal(row[2], amount):
        raise Mismatch(f"echo numeric: got {row[2]!r}, want {amount!r}")
    check("echo timestamptz", row[3], at)
    check("echo bytea", bytes(row[4]), payload)
    check("echo int[]", row[5], ints)
    check("echo text[]", row[6], tags)
    check("echo NULL", row[7], null)


def item(client, it, want):
    """A row of `items` made of the echo values (no int[]; NULL note)."""
    _, text, amount, at, payload, _, tags, note = want
    return (client, it, text, amount, at, payload, tags, note)


def check_item(row, client, it, want):
    want_row = item(client, it, want)
    check("inserted client, iter, text", row[:3], want_row[:3])
    if not same_decimal(row[3], want_row[3]):
        raise Mismatch(f"inserted numeric: got {row[3]!r}, want {want_row[3]!r}")
    check("inserted timestamptz, bytea, text[], NULL", (row[4], bytes(row[5]), row[6], row[7]), want_row[4:])


async def worker(client, stats, default, step):
    default_zone, default_path, _ = default
    conn = await connect()
    try:
        # Different first-use order: `_pg3_0` is Q_ECHO here, Q_ADD there.
        order = [Q_ECHO, Q_ADD] if client % 2 == 0 else [Q_ADD, Q_ECHO]
        step("removing rows of an earlier run")
        await conn.execute("DELETE FROM items WHERE client = %s", (client,), prepare=False)
        for it in range(ITERATIONS):
            want = values(client, it)
            for q in order:
                if q is Q_ECHO:
                    step(f"iteration {it}: echo")
                    check_echo(await one(conn, Q_ECHO, want), want)
                else:
                    step(f"iteration {it}: add")
                    check("add", await one(conn, Q_ADD, (client, it)), (client + it,))

            step(f"iteration {it}: backend pid")
            (pid,) = await one(conn, Q_PID)
            stats.saw(f"worker {client}", pid)

            step(f"iteration {it}: committed transaction")
            async with conn.transaction():
                row = await one(conn, Q_INSERT, item(client, it, want))
                check_item(row, client, it, want)
                check("count inside the transaction", await one(conn, Q_COUNT, (client, it)), (1,))

            gone = -1 - it
            kind = it % 5
            if kind == 1:
                step(f"iteration {it}: rolled-back transaction")
                async with conn.transaction():
                    await one(conn, Q_INSERT, item(client, gone, want))
                    check("count before rollback", await one(conn, Q_COUNT, (client, gone)), (1,))
                    raise psycopg.Rollback()
            elif kind == 2:
                step(f"iteration {it}: error inside a transaction")
                try:
                    async with conn.transaction():
                        await one(conn, Q_INSERT, item(client, gone, want))
                        await one(conn, Q_DIV, (0,))
                    raise Mismatch("10 / 0 inside a transaction did not fail")
                except errors.DivisionByZero:
                    pass
                check("add after the failed transaction", await one(conn, Q_ADD, (it, 1)), (it + 1,))
            elif kind == 3:
                step(f"iteration {it}: error inside a pipeline")
                # One Sync for the lot: the insert shares the implicit
                # transaction that the division error aborts.
                try:
                    async with conn.pipeline():
                        await conn.execute(Q_INSERT, item(client, gone, want), prepare=True)
                        await conn.execute(Q_DIV, (0,), prepare=True)
                        await conn.execute(Q_ADD, (1, 1), prepare=True)
                    raise Mismatch("10 / 0 inside a pipeline did not fail")
                except errors.DivisionByZero:
                    pass
                step(f"iteration {it}: pipeline after the failed one")
                async with conn.pipeline():
                    add = await conn.execute(Q_ADD, (it, 2), prepare=True)
                    echo = await conn.execute(Q_ECHO, want, prepare=True)
                    div = await conn.execute(Q_DIV, (5,), prepare=True)
                check("pipelined add", await add.fetchone(), (it + 2,))
                check_echo(await echo.fetchone(), want)
                check("pipelined division", await div.fetchone(), (2,))
            elif kind == 4:
                step(f"iteration {it}: Parse error")
                try:
                    await one(conn, Q_BAD_COLUMN, (client,))
                    raise Mismatch("a statement naming a missing column was accepted")
                except errors.UndefinedColumn:
                    pass
                check_echo(await one(conn, Q_ECHO, want), want)
            step(f"iteration {it}: rolled-back row absent")
            check("rows left by rollback or error", await one(conn, Q_COUNT, (client, gone)), (0,))

            if it % 10 == 9:
                step(f"iteration {it}: DEALLOCATE ALL, then prepare again")
                await conn.execute("DEALLOCATE ALL", prepare=False)
                check("add after DEALLOCATE ALL", await one(conn, Q_ADD, (it, it)), (2 * it,))
                check_echo(await one(conn, Q_ECHO, want), want)
            if it % 7 == 0:
                step(f"iteration {it}: no setter's settings")
                check("worker settings", await one(conn, Q_SETTINGS), (default_zone, default_path))
                check("worker TimeZone ParameterStatus", conn.info.parameter_status("TimeZone"), default_zone)

        step("final count of committed rows")
        async with conn.transaction():
            want_sum = ITERATIONS * (ITERATIONS - 1) // 2
            check("committed rows and sum of iter", await one(conn, Q_COUNT_ALL, (client,)), (ITERATIONS, want_sum))
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

    async def expect(label, zone, path, marker):
        (pid,) = await one(conn, Q_PID)
        stats.saw(who, pid)
        check(f"{label}: SHOW search_path", await one(conn, "SHOW search_path"), (path,))
        check(f"{label}: settings", await one(conn, Q_SETTINGS), (zone, path))
        rendered = RENDERED.get(zone, default_rendered)
        check(f"{label}: timestamptz as text", await one(conn, Q_RENDER, (REFERENCE_SQL,)), (rendered,))
        # psycopg builds timestamptz values in the zone the server reported.
        (at,) = await one(conn, "SELECT %s::timestamptz", (REFERENCE,))
        check(f"{label}: timestamptz instant", at, REFERENCE)
        check(f"{label}: timestamptz UTC offset", at.utcoffset(), offset_of(rendered))
        check(f"{label}: TimeZone ParameterStatus", conn.info.parameter_status("TimeZone"), zone)
        if marker is not None:
            check(f"{label}: marker", await one(conn, Q_MARKER), (marker,))

    try:
        step("SET outside a transaction")
        await conn.execute(f"SET search_path TO {ROLE}_{letter}, {ROLE}", prepare=False)
        await conn.execute(f"SET TimeZone TO '{zone}'", prepare=False)
        for k in range(SETTER_STEPS):
            step(f"step {k}")
            await expect(f"step {k}", zone, path, letter)
            if k == SETTER_STEPS // 3:
                step(f"step {k}: SET in a rolled-back transaction")
                async with conn.transaction():
                    await conn.execute(f"SET TimeZone TO '{ROLLED_BACK_ZONE}'", prepare=False)
                    await conn.execute(f"SET search_path TO {ROLE}_{other}, {ROLE}", prepare=False)
                    await expect("inside the transaction", ROLLED_BACK_ZONE, f"{ROLE}_{other}, {ROLE}", other)
                    raise psycopg.Rollback()
            if k == 2 * SETTER_STEPS // 3:
                step(f"step {k}: SET in a committed transaction, SET LOCAL")
                async with conn.transaction():
                    await conn.execute(f"SET TimeZone TO '{later_zone}'", prepare=False)
                    await conn.execute("SET LOCAL search_path TO public", prepare=False)
                    await expect("inside the transaction", later_zone, "public", None)
                zone = later_zone
        step("RESET")
        await conn.execute("RESET TimeZone", prepare=False)
        await conn.execute("RESET search_path", prepare=False)
        for k in range(5):
            step(f"after RESET, step {k}")
            await expect(f"after RESET, step {k}", default_zone, default_path, None)
    finally:
        await conn.close()


def offset_of(rendered):
    """UTC offset at the end of a rendering such as `... 17:30:00+05:30`."""
    sign = -1 if rendered[19] == "-" else 1
    hours, _, minutes = rendered[20:].partition(":")
    return sign * datetime.timedelta(hours=int(hours), minutes=int(minutes or 0))


async def main(stats):
    (default,) = await gather_all([("first connection", lambda step: defaults(step))])
    clients = [(f"worker {c}", lambda step, c=c: worker(c, stats, default, step)) for c in range(CLIENTS)]
    clients += [(f"setter {s}", lambda step, s=s: setter(s, stats, default, step)) for s in range(SETTERS)]
    await gather_all(clients)


if __name__ == "__main__":
    # psycopg logs a warning for each pipeline left by the expected error.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    print(f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}, libpq {psycopg.pq.version()})")
    run("psycopg", main)
