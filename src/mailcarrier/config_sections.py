"""The sections of the settings tree, one frozen model per concern.

Each leaf keeps the flat name operators know as its alias: ``settings.inbound.port`` is
``MAILCARRIER_INBOUND_PORT``, ``settings.delivery.retry_schedule`` is
``MAILCARRIER_RETRY_SCHEDULE_HOURS``. A TOML config file names the leaf inside its table
(``[inbound] port = 2526``). Structured values are parsed here, at load, by the parsers of
:mod:`mailcarrier.config_values`; a leaf whose value is a secret says so (``secret=True``)
and is masked wherever settings are shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from mailcarrier.config_values import (
    AcceptAddresses,
    DestinationLimits,
    InternalHosts,
    Networks,
    OptionalNameserver,
    RetiredSecrets,
    RetrySchedule,
    SourceAddress,
    StaticRoutes,
    ValueFormatError,
)
from mailcarrier.domain.warmup import load_schedules

__all__ = [
    "SECTIONS",
    "ApiSettings",
    "ContactSettings",
    "DeliverySettings",
    "DnsSettings",
    "ImapSettings",
    "InboundSettings",
    "PoolSettings",
    "ReportSettings",
    "Section",
    "SecuritySettings",
    "StorageSettings",
    "TrackingSettings",
    "WebhookSettings",
    "leaf",
]


def leaf(default: Any, flat: str, description: str, *, secret: bool = False, **constraints: Any) -> Any:
    """A setting: its default, its flat name (``MAILCARRIER_`` + upper case), what it does."""
    return Field(default, alias=flat, description=description,
                 json_schema_extra={"secret": True} if secret else None, **constraints)


class Section(BaseModel):
    """A section of the settings: frozen, no unknown key, leaves by name or by flat name."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True,
                              hide_input_in_errors=True)


def _known_schedule(name: str) -> str:
    schedules = load_schedules()
    if name not in schedules:
        raise ValueFormatError(name, f"one of {', '.join(sorted(schedules))}", "no such warm-up schedule")
    return name


class StorageSettings(Section):
    """Where the system of record and the generated files live."""

    data_dir: Path = leaf(Path("./mailcarrier-data"), "data_dir",
                          "Directory for the embedded SQLite database, generated secrets and DKIM keys.")
    database_url: str | None = leaf(None, "database_url", (
        "SQLAlchemy URL of the system of record. Unset: SQLite file in data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db"))


class SecuritySettings(Section):
    """The master secret."""

    secret_key: SecretStr | None = leaf(None, "secret_key", (
        "Master secret for VERP and tracking signatures. Unset: generated once and kept in "
        "data_dir/secret.key. Changing it invalidates outstanding bounce addresses and links."), secret=True)


class ApiSettings(Section):
    """``mailcarrier serve``: its public address, the proxies in front, the subscription form."""

    public_url: str = leaf("http://127.0.0.1:8025", "public_url", (
        "Base URL of `mailcarrier serve`, used in tracking links and List-Unsubscribe."))
    trusted_proxies: Networks = leaf((), "trusted_proxies", (
        "Comma-separated addresses or CIDR networks of the reverse proxies in front of `mailcarrier "
        "serve`, whose X-Forwarded-For and X-Forwarded-Proto are believed. Empty: forwarded headers "
        "are ignored and the connecting address is the client (rate limits count it)."))
    subscribe_confirm_hours: int = leaf(48, "subscribe_confirm_hours", (
        "A double opt-in confirmation link expires after this many hours."), ge=1)
    subscribe_rate_limit: int = leaf(5, "subscribe_rate_limit", (
        "Subscription requests accepted per client address per subscribe_rate_window_seconds."), ge=1)
    subscribe_rate_window_seconds: float = leaf(600.0, "subscribe_rate_window_seconds", (
        "Window of the per-address subscription rate limit."), gt=0)
    subscribe_from_address: str = leaf("", "subscribe_from_address", (
        "Sender of double opt-in confirmations (empty: confirm@<hostname>)."))


class DeliverySettings(Section):
    """The worker: identity, routing, DKIM, concurrency, timeouts and retries."""

    hostname: str = leaf("mailcarrier.localhost", "hostname", "Name used in EHLO and Message-IDs.")
    static_routes: StaticRoutes = leaf((), "static_routes", (
        "Static routing table replacing DNS MX look-ups, 'pattern=host:port' entries separated by "
        "commas, e.g. '*.test=127.0.0.1:2525,*=127.0.0.1:2526'. Empty: use DNS."))
    dkim_selector: str = leaf("mc1", "dkim_selector", "DKIM selector of the generated sending-domain keys.")
    dkim_algorithm: Literal["rsa", "ed25519", "ed25519-only"] = leaf("rsa", "dkim_algorithm", (
        "DKIM signing: rsa (2048 bits); ed25519 = an Ed25519 signature plus an RSA one under "
        "the selector '<selector>-rsa' (RFC 8463 dual signing: verifiers without ed25519 still "
        "pass); ed25519-only = Ed25519 alone."))
    dkim_sign: bool = leaf(True, "dkim_sign", "Sign every message with the sending domain's DKIM key.")
    batch_size: int = leaf(500, "delivery_batch_size", "Deliveries claimed per worker batch.", ge=1)
    concurrency: int = leaf(200, "delivery_concurrency", (
        "SMTP sessions one worker keeps busy at once, across all destinations."), ge=1)
    lease_seconds: float = leaf(120.0, "delivery_lease_seconds", (
        "A claimed delivery whose worker stops renewing for this long is recovered by others."), gt=0)
    smtp_timeout: float = leaf(60.0, "smtp_timeout", "Seconds to wait for each SMTP reply.", gt=0)
    retry_schedule: RetrySchedule = leaf((0.0, 1.0, 6.0, 30.0), "retry_schedule_hours", (
        "Start of each delivery attempt, in hours after the first; its length is the attempt count. "
        "The default is seed 003's four attempts over 30 hours."))
    retry_max_age_hours: float = leaf(30.0, "retry_max_age_hours", (
        "After this long a still-deferred recipient is a soft bounce (expired)."), gt=0)
    retry_outcome_unknown: bool = leaf(False, "retry_outcome_unknown", (
        "Resend after no answer to the final '.' (147/148), risking a duplicate."))
    destination_limits: DestinationLimits = leaf((), "destination_limits", (
        "Per-destination overrides 'pattern=CONNECTIONSxMESSAGES', comma separated, matched on the "
        "recipient domain or MX host, e.g. 'gmail.com=5x50,*.example=2x10'."))
    source_ip: SourceAddress = leaf("", "source_ip", (
        "Local address to send from (empty: the system's choice)."))

    @model_validator(mode="after")
    def _retries_fit(self) -> DeliverySettings:
        """A schedule whose last attempt comes after the recipient has expired would never run it."""
        if self.retry_max_age_hours < self.retry_schedule[-1]:
            raise ValueError(f"retry_max_age_hours ({self.retry_max_age_hours:g}) is shorter than the last "
                             f"attempt of retry_schedule_hours ({self.retry_schedule[-1]:g})")
        return self


class PoolSettings(Section):
    """Sending pools: eligibility thresholds, warm-up, overflow, sender hygiene."""

    trap_lookback_days: int = leaf(365, "pool_trap_lookback_days", (
        "A spam-trap hit within this many days keeps an account out of (or moves it out of) trusted."), ge=1)
    trusted_max_messages_30d: int = leaf(75_000, "pool_trusted_max_messages_30d", (
        "Trusted pool: fewer than this many messages in the last 30 days."), ge=1)
    dedicated_min_messages_30d: int = leaf(100_000, "pool_dedicated_min_messages_30d", (
        "Above this many messages in 30 days a dedicated IP is recommended."), ge=1)
    max_complaint_rate: float = leaf(0.001, "max_complaint_rate", (
        "Complaint rate above which an account returns to shared and a warm-up ramp holds."), ge=0, le=1)
    max_bounce_rate: float = leaf(0.05, "max_bounce_rate", (
        "Bounce rate above which an account returns to shared and a warm-up ramp holds."), ge=0, le=1)
    warmup_schedule: Annotated[str, AfterValidator(_known_schedule)] = leaf("standard", "warmup_schedule", (
        "Warm-up schedule for new or idle IPs: conservative, standard or aggressive."))
    warmup_idle_restart_days: int = leaf(30, "warmup_idle_restart_days", (
        "An IP idle this many days restarts its warm-up."), ge=1)
    overflow: str = leaf("", "pool_overflow", (
        "Name of a warm shared pool that carries what an account's own pool may not send now "
        "(warm-up caps, hourly limits, suspensions). Empty: such messages wait."))
    enforce_sender_hygiene: bool = leaf(True, "enforce_sender_hygiene", (
        "Refuse to send regular and automated mailings of an account assigned to a pool from a "
        "domain failing SPF/DKIM/DMARC/FCrDNS/MX checks or with a listed pool IP."))


class ContactSettings(Section):
    """When a contact moves to error, and when a domain looks like B2B filtering."""

    status_soft_bounce_mailings: int = leaf(3, "status_soft_bounce_mailings", (
        "Consecutive mailings that all failed temporarily before a contact moves to error."), ge=1)
    status_block_limit: int = leaf(3, "status_block_limit", (
        "Consecutive category-1 blocks before a contact moves to error."), ge=1)
    filtering_reject_share: float = leaf(0.30, "filtering_reject_share", (
        "Suspected B2B filtering: share of a domain's recipients in one mailing rejected as unknown."),
        gt=0, le=1)
    filtering_min_rejected: int = leaf(5, "filtering_min_rejected", (
        "Suspected B2B filtering: minimum rejected recipients of that domain in the mailing."), ge=1)
    filtering_recent_days: int = leaf(90, "filtering_recent_days", (
        "Suspected B2B filtering: a 'user unknown' for an address delivered to or engaged with "
        "within this many days."), ge=0)


class InboundSettings(Section):
    """``mailcarrier inbound``: the return path's SMTP server."""

    bounce_domain: str = leaf("bounces.mailcarrier.localhost", "bounce_domain", (
        "Domain of the VERP return-paths; its MX must point at `mailcarrier inbound`."))
    host: str = leaf("127.0.0.1", "inbound_host", "Address `mailcarrier inbound` listens on.")
    port: int = leaf(2526, "inbound_port", "Port `mailcarrier inbound` listens on.", ge=0, le=65535)
    max_bytes: int = leaf(10_000_000, "inbound_max_bytes", (
        "Largest inbound email accepted (SMTP answers 552 above it; imported files are stored "
        "truncated and marked failed)."), ge=1024)
    max_sessions: int = leaf(100, "inbound_max_sessions", (
        "SMTP sessions `mailcarrier inbound` holds at once, all peers together (each may buffer a "
        "message up to inbound_max_bytes); more get 421. 0: unlimited."), ge=0)
    max_sessions_per_peer: int = leaf(10, "inbound_max_sessions_per_peer", (
        "SMTP sessions one peer address (IPv6: its /64) may hold at once; more get 421. 0: unlimited."), ge=0)
    peer_connections_per_minute: int = leaf(120, "inbound_peer_connections_per_minute", (
        "New SMTP connections one peer may open per minute; more get 421. 0: unlimited."), ge=0)
    peer_messages_per_minute: int = leaf(300, "inbound_peer_messages_per_minute", (
        "Messages one peer may send per minute; more get 451 at RCPT (retried later). 0: unlimited."), ge=0)
    unlimited_peers: Networks = leaf("127.0.0.0/8,::1", "inbound_unlimited_peers", (
        "Comma-separated addresses or CIDR networks exempt from the per-peer inbound limits (a relay "
        "in front of `mailcarrier inbound` sends everything); the total session limit still applies."),
        validate_default=True)
    accept_addresses: AcceptAddresses = leaf((), "inbound_accept_addresses", (
        "Comma-separated feedback-loop and abuse addresses the inbound server also accepts, besides "
        "signed VERP addresses and postmaster@<bounce domain>."))
    tls_cert: Path | None = leaf(None, "inbound_tls_cert", (
        "PEM certificate for STARTTLS on the inbound server (with inbound_tls_key). Unset: no TLS."))
    tls_key: Path | None = leaf(None, "inbound_tls_key", "PEM private key for inbound_tls_cert.")
    recipient_match_days: int = leaf(30, "inbound_recipient_match_days", (
        "A bounce matched by recipient address alone attaches to that address's delivery sent "
        "within this many days."), ge=1)


class ImapSettings(Section):
    """The bounce mailbox read by ``bounces import --imap``."""

    host: str = leaf("", "imap_host", "IMAP server of the bounce mailbox (`bounces import --imap`).")
    port: int = leaf(993, "imap_port", "IMAP port (993 with TLS, 143 without).", ge=1, le=65535)
    tls: bool = leaf(True, "imap_tls", "Connect to IMAP over TLS (IMAPS).")
    starttls: bool = leaf(True, "imap_starttls", (
        "Without imap_tls: upgrade the plain connection with STARTTLS, and refuse to log in when "
        "the server does not offer it. Off only for a server you trust on a private network: the "
        "password would travel in clear."))
    ca_file: Path | None = leaf(None, "imap_ca_file", (
        "PEM file of the CA (or the self-signed certificate) that signs the IMAP server's "
        "certificate; default: the system's trusted CAs. Certificates are always verified."))
    timeout: float = leaf(30.0, "imap_timeout", (
        "Seconds to wait for the IMAP server to connect and to answer each command."), gt=0)
    user: str = leaf("", "imap_user", "IMAP login name.")
    password: SecretStr = leaf(SecretStr(""), "imap_password", "IMAP password.", secret=True)
    folder: str = leaf("INBOX", "imap_folder", "IMAP folder to read bounces from.")
    delete: bool = leaf(False, "imap_delete", (
        "Delete messages from the IMAP folder once stored. Off: they are only flagged \\Seen and "
        "$MailcarrierStored, so nothing unread is ever destroyed."))


class TrackingSettings(Section):
    """Tracking links: keys, expiry, machine-click detection, the hit spool and its writer."""

    key_id: int = leaf(1, "tracking_key_id", (
        "Key id signing new tracking links; bump it when rotating secret_key and list the old "
        "secret in tracking_retired_secrets so links in delivered mail keep working."), ge=0, le=255)
    retired_secrets: RetiredSecrets = leaf((), "tracking_retired_secrets", (
        "Earlier tracking secrets still accepted, 'KEY_ID:SECRET' entries separated by commas."), secret=True)
    link_days: int = leaf(400, "tracking_link_days", (
        "Click, open and unsubscribe links expire this many days after sending (0: never)."), ge=0)
    burst_seconds: float = leaf(5.0, "tracking_burst_seconds", (
        "Machine clicks: several links of one message hit from one address within this many seconds."), gt=0)
    burst_links: int = leaf(2, "tracking_burst_links", (
        "Machine clicks: more than this many links of one message in one burst."), ge=1)
    shared_ip_seconds: float = leaf(60.0, "tracking_shared_ip_seconds", (
        "Machine clicks: window in which one address clicking for many recipients is a scanner."), gt=0)
    shared_ip_recipients: int = leaf(2, "tracking_shared_ip_recipients", (
        "Machine clicks: one address clicking for more than this many recipients of a mailing."), ge=1)
    after_delivery_seconds: float = leaf(60.0, "tracking_after_delivery_seconds", (
        "Hits this soon after delivery (the 250 reply, not the send) are machines; scanner bursts "
        "start a median ~43 s after delivery."), ge=0)
    hold_seconds: float = leaf(60.0, "tracking_hold_seconds", (
        "Webhooks and automation see an open or click only after this hold, so a burst is "
        "recognised as a machine before anyone is notified."), ge=0)
    spool_dir: Path | None = leaf(None, "tracking_spool_dir", (
        "Directory where accepted opens and clicks wait for the writer (one file per server "
        "process; survives a crash). Unset: data_dir/tracking-spool."))
    writer: Literal["thread", "external"] = leaf("thread", "tracking_writer", (
        "Who writes spooled hits to the database: 'thread' (a thread of the app; embedded use) or "
        "'external' (a writer process; `mailcarrier serve` sets this and starts it)."))
    writer_nice: int = leaf(10, "tracking_writer_nice", (
        "Niceness added to the writer process of `mailcarrier serve`: under CPU contention the "
        "endpoints come first and the writer catches up after (measured p99 about halved)."), ge=0, le=19)
    batch_size: int = leaf(500, "tracking_batch_size", "Hits written per database transaction.", ge=1)


class DnsSettings(Section):
    """The resolver of the sender-hygiene checks."""

    nameserver: OptionalNameserver = leaf(None, "hygiene_nameserver", (
        "Resolver ADDRESS[:PORT] for sender-hygiene checks (empty: the system's resolver)."))


class WebhookSettings(Section):
    """Where webhooks may be sent."""

    allow_http: bool = leaf(False, "webhook_allow_http", (
        "Allow plain http webhook URLs (default: https only)."))
    internal_hosts: InternalHosts = leaf((), "webhook_internal_hosts", (
        "Comma-separated host names, addresses or CIDR networks that webhooks may reach although "
        "they are internal (loopback, private, link-local...), over http or https; for self-hosted "
        "receivers. Every other internal target is refused, at registration and at connect time."))


class ReportSettings(Section):
    """The thresholds reports flag."""

    hard_bounce_warn: float = leaf(0.02, "report_hard_bounce_warn", (
        "Reports flag a mailing whose hard-bounce rate reaches this share as 'warn'."), gt=0, le=1)
    hard_bounce_alert: float = leaf(0.05, "report_hard_bounce_alert", (
        "Reports flag a mailing whose hard-bounce rate reaches this share as 'alert'."), gt=0, le=1)


#: Every section by its name in the tree (``settings.<name>``, ``[<name>]`` in a config file).
SECTIONS: dict[str, type[Section]] = {
    "storage": StorageSettings, "security": SecuritySettings, "api": ApiSettings,
    "delivery": DeliverySettings, "pools": PoolSettings, "contacts": ContactSettings,
    "inbound": InboundSettings, "imap": ImapSettings, "tracking": TrackingSettings,
    "dns": DnsSettings, "webhooks": WebhookSettings, "reports": ReportSettings,
}
