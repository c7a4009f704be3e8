"""The processing loop of the return path, run in a thread or in separate processes.

Receiving (asyncio, aiosmtpd) and processing (parsing is CPU-bound Python) compete for one
interpreter lock when they share a process; ``mailcarrier inbound --processors N`` runs the loop
below in N processes instead, which claim disjoint batches (see
:func:`mailcarrier.storage.inbound_messages.claim_pending`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from multiprocessing.synchronize import Event

from mailcarrier.services.inbound import InboundContext, process_all
from mailcarrier.storage.engine import make_engine

__all__ = ["run_processor"]

log = logging.getLogger(__name__)


def run_processor(database_url: str, ctx: InboundContext, stop: Event, wake: Event, batch: int) -> None:
    """Process stored emails whenever woken (or every half second) until ``stop`` is set."""
    engine = make_engine(database_url)
    try:
        while not stop.is_set():
            wake.wait(timeout=0.5)
            wake.clear()
            try:
                process_all(engine, ctx, datetime.now(UTC), batch=batch)
            except Exception:
                log.exception("inbound processing failed; emails stay pending",
                              extra={"event": "inbound.process_failed"})
                stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
