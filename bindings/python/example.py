import asyncio
import tempfile

import strata

with tempfile.TemporaryDirectory() as tmp:
    with strata.open(f"{tmp}/shop.db", durability="fast") as store:
        store.append(
            "order-1",
            [("order_created", {"order_id": "o-1", "amount_cents": 1999}), ("order_paid", b"raw bytes")],
            expected=strata.NO_STREAM,
        )
        try:
            store.append("order-1", [("order_paid", {})], expected=1)
        except strata.ConflictError as conflict:
            print("conflict, actual version", conflict.actual_version)

        for event in store.read_stream("order-1", from_version=1, backwards=False, limit=100):
            print(event.version, event.event_type, event.data if event.event_type == "order_paid" else event.decode())

        with store.subscribe(from_position=1, event_types=["order_created"]) as subscription:
            print("first order:", subscription.next(timeout=1.0).decode()["order_id"])

        async def first_payment():
            async with store.subscribe(event_types=["order_paid"]) as payments:
                async for event in payments:
                    return event.position

        print("paid at position", asyncio.run(first_payment()))
