"""Shared by the Python driver scripts: settings from the environment, the
values each client sends, the checks, and the runner that reports the first
mismatch and exits non-zero.

Environment (libpq names, read by both drivers): PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE. The role's objects come from tests/drivers/schema.sql.
Optional knobs: DRIVER_CLIENTS (20), DRIVER_ITERATIONS (50), DRIVER_SETTERS
(4), DRIVER_TIMEOUT seconds (300), and DRIVER_POOL_MODE (`session` or
`transaction`), which turns on checks of how many server connections each
client saw (one in session mode, several in all in transaction mode).
"""

import asyncio
import datetime
import decimal
import os
import sys
import time
import traceback

CLIENTS = int(os.environ.get("DRIVER_CLIENTS", "20"))
ITERATIONS = int(os.environ.get("DRIVER_ITERATIONS", "50"))
SETTERS = int(os.environ.get("DRIVER_SETTERS", "4"))
TIMEOUT = float(os.environ.get("DRIVER_TIMEOUT", "300"))
POOL_MODE = os.environ.get("DRIVER_POOL_MODE", "")
ROLE = os.environ.get("PGUSER", "")

UTC = datetime.timezone.utc
# One instant, rendered by the server in each zone the setters use.
REFERENCE = datetime.datetime(2024, 1, 15, 12, 0, 0, tzinfo=UTC)
REFERENCE_SQL = "2024-01-15 12:00:00+00"
RENDERED = {
    "Asia/Tokyo": "2024-01-15 21:00:00+09",
    "America/New_York": "2024-01-15 07:00:00-05",
    "Europe/Berlin": "2024-01-15 13:00:00+01",
    "Asia/Kolkata": "2024-01-15 17:30:00+05:30",
    "Pacific/Auckland": "2024-01-16 01:00:00+13",
    "America/Sao_Paulo": "2024-01-15 09:00:00-03",
}
# (first zone, zone SET inside a committed transaction), per setter.
SETTER_ZONES = [
    ("Asia/Tokyo", "America/New_York"),
    ("America/New_York", "Europe/Berlin"),
    ("Europe/Berlin", "Asia/Kolkata"),
    ("Asia/Kolkata", "Asia/Tokyo"),
]
# SET inside transactions that roll back; never expected afterwards.
ROLLED_BACK_ZONE = "Pacific/Auckland"
SETTER_STEPS = 30


class Mismatch(Exception):
    """A result differed from what the script expected."""


def check(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def values(client, it):
    """Parameters of the echo statement for one client and iteration: int,
    text, numeric, timestamptz, bytea, int[], text[], and a NULL text. Every
    third iteration the numeric is NULL too."""
    number = client * 1000 + it
    text = f"c{client}-i{it} 'quoted' \"double\" ünïcødé €"
    amount = None if it % 3 == 0 else decimal.Decimal(f"{number}.{it:04d}")
    at = datetime.datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC) + datetime.timedelta(
        days=client, seconds=it * 61, microseconds=it * 7
    )
    payload = bytes([client % 256, it % 256, 0, 255, 92, 39]) + b"\x00tail"
    ints = [number, -it, 0, 2**31 - 1]
    tags = [f"c{client}", "with,comma", 'with"quote', "", f"i{it}"]
    return (number, text, amount, at, payload, ints, tags, None)


def same_decimal(got, want):
    """Numerics compare by their text, so the scale must survive too."""
    return (None if got is None else str(got)) == (None if want is None else str(want))


class Stats:
    def __init__(self):
        self.backends = {}

    def saw(self, who, pid):
        self.backends.setdefault(who, set()).add(pid)

    def verify(self, driver):
        """Per-client server connection counts, checked against the pool mode."""
        everyone = set().union(*self.backends.values()) if self.backends else set()
        per_client = sorted(len(v) for v in self.backends.values())
        print(
            f"{driver}: {len(self.backends)} clients saw {len(everyone)} distinct server "
            f"backends (per client: min {per_client[0] if per_client else 0}, "
            f"max {per_client[-1] if per_client else 0})"
        )
        if POOL_MODE == "session":
            for who, pids in self.backends.items():
                check(f"{who}: server backends in session mode", len(pids), 1)
        elif POOL_MODE == "transaction":
            if len(everyone) < 2:
                raise Mismatch(
                    f"transaction mode, yet all clients shared one server backend {everyone}: "
                    "the script did not exercise connection switching"
                )


def run(driver, main):
    """Run `main(stats)` under the overall timeout; print the outcome and exit
    1 on any failure."""
    stats = Stats()
    started = time.monotonic()

    async def guarded():
        await asyncio.wait_for(main(stats), TIMEOUT)

    try:
        asyncio.run(guarded())
        stats.verify(driver)
    except asyncio.TimeoutError:
        print(f"{driver}: FAILED: not finished after {TIMEOUT:.0f} s", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        traceback.print_exception(e.__cause__ or e)
        print(f"{driver}: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    print(
        f"{driver}: OK: {CLIENTS} clients x {ITERATIONS} iterations, {SETTERS} setters "
        f"x {SETTER_STEPS} steps, in {time.monotonic() - started:.1f} s"
    )


class Step:
    """Where a client is, for failure messages: `step("echo")` before each
    part of an iteration."""

    def __init__(self):
        self.where = "connecting"

    def __call__(self, where):
        self.where = where


async def gather_all(clients):
    """Run `fn(step)` for every `(name, fn)` in `clients`; on the first
    failure cancel the rest and raise it, naming the client and its step."""

    async def named(name, fn):
        step = Step()
        try:
            return await fn(step)
        except asyncio.CancelledError:
            raise
        except Mismatch as e:
            raise Mismatch(f"{name} at {step.where}: {e}") from e
        except Exception as e:  # noqa: BLE001
            raise Mismatch(f"{name} at {step.where}: {type(e).__name__}: {e}") from e

    tasks = [asyncio.create_task(named(name, fn)) for name, fn in clients]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
