"""What a live path gives up under load is counted in `voxline_events_dropped{source}` too."""

from __future__ import annotations

from prometheus_client import REGISTRY

from voxline.channels.outbox import BoundedOutbox


def dropped(source: str) -> float:
    return REGISTRY.get_sample_value("voxline_events_dropped_total", {"source": source}) or 0.0


def test_an_outbox_that_drops_counts_in_the_metrics() -> None:
    before = dropped("slow peer outbox")
    outbox: BoundedOutbox[str] = BoundedOutbox("slow peer", limit=2, reserve=0, stall=5.0)
    for n in range(5):
        outbox.offer(f"event {n}")  # nothing reads: past the limit, new events are refused
    assert outbox.dropped == 3
    assert dropped("slow peer outbox") - before == 3
