"""Python over the C ABI: append 100,000 events (200 bytes each) in batches of 1,000, then read
them back, in events per second. Fast durability, a store file in a temporary directory.

    STRATA_LIBRARY=target/release/libstrata.so python3 bindings/python/bench.py [--events N]

Prints one line per phase and a median of three runs of each.
"""

import argparse
import os
import statistics
import tempfile
import time

import strata


def run(total, batch, payload_kind):
    with tempfile.TemporaryDirectory() as tmp:
        with strata.open(os.path.join(tmp, "bench.db"), durability="fast") as store:
            if payload_kind == "bytes":
                payloads = [os.urandom(200) for _ in range(batch)]
            else:  # a dict that MessagePack-encodes to about 200 bytes
                payloads = [{"user_id": f"user-{i:06d}", "note": "x" * 160, "amount_cents": i} for i in range(batch)]
            started = time.perf_counter()
            for b in range(total // batch):
                store.append(f"stream-{b % 100}", [("order_created", p) for p in payloads])
            append_s = time.perf_counter() - started

            started = time.perf_counter()
            count = 0
            size = 0
            for event in store.read_all():
                count += 1
                size += len(event.data)
            read_s = time.perf_counter() - started
            assert count == total, count
            decode_s = None
            if payload_kind == "dict":
                started = time.perf_counter()
                for event in store.read_all():
                    event.decode()
                decode_s = time.perf_counter() - started
    return append_s, read_s, decode_s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"library: {strata.library_path}")
    for kind in ("bytes", "dict"):
        appends, reads, decodes = [], [], []
        for _ in range(args.runs):
            append_s, read_s, decode_s = run(args.events, args.batch, kind)
            appends.append(args.events / append_s)
            reads.append(args.events / read_s)
            if decode_s is not None:
                decodes.append(args.events / decode_s)
            print(f"  {kind}: append {appends[-1]:,.0f} ev/s, read {reads[-1]:,.0f} ev/s"
                  + (f", read+decode {decodes[-1]:,.0f} ev/s" if decode_s is not None else ""))
        line = (f"{kind} payloads: append {statistics.median(appends):,.0f} events/s (batches of {args.batch}), "
                f"read_all {statistics.median(reads):,.0f} events/s")
        if decodes:
            line += f", read_all + msgpack decode {statistics.median(decodes):,.0f} events/s"
        print("MEDIAN " + line)


if __name__ == "__main__":
    main()
