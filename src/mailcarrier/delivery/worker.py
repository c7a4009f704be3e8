"""The delivery worker: claim → group by destination → render + sign → send → classify → record.

Entry point for the CLI, tests and benchmarks::

    stats = await run_worker(settings, engine, until_idle=True, clock=SimulatedClock())

One batch at a time: due deliveries are claimed with a lease (:mod:`mailcarrier.storage.outbox`),
grouped by MX host, and sent over pooled SMTP sessions (many messages per connection,
per-destination connection and message caps from :mod:`mailcarrier.delivery.limits`, at most
``concurrency`` messages in flight overall). Each reply is classified by the domain
classifier, the retry policy decides the delivery's next state, and the whole batch's
attempts and states are written in one transaction. A 421 or rate-limit reply backs the
whole domain off: its remaining messages in the batch are released untried.

Time comes from a clock object. :class:`SystemClock` is the real one; :class:`SimulatedClock`
jumps straight to the next scheduled retry when nothing is due, so tests and the demo run
30 hours of retries in seconds. ``until_idle`` returns once no delivery of a sending
mailing is open any more (with the system clock it waits for scheduled retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from mailcarrier.config import Settings
from mailcarrier.delivery import contact_outcomes
from mailcarrier.delivery.dkim_keys import signing_keys
from mailcarrier.delivery.limits import DestinationLimits, load_limits
from mailcarrier.delivery.mx import MailHost, MxResolver, RouteError
from mailcarrier.delivery.smtp_sessions import ConnectionLimits, SmtpPool
from mailcarrier.delivery.source_routing import SourceRouting
from mailcarrier.delivery.transport import ConnectionFacts, RejectedError, SendResult, TransportError
from mailcarrier.domain.classify import Classification, classify, classify_internal, classify_reply
from mailcarrier.domain.retry import RetryPolicy, decide_retry, domain_backoff
from mailcarrier.domain.rules_engine import Scope
from mailcarrier.domain.smtp_reply import SMTPReply, SMTPStage
from mailcarrier.domain.vocabulary import INTERNAL_CODES, DeliveryState, Reason
from mailcarrier.services import automation
from mailcarrier.services.composition import (
    DkimKey,
    LinkHook,
    MailingRenderer,
    RecipientData,
    TemplateRenderError,
)
from mailcarrier.services.policies import status_policy
from mailcarrier.services.pools.values import SourcePick
from mailcarrier.storage import outbox
from mailcarrier.storage.engine import is_transient
from mailcarrier.storage.tables import mailings

_LOG = logging.getLogger(__name__)

__all__ = ["Clock", "SimulatedClock", "SystemClock", "WorkerStats", "retry_policy", "retrying", "run_worker",
           "simulated_clock_ending_now"]


class Clock(Protocol):
    """Where the worker gets its time from."""

    simulated: bool

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...

    def advance_to(self, when: datetime) -> None: ...


class SystemClock:
    simulated = False

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def advance_to(self, when: datetime) -> None:
        raise RuntimeError("the system clock cannot be advanced")


class SimulatedClock:
    """Real time plus an offset that jumps forward whenever the worker would wait.

    With ``not_after_real_time`` the clock never runs ahead of the real one: a run that
    starts in the past (:func:`simulated_clock_ending_now`) jumps over waits only up to
    now, so nothing it stores is dated in the future; past that it waits in real time.
    """

    simulated = True

    def __init__(self, start: datetime | None = None, *, not_after_real_time: bool = False) -> None:
        self._offset = (start - datetime.now(UTC)) if start else timedelta(0)
        self._capped = not_after_real_time
        if self._capped:
            self._offset = min(self._offset, timedelta(0))

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    async def sleep(self, seconds: float) -> None:
        self._offset += timedelta(seconds=seconds)
        if self._capped and self._offset > timedelta(0):
            await asyncio.sleep(self._offset.total_seconds())
            self._offset = timedelta(0)
        await asyncio.sleep(0)

    def advance_to(self, when: datetime) -> None:
        gap = when - self.now()
        if gap > timedelta(0):
            self._offset += gap
        if self._capped:
            self._offset = min(self._offset, timedelta(0))


def simulated_clock_ending_now(engine: Engine, policy: RetryPolicy, *,
                               now: datetime | None = None) -> SimulatedClock:
    """A simulated clock for ``--simulate-time`` whose run ends by the real present.

    The run is replayed as if the open deliveries had been due ``policy.max_age`` (plus a
    few minutes) ago: their due times (and their mailings' start) move back to then, and the
    clock starts there and is capped at real time. The whole retry schedule then fits
    before now, so no stored timestamp lies in the future and reports "up to today" see the
    same attempts and bounces as the mailing's figures.
    """
    real = now or datetime.now(UTC)
    start = real - policy.max_age - timedelta(minutes=5)
    outbox.rewind_open_work(engine, start)
    return SimulatedClock(start, not_after_real_time=True)


@dataclass
class WorkerStats:
    batches: int = 0
    claimed: int = 0
    attempts: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    outcome_unknown: int = 0
    failed: int = 0
    released: int = 0
    recovered: int = 0
    connections_opened: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


#: What the classifier answers for any 2xx to the final "." (computed once, not per message).
_DELIVERED = classify(code=250, stage=SMTPStage.EOD)


def retrying(step: Callable[[], None], *, attempts: int = 6, pause: float = 0.5,
             transient_attempts: int = 60) -> Callable[[], None]:
    """Run a recording step again while the database is busy or briefly unreachable.

    Recording is all-or-nothing and idempotent (rows are written only under the batch's
    claim token), so a retry never writes twice; giving up too early would instead let the
    leases expire and the batch be resent as in-flight. A lock held by other writers
    (:func:`is_transient`) is waited out far longer (``transient_attempts``, each also
    waiting the busy timeout) than an unreachable database (``attempts``). The last failure
    is raised.
    """

    def run() -> None:
        failures = 0
        while True:
            try:
                step()
                return
            except OperationalError as error:
                failures += 1
                if failures >= (transient_attempts if is_transient(error) else attempts):
                    raise
                _LOG.warning("recording failed (attempt %d), retrying: %s", failures, error)
                time.sleep(min(pause * 2 ** min(failures - 1, 5), 10.0))

    return run


def retry_policy(settings: Settings) -> RetryPolicy:
    """The retry schedule from settings (hours after the first attempt)."""
    delivery = settings.delivery  # the schedule and its fit with max_age were checked at load
    return RetryPolicy(schedule=tuple(timedelta(hours=h) for h in delivery.retry_schedule),
                       max_age=timedelta(hours=delivery.retry_max_age_hours),
                       retry_outcome_unknown=delivery.retry_outcome_unknown)


def _opportunistic_tls() -> ssl.SSLContext:
    # MTA-to-MTA STARTTLS is opportunistic (RFC 3207): encrypt when offered, without
    # refusing self-signed certificates, as Postfix does by default (smtp_tls_security_level=may).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(slots=True)
class _Outcome:
    attempt: outbox.AttemptRecord | None
    update: outbox.DeliveryUpdate
    classification: Classification | None
    domain: str


class _Worker:
    def __init__(self, settings: Settings, engine: Engine, *, clock: Clock, concurrency: int,
                 worker_id: str, resolver: MxResolver | None, policy: RetryPolicy,
                 link_hook: LinkHook | None, tls_context: ssl.SSLContext | None,
                 routing: SourceRouting | None = None) -> None:
        self.settings, self.engine, self.clock, self.routing = settings, engine, clock, routing
        self.worker_id, self.policy, self.link_hook = worker_id, policy, link_hook
        self.resolver = resolver or MxResolver(static_routes=settings.delivery.static_routes)
        self.limits: DestinationLimits = load_limits(settings.delivery.destination_limits)
        # idle sessions kept across destinations: no more than the sessions in flight, so a
        # worker never holds more connections open than twice its concurrency
        self.pool = SmtpPool(helo_name=settings.delivery.hostname, timeout=settings.delivery.smtp_timeout,
                             tls_context=tls_context, max_idle=concurrency)
        self.slots = asyncio.Semaphore(concurrency)
        self.lease = timedelta(seconds=settings.delivery.lease_seconds)
        self.status_policy = status_policy(settings)
        self.secret = settings.resolved_secret()
        self.renderers: dict[int, MailingRenderer] = {}
        #: Domains this worker backed off, until when: batches claimed before the back-off was
        #: recorded must not hammer them either.
        self.paused_domains: dict[str, datetime] = {}
        self._looked_up: set[str] = set()
        self.workers_alive = 1
        self.stats = WorkerStats()

    # --- database steps (run in a thread so sending never waits on them) -------------------

    def _new_renderers(self, ids: set[int]) -> list[MailingRenderer]:
        """Renderers for these mailings, each with its sending domain's DKIM key (read, or
        generated on first use: file I/O and possibly an RSA key generation, so off the loop)."""
        with self.engine.connect() as conn:
            rows = list(conn.execute(select(mailings).where(mailings.c.id.in_(sorted(ids)))).all())
        settings = self.settings
        built = []
        for row in rows:
            keys: tuple[DkimKey, ...] = ()
            if settings.delivery.dkim_sign:
                keys = signing_keys(settings.storage.data_dir, row.sending_domain,
                                    settings.delivery.dkim_selector, settings.delivery.dkim_algorithm)
            built.append(MailingRenderer(
                row, secret=self.secret, bounce_domain=settings.inbound.bounce_domain,
                public_url=settings.api.public_url, dkim_key=keys, link_hook=self.link_hook,
                tracking_key_id=settings.tracking.key_id))
        return built

    async def _renderers_for(self, claim: outbox.Claim) -> None:
        missing = {d.mailing_id for d in claim.deliveries} - set(self.renderers)
        if not missing:
            return
        for renderer in await asyncio.to_thread(self._new_renderers, missing):
            self.renderers[renderer.mailing_id] = renderer

    def _apply_contact_events(self) -> int:
        return contact_outcomes.apply_pending(self.engine, self.status_policy, self.clock.now())

    def beat(self) -> None:
        """Renew leases, say we are alive, and learn how many workers share the destinations."""
        now = self.clock.now()
        interval = max(0.05, self.settings.delivery.lease_seconds / 3)
        self.workers_alive = outbox.beat(self.engine, self.worker_id, now, lease_until=now + self.lease,
                                         alive_within=timedelta(seconds=interval * 3))

    async def heartbeat(self, stop: asyncio.Event) -> None:
        interval = max(0.05, self.settings.delivery.lease_seconds / 3)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                try:
                    await asyncio.to_thread(self.beat)
                except OperationalError as error:  # a busy database must not stop the heartbeat
                    _LOG.warning("heartbeat failed, trying again next beat: %s", error)

    def share(self, limits: ConnectionLimits) -> ConnectionLimits:
        """This worker's part of a destination's connection cap (the cap holds across workers)."""
        if self.workers_alive <= 1:
            return limits
        return ConnectionLimits(max(1, limits.connections // self.workers_alive),
                                limits.messages_per_connection)

    # --- one batch -----------------------------------------------------------------------

    async def claim_next(self) -> outbox.Claim:
        """Recover expired leases, then claim the next batch (in a thread).

        A database that stays busy or unreachable is not fatal: nothing was claimed, the
        loop waits and tries again.
        """
        now = self.clock.now()
        try:
            # welcomes for contacts who joined an audience since the last claim
            await asyncio.to_thread(automation.enqueue_joined, self.engine, now)
            self.stats.recovered += await asyncio.to_thread(outbox.recover_expired, self.engine, now)
            return await asyncio.to_thread(outbox.claim_due, self.engine, self.worker_id, now,
                                           lease=self.lease, limit=self.settings.delivery.batch_size)
        except OperationalError as error:
            _LOG.warning("claiming failed, retrying later: %s", error)
            await asyncio.sleep(1.0)
            return outbox.Claim("", self.worker_id, ())

    def _prepare_links(self, claim: outbox.Claim) -> None:
        """Store what the link hook needs for this batch (its links), before anything is rendered.

        Rendering itself never writes: this is the batch's one write for tracking, in a
        transaction of its own (none at all once the mailings' links are known).
        """
        if self.link_hook is None:
            return
        by_mailing: dict[int, list[RecipientData]] = defaultdict(list)
        for item in claim.deliveries:
            by_mailing[item.mailing_id].append(RecipientData(
                item.id, item.contact_id, item.email, item.first_name, item.last_name, item.fields))
        for mailing_id, recipients in by_mailing.items():
            renderer = self.renderers.get(mailing_id)
            if renderer is not None:
                self.link_hook.prepare(renderer, recipients)

    async def send_batch(self, claim: outbox.Claim) -> Callable[[], None]:
        """Send a claimed batch; returns the (blocking) function that records its outcomes.

        When the database stays busy while the batch is being prepared (after the retries of
        :func:`~mailcarrier.storage.engine.run_write`), nothing is sent: the batch is given
        back untried and the loop goes on.
        """
        self.stats.batches += 1
        self.stats.claimed += len(claim.deliveries)
        try:
            await self._renderers_for(claim)
            await asyncio.to_thread(self._prepare_links, claim)
        except OperationalError as error:
            _LOG.warning("preparing a batch failed, giving it back: %s", error)
            await asyncio.sleep(1.0)
            return retrying(lambda: self.release(claim))
        outcomes, released, backoffs = await self._send_all(claim)
        delivered_domains = {o.domain for o in outcomes if o.update.state == DeliveryState.DELIVERED.value}
        self.stats.released += len(released)
        for outcome in outcomes:
            key = outcome.attempt.outcome if outcome.attempt else outcome.update.state  # failed or waiting
            self.stats.outcomes[key] = self.stats.outcomes.get(key, 0) + 1
        self.stats.connections_opened = self.pool.opened
        results = [(o.attempt, o.update) for o in outcomes]
        now = self.clock.now()

        def record() -> None:
            outbox.record_results(self.engine, claim, results, released=released,
                                  backoffs=list(backoffs.values()), delivered_domains=delivered_domains,
                                  now=now)
            self._apply_contact_events()

        return retrying(record)

    def release(self, claim: outbox.Claim) -> None:
        """Give a claimed batch back untried (graceful stop): no attempt, no crash record."""
        outbox.record_results(self.engine, claim, [], released=[d.id for d in claim.deliveries],
                              now=self.clock.now())

    async def run_batch(self) -> int:
        """Claim, send and record one batch, one step after the other (tests, simple callers)."""
        claim = await self.claim_next()
        if not claim.deliveries:
            await asyncio.to_thread(self._apply_contact_events)
            return 0
        record = await self.send_batch(claim)
        await asyncio.to_thread(record)
        return len(claim.deliveries)

    async def _send_all(
        self, claim: outbox.Claim
    ) -> tuple[list[_Outcome], list[int], dict[str, outbox.Backoff]]:
        by_domain: dict[str, list[outbox.ClaimedDelivery]] = defaultdict(list)
        for delivery in claim.deliveries:
            by_domain[delivery.domain.lower()].append(delivery)
        outcomes: list[_Outcome] = []
        released: list[int] = []
        backoffs: dict[str, outbox.Backoff] = {}
        counts = await asyncio.to_thread(outbox.backoff_counts, self.engine, by_domain)
        groups: dict[tuple[str, int], list[tuple[str, list[outbox.ClaimedDelivery]]]] = defaultdict(list)
        hosts_of: dict[tuple[str, int], tuple[MailHost, ...]] = {}
        resolved = await self._resolve_all(list(by_domain))
        for domain, items in by_domain.items():
            hosts_or_error = resolved[domain]
            if isinstance(hosts_or_error, RouteError):
                error = hosts_or_error
                classification = classify_internal(error.internal_code)
                for item in items:
                    outcomes.append(self._decide(item, classification, None, self.clock.now(), None,
                                                 detail=str(error)))
                continue
            hosts = hosts_or_error
            key = (hosts[0].host, hosts[0].port)
            hosts_of[key] = hosts
            groups[key].append((domain, items))
        tasks = [self._send_group(hosts_of[key], domain, items, outcomes, released, backoffs, counts)
                 for key, entries in groups.items() for domain, items in entries]
        await asyncio.gather(*tasks)
        return outcomes, released, backoffs

    def _resolve_one(self, domain: str) -> tuple[MailHost, ...] | RouteError:
        try:
            return self.resolver.resolve(domain)
        except RouteError as error:
            return error

    async def _resolve_all(self, domains: list[str]) -> dict[str, tuple[MailHost, ...] | RouteError]:
        """MX hosts per domain. A domain's first look-up (DNS, possibly slow) runs in a thread so
        the event loop keeps sending; later ones hit the resolver's TTL cache (or the static
        routes) and are answered inline. A cache entry that expired is refreshed inline once."""
        fresh = [d for d in domains if d not in self._looked_up]
        answers = {d: self._resolve_one(d) for d in domains if d in self._looked_up}
        if fresh:
            found = await asyncio.gather(*(asyncio.to_thread(self._resolve_one, d) for d in fresh))
            answers.update(zip(fresh, found, strict=True))
            if len(self._looked_up) < 1_000_000:
                self._looked_up.update(fresh)
        return answers

    async def _send_group(self, hosts: tuple[MailHost, ...], domain: str,
                          items: list[outbox.ClaimedDelivery], outcomes: list[_Outcome], released: list[int],
                          backoffs: dict[str, outbox.Backoff], counts: dict[str, int]) -> None:
        _name, limits = self.limits.for_destination(domain, hosts[0].host)
        limits = self.share(limits)
        queue = deque(items)

        async def lane() -> None:
            while queue:
                paused_until = self.paused_domains.get(domain)
                if domain in backoffs or (paused_until is not None and paused_until > self.clock.now()):
                    released.extend(item.id for item in queue)
                    queue.clear()
                    return
                item = queue.popleft()
                async with self.slots:
                    outcome = await self._attempt(item, hosts, limits)
                outcomes.append(outcome)
                classification = outcome.classification
                if classification is not None and domain not in backoffs:
                    if outcome.update.last_reply_code == 421:
                        # 421 closes the session for the whole server (RFC 5321 4.2.2), whatever
                        # its wording: pause the domain as for "too many connections".
                        classification = replace(classification, reason=Reason.TOOMANYCONN,
                                                 scope=Scope.DOMAIN)
                    until = domain_backoff(self.policy, classification, now=self.clock.now(),
                                           consecutive=counts.get(domain, 0) + 1)
                    if until is not None:
                        self.paused_domains[domain] = until  # also for batches claimed meanwhile
                        reason = outcome.update.last_diagnostic or classification.reason.value
                        backoffs[domain] = outbox.Backoff(domain, until, reason[:500],
                                                          counts.get(domain, 0) + 1)

        await asyncio.gather(*(lane() for _ in range(min(limits.connections, len(items)))))

    async def _attempt(self, item: outbox.ClaimedDelivery, hosts: tuple[MailHost, ...],
                       limits: ConnectionLimits) -> _Outcome:
        started = self.clock.now()
        renderer = self.renderers.get(item.mailing_id)
        if renderer is None:  # the mailing row vanished; nothing can be sent for it
            return self._failed(item, started, "mailing not found")
        recipient = RecipientData(item.id, item.contact_id, item.email, item.first_name, item.last_name,
                                  item.fields)
        try:
            message = renderer.render(recipient, started)
        except (TemplateRenderError, ValueError) as error:
            return self._failed(item, started, str(error), renderer)
        result: SendResult | None = None
        classification: Classification
        detail: str | None = None
        host = hosts[0]
        source = await self._source(item, renderer, host, started, limits)
        if isinstance(source, _Outcome):
            return source
        source_ip, limits = source
        # Hosts that could not be reached before the one that answered: they belong in the
        # evidence (an IT department asks why its first-choice MX got nothing).
        skipped: list[str] = []
        try:
            for index, host in enumerate(hosts):
                try:
                    async with self.pool.session(host.host, host.port, limits, mx_host=host.host,
                                                 source_ip=source_ip) as session:
                        result = await session.send(message.envelope_from, message.recipient, message.data)
                    break
                except TransportError as error:
                    if error.stage is not SMTPStage.CONNECT or index == len(hosts) - 1:
                        raise
                    skipped.append(f"(MX {host.host} port {host.port}, preference {host.preference}: "
                                   f"{error.internal_code} {INTERNAL_CODES[error.internal_code].name}: "
                                   f"{error}; tried the next MX)")
            assert result is not None
            if result.internal_code is not None:  # not sent for a reason of ours (e.g. 191)
                classification = classify_internal(result.internal_code)
                detail = f"{result.internal_code} {INTERNAL_CODES[result.internal_code].name}"
            else:
                assert result.reply is not None
                reply = result.reply
                # A 250 to the final "." needs no rule matching: the classifier's answer is fixed.
                delivered = reply.stage is SMTPStage.EOD and 200 <= reply.code < 300
                classification = _DELIVERED if delivered else classify_reply(reply)
        except TransportError as error:
            classification = classify_internal(error.internal_code)
            detail = f"{error.internal_code} {INTERNAL_CODES[error.internal_code].name}: {error}"
            result = _failed_result(None, error.facts, host.host, error.dialogue, error.stage,
                                    error.internal_code)
        except RejectedError as error:
            classification = classify_reply(error.reply)
            result = _failed_result(error.reply, error.facts, host.host, error.dialogue,
                                    error.reply.stage, None)
        if skipped:
            result.dialogue = "\n".join([*skipped, result.dialogue] if result.dialogue else skipped)
        self.stats.attempts += 1
        if self.routing is not None and source_ip and result.reply is not None:
            try:
                await self.routing.observe(item.account_id, source_ip, item.domain, host.host,
                                           self.clock.now(), result.reply)
            except OperationalError as error:  # throttling evidence lost, never the attempt itself
                _LOG.warning("recording the reply for throttling failed: %s", error)
        return self._decide(item, classification, result, started, renderer, detail=detail,
                            message_id=message.message_id, return_path=message.envelope_from,
                            subject=message.subject)

    async def _source(self, item: outbox.ClaimedDelivery, renderer: MailingRenderer, host: MailHost,
                      started: datetime, limits: ConnectionLimits
                      ) -> tuple[str, ConnectionLimits] | _Outcome:
        """The source IP and limits for this attempt, or the outcome of waiting for one."""
        if self.routing is None:
            return self.settings.delivery.source_ip, limits
        try:  # the account's pool picks the source IP (issue 8)
            pick = await self.routing.choose(item.account_id, item.domain, host.host, started)
        except OperationalError as error:  # the store stayed busy: this one waits, the worker goes on
            _LOG.warning("choosing a source IP failed, delivery %d waits: %s", item.id, error)
            return self._postponed(item, renderer, started + timedelta(minutes=1),
                                   "waiting for a source IP: the database was busy")
        if pick.address is None:
            return self._postponed(item, renderer, self.routing.retry_at(started),
                                   "waiting for a source IP: " + "; ".join(pick.reasons))
        return pick.address, _provider_limits(limits, pick)

    def _postponed(self, item: outbox.ClaimedDelivery, renderer: MailingRenderer, until: datetime,
                   why: str) -> _Outcome:
        """Back to the queue until ``until`` without an attempt (no source IP may send now)."""
        state = DeliveryState.IN_PROGRESS if item.attempt_count else DeliveryState.QUEUED
        update = outbox.DeliveryUpdate(
            item.id, state.value, item.attempt_count, item.first_attempt_at, until,
            renderer.message_id(item.id), renderer.return_path(item.id), None, None, None, None,
            why[:2000], False, None, None, False)
        return _Outcome(None, update, None, item.domain)

    def _failed(self, item: outbox.ClaimedDelivery, now: datetime, why: str,
                renderer: MailingRenderer | None = None) -> _Outcome:
        self.stats.failed += 1
        update = outbox.DeliveryUpdate(
            item.id, DeliveryState.FAILED.value, item.attempt_count, item.first_attempt_at or now, None,
            renderer.message_id(item.id) if renderer else None, None, "template", None, None, None,
            why[:2000], False, None, now, False)
        return _Outcome(None, update, None, item.domain)

    def _decide(self, item: outbox.ClaimedDelivery, classification: Classification,
                result: SendResult | None, started: datetime, renderer: MailingRenderer | None, *,
                detail: str | None = None, message_id: str | None = None,
                return_path: str | None = None, subject: str | None = None) -> _Outcome:
        now = self.clock.now()
        number = item.attempt_count + 1
        first = item.first_attempt_at or started
        reply = result.reply if result else None
        delivered = reply is not None and reply.stage is SMTPStage.EOD and 200 <= reply.code < 300
        outcome_unknown = False
        if delivered:
            state, next_at, reason, category = DeliveryState.DELIVERED, None, None, None
            attempt_outcome = "delivered"
            self.stats.delivered += 1
        else:
            decision = decide_retry(self.policy, classification, attempts_made=number,
                                    first_attempt_at=first, now=now,
                                    recovered_attempts=item.recovered_attempts)
            state, next_at = decision.state, decision.next_attempt_at
            reason, category = decision.reason.value, int(decision.category)
            outcome_unknown = decision.outcome_unknown
            if classification.outcome_unknown:
                attempt_outcome = "unknown"
                self.stats.outcome_unknown += 1
            elif state is DeliveryState.IN_PROGRESS:
                attempt_outcome = "deferred"
                self.stats.deferred += 1
            else:
                attempt_outcome = "bounced"
                self.stats.bounced += 1
        final = state.is_final
        # the reply as the server wrote it, enhanced status kept ("550 5.1.1 <a@b>: ...")
        diagnostic = detail or (" ".join(str(x) for x in (reply.code, reply.enhanced, reply.text) if x)
                                if reply is not None else None)
        attempt = outbox.AttemptRecord(
            delivery_id=item.id, number=number, started_at=started, ended_at=now, outcome=attempt_outcome,
            return_path=return_path, local_ip=(result.local_ip or None) if result else None,
            remote_ip=(result.peer_ip or None) if result else None,
            mx_host=result.mx_host if result else None, tls_version=result.tls_version if result else None,
            tls_cipher=result.tls_cipher if result else None, dialogue=result.dialogue if result else None,
            reply_code=reply.code if reply else None,
            enhanced_status=str(reply.enhanced) if reply is not None and reply.enhanced else None,
            reply_text=reply.text if reply else detail, queue_id=result.queue_id if result else None,
            internal_code=classification.internal_code,
            reason=None if delivered else classification.reason.value,
            category=None if delivered else int(classification.category),
        )
        update = outbox.DeliveryUpdate(
            delivery_id=item.id, state=state.value, attempt_count=number, first_attempt_at=first,
            next_attempt_at=next_at, message_id=message_id, return_path=return_path, last_reason=reason,
            last_category=category, last_reply_code=reply.code if reply else None,
            last_enhanced_status=attempt.enhanced_status,
            last_diagnostic=diagnostic[:2000] if diagnostic else None, outcome_unknown=outcome_unknown,
            delivered_at=now if state is DeliveryState.DELIVERED else None,
            final_at=now if final else None,
            contact_event_pending=final and not outcome_unknown, subject=subject,
        )
        return _Outcome(attempt, update, None if delivered else classification, item.domain)


def _failed_result(reply: SMTPReply | None, facts: ConnectionFacts | None, mx_host: str,
                   dialogue: str, stage: SMTPStage, internal_code: int | None) -> SendResult:
    """The evidence of an attempt whose session failed: every fact the connection had
    (addresses, TLS, dialogue so far) is kept, not only the error."""
    if facts is None:
        return SendResult(reply, "", "", mx_host, None, None, dialogue, internal_code=internal_code,
                          stage=stage)
    return SendResult(reply, facts.local_ip or "", facts.peer_ip or "", facts.mx_host or mx_host,
                      facts.tls_version, facts.tls_cipher, dialogue, internal_code=internal_code,
                      stage=stage)


def _provider_limits(limits: ConnectionLimits, pick: SourcePick) -> ConnectionLimits:
    """The destination's limits narrowed by the pick's: per-provider rules and, while a
    deferral-automation slow-down is in force, its connection cap (e.g. 1) for this IP.

    The SMTP pool keys sessions by (MX host, port, source IP), so the narrowed cap bounds
    the connections this worker holds open (in use or idle) from that IP to that host.
    A pick of an account on no pool (no provider limits: ``connections`` 0) changes nothing.
    """
    if pick.pool is None or pick.connections < 1:
        return limits
    return ConnectionLimits(min(limits.connections, pick.connections),
                            min(limits.messages_per_connection, max(1, pick.messages_per_connection)))


async def _wait_for_work(worker: _Worker, *, until_idle: bool, stop: asyncio.Event,
                         poll_seconds: float) -> bool:
    """Nothing was claimable: wait (or jump the simulated clock); False when the worker is done."""
    engine, clock = worker.engine, worker.clock
    await asyncio.to_thread(worker._apply_contact_events)
    now = clock.now()
    if until_idle and not await asyncio.to_thread(outbox.has_open_work, engine):
        return False
    wake = await asyncio.to_thread(outbox.next_wake_up, engine, now)
    if clock.simulated and until_idle:
        if wake is not None:
            clock.advance_to(wake)
            behind = (wake - clock.now()).total_seconds()
            if behind > 0:  # a clock capped at real time: the rest is waited for real
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(poll_seconds, behind))
        else:  # open rows claimed by another live worker: give it real time
            await asyncio.sleep(min(poll_seconds, 0.2))
        return True
    pause = poll_seconds if wake is None else min(poll_seconds, (wake - now).total_seconds())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.01, pause))
    return True


async def _wait_or_retry(worker: _Worker, *, until_idle: bool, stop: asyncio.Event,
                         poll_seconds: float) -> bool:
    """:func:`_wait_for_work`, where a busy or unreachable database only means looking again later."""
    try:
        return await _wait_for_work(worker, until_idle=until_idle, stop=stop, poll_seconds=poll_seconds)
    except OperationalError as error:
        _LOG.warning("looking for work failed, trying again: %s", error)
        await asyncio.sleep(1.0)
        return True


async def _apply_last_events(worker: _Worker) -> None:
    try:
        await asyncio.to_thread(worker._apply_contact_events)
    except OperationalError as error:  # they stay flagged: the next worker applies them
        _LOG.warning("applying the last contact events failed, left for the next run: %s", error)


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def run_worker(
    settings: Settings,
    engine: Engine,
    *,
    until_idle: bool = False,
    clock: Clock | None = None,
    concurrency: int | None = None,
    worker_id: str | None = None,
    resolver: MxResolver | None = None,
    policy: RetryPolicy | None = None,
    link_hook: LinkHook | None = None,
    tls_context: ssl.SSLContext | None = None,
    stop: asyncio.Event | None = None,
    poll_seconds: float = 1.0,
    on_batch: Callable[[WorkerStats], None] | None = None,
    source_routing: SourceRouting | None = None,
) -> WorkerStats:
    """Deliver until ``stop`` is set, or (``until_idle``) until no open delivery remains.

    ``clock`` defaults to the system clock; pass :class:`SimulatedClock` to compress the
    retry schedule. ``concurrency`` bounds the messages in flight at once (default: the
    ``delivery_concurrency`` setting). The schema must be migrated already.
    """
    clock = clock or SystemClock()
    stop = stop or asyncio.Event()
    worker = _Worker(settings, engine, clock=clock, concurrency=concurrency or settings.delivery.concurrency,
                     worker_id=worker_id or _default_worker_id(), resolver=resolver,
                     policy=policy or retry_policy(settings),
                     link_hook=link_hook, tls_context=tls_context or _opportunistic_tls(),
                     routing=source_routing)
    await asyncio.to_thread(worker.beat)  # registered before the first claim
    beat_stop = asyncio.Event()
    beat = asyncio.create_task(worker.heartbeat(beat_stop))
    # Pipelined: while batch k is on the wire, batch k+1 is claimed and batch k-1 recorded,
    # each in a thread, so the event loop never waits on the database between batches.
    recording: asyncio.Task[None] | None = None
    upcoming: asyncio.Task[outbox.Claim] | None = asyncio.create_task(worker.claim_next())
    try:
        while not stop.is_set():
            assert upcoming is not None
            claim = await upcoming
            upcoming = None
            if claim.deliveries:
                upcoming = asyncio.create_task(worker.claim_next())
                record = await worker.send_batch(claim)
                if recording is not None:
                    await recording
                recording = asyncio.create_task(asyncio.to_thread(record))
                if on_batch:
                    on_batch(worker.stats)
                continue
            if recording is not None:
                await recording
                recording = None
            if not await _wait_or_retry(worker, until_idle=until_idle, stop=stop, poll_seconds=poll_seconds):
                break
            upcoming = asyncio.create_task(worker.claim_next())
    finally:
        if recording is not None:
            await recording
        if upcoming is not None:  # claimed ahead but never sent: give it back, it was not in flight
            spare = await upcoming
            if spare.deliveries:
                await asyncio.to_thread(worker.release, spare)
        beat_stop.set()
        await beat
        await worker.pool.close()
        try:
            await asyncio.to_thread(outbox.leave, engine, worker.worker_id)
        except OperationalError as error:  # its heartbeat row simply ages out
            _LOG.warning("could not unregister the worker: %s", error)
        if source_routing is not None:  # give back source-IP reservations not used
            await source_routing.flush()
    await _apply_last_events(worker)
    worker.stats.connections_opened = worker.pool.opened
    return worker.stats
