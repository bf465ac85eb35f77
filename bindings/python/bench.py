"""strata's Python package against Python's own sqlite3 module, in the same run.

    python bindings/python/bench.py [--events 1000000] [--batch 1000] [--runs 3]

1. Appending: ``--events`` events of 200 bytes to 100 streams in batches of ``--batch``, one
   call per batch (``store.append``), against ``executemany`` of the same rows into an SQLite
   table with the indexes strata keeps (unique stream+version, unique event id, type+time),
   one transaction per batch, at the same durability: WAL with synchronous=FULL ("durable",
   strata's default) and synchronous=NORMAL ("fast").
2. Reading: every stored event into Python objects (``strata.Event``, iterating
   ``store.read_all()``) against iterating a ``SELECT`` of the same rows from a plain table
   (sqlite3 tuples), touching ``data`` of each. Median of ``--runs``, order alternated.

Prints each measurement, then the ratios (strata / sqlite3 throughput; the goal is >= 1.0x).
"""

import argparse
import os
import sqlite3
import statistics
import tempfile
import time

import strata

EVENT_TYPES = ["order_created", "payment_confirmed", "inventory_reserved", "order_completed"]
STREAMS = 100

INDEXED_SCHEMA = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, version INTEGER NOT NULL,
    event_type TEXT NOT NULL, event_id BLOB NOT NULL, recorded_at INTEGER NOT NULL,
    data BLOB NOT NULL, metadata BLOB NOT NULL);
CREATE UNIQUE INDEX events_stream_version ON events (stream_id, version);
CREATE UNIQUE INDEX events_event_id ON events (event_id);
CREATE INDEX events_type_recorded ON events (event_type, recorded_at);
"""
PLAIN_SCHEMA = """
CREATE TABLE events (
    position INTEGER PRIMARY KEY, stream_id TEXT NOT NULL, version INTEGER NOT NULL,
    event_type TEXT NOT NULL, event_id BLOB NOT NULL, recorded_at INTEGER NOT NULL,
    data BLOB NOT NULL, metadata BLOB NOT NULL);
"""
COLUMNS = "position, stream_id, version, event_type, event_id, recorded_at, data, metadata"


def payloads(batch):
    return [os.urandom(200) for _ in range(batch)]


def append_strata(path, durability, total, batch, data):
    """Seconds to append ``total`` events, one ``append`` per batch."""
    with strata.open(path, durability=durability) as store:
        events = [(EVENT_TYPES[i % 4], data[i]) for i in range(batch)]
        started = time.perf_counter()
        for b in range(total // batch):
            store.append(f"stream-{b % STREAMS}", events)
        return time.perf_counter() - started


def time_ordered_ids(count):
    """Ids like strata's UUIDv7 (time first), made before the timed part: the baseline does
    not pay for them."""
    base = time.time_ns() // 1000
    return [(base + i).to_bytes(8, "big") + os.urandom(8) for i in range(count)]


def sqlite_connection(path, durability, schema):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=" + ("FULL" if durability == "durable" else "NORMAL"))
    conn.executescript(schema)
    return conn


def append_sqlite(path, durability, total, batch, data):
    """Seconds to insert ``total`` rows with ``executemany``, one transaction per batch."""
    conn = sqlite_connection(path, durability, INDEXED_SCHEMA)
    ids = time_ordered_ids(total)
    versions = [0] * STREAMS
    insert = f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    started = time.perf_counter()
    position = 0
    for b in range(total // batch):
        stream = b % STREAMS
        stream_id = f"stream-{stream}"
        now = time.time_ns() // 1000
        first = versions[stream]
        rows = [
            (position + i + 1, stream_id, first + i + 1, EVENT_TYPES[i % 4], ids[position + i], now, data[i], b"")
            for i in range(batch)
        ]
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
        versions[stream] += batch
        position += batch
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def copy_to_plain_table(store_path, plain_path):
    """The store's events, the same rows, into a table with no index but its primary key."""
    conn = sqlite_connection(plain_path, "fast", PLAIN_SCHEMA)
    with strata.open(store_path) as store:
        cursor = store.read_all()
        while True:
            page = cursor.next_page()
            if not page:
                break
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.position, e.stream_id, e.version, e.event_type, e.event_id.bytes, e.recorded_at, e.data, e.metadata) for e in page],
            )
            conn.execute("COMMIT")
    conn.close()


def read_strata(path, total):
    with strata.open(path) as store:
        started = time.perf_counter()
        size = 0
        count = 0
        for event in store.read_all():
            size += len(event.data)
            count += 1
        elapsed = time.perf_counter() - started
    assert count == total, count
    return elapsed


def read_sqlite(path, total):
    conn = sqlite3.connect(path)
    started = time.perf_counter()
    size = 0
    count = 0
    for row in conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY position"):
        size += len(row[6])
        count += 1
    elapsed = time.perf_counter() - started
    conn.close()
    assert count == total, count
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    total, batch = args.events - args.events % args.batch, args.batch
    with open("/proc/loadavg") as f:
        print(f"strata {strata.__version__}, sqlite3 {sqlite3.sqlite_version}, load average {f.read().split()[:3]}")
    print(f"{total:,} events of 200 bytes, {STREAMS} streams, batches of {batch:,}")
    data = payloads(batch)
    ratios = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        stores = {}
        for durability in ("durable", "fast"):
            store_path = os.path.join(tmp, f"strata-{durability}.db")
            sqlite_path = os.path.join(tmp, f"sqlite-{durability}.db")
            s = append_strata(store_path, durability, total, batch, data)
            q = append_sqlite(sqlite_path, durability, total, batch, data)
            print(f"append {durability:>7}: strata {total / s:>10,.0f} events/s   sqlite3 executemany {total / q:>10,.0f} events/s   ratio {q / s:.2f}x")
            ratios[f"append {durability}"] = q / s
            stores[durability] = store_path
        plain_path = os.path.join(tmp, "plain.db")
        copy_to_plain_table(stores["fast"], plain_path)
        strata_reads, sqlite_reads = [], []
        for run in range(args.runs):
            order = (read_strata, read_sqlite) if run % 2 == 0 else (read_sqlite, read_strata)
            for reader in order:
                if reader is read_strata:
                    strata_reads.append(read_strata(stores["fast"], total))
                else:
                    sqlite_reads.append(read_sqlite(plain_path, total))
            print(f"read run {run + 1}: strata {total / strata_reads[-1]:,.0f} events/s, sqlite3 {total / sqlite_reads[-1]:,.0f} rows/s")
        s, q = statistics.median(strata_reads), statistics.median(sqlite_reads)
        print(f"read all (median of {args.runs}): strata {total / s:,.0f} events/s ({s * 1e9 / total:.0f} ns/event)   "
              f"sqlite3 {total / q:,.0f} rows/s ({q * 1e9 / total:.0f} ns/row)   ratio {q / s:.2f}x")
        ratios["read all"] = q / s
    for name, ratio in ratios.items():
        print(f"RATIO {name}: {ratio:.2f}x (goal >= 1.0x: {'met' if ratio >= 1.0 else 'NOT met'})")


if __name__ == "__main__":
    main()
