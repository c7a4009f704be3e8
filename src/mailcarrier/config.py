"""Settings, read from the environment (prefix ``MAILCARRIER_``) or a ``.env`` file.

One :class:`Settings` object is built at start-up and passed explicitly to the layers
that need it; nothing reads the environment at import time. Unknown variables with our
prefix are an error, so a typo in a setting name is caught instead of ignored.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """Everything an operator can configure."""

    model_config = SettingsConfigDict(env_prefix="MAILCARRIER_", env_file=".env", extra="forbid",
                                      env_file_encoding="utf-8")

    data_dir: Path = Field(Path("./mailcarrier-data"), description=(
        "Directory for the embedded SQLite database, generated secrets and DKIM keys."))
    database_url: str | None = Field(None, description=(
        "SQLAlchemy URL of the system of record. Unset: SQLite file in data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db"))
    secret_key: str | None = Field(None, description=(
        "Master secret for VERP and tracking signatures. Unset: generated once and kept in "
        "data_dir/secret.key. Changing it invalidates outstanding bounce addresses and links."))
    hostname: str = Field("mailcarrier.localhost", description="Name used in EHLO and Message-IDs.")
    bounce_domain: str = Field("bounces.mailcarrier.localhost", description=(
        "Domain of the VERP return-paths; its MX must point at `mailcarrier inbound`."))
    public_url: str = Field("http://127.0.0.1:8025", description=(
        "Base URL of `mailcarrier serve`, used in tracking links and List-Unsubscribe."))
    trusted_proxies: str = Field("", description=(
        "Comma-separated addresses or CIDR networks of the reverse proxies in front of `mailcarrier "
        "serve`, whose X-Forwarded-For and X-Forwarded-Proto are believed. Empty: forwarded headers "
        "are ignored and the connecting address is the client (rate limits count it)."))
    static_routes: str = Field("", description=(
        "Static routing table replacing DNS MX look-ups, 'pattern=host:port' entries separated by "
        "commas, e.g. '*.test=127.0.0.1:2525,*=127.0.0.1:2526'. Empty: use DNS."))
    pool_trap_lookback_days: int = Field(365, ge=1, description=(
        "A spam-trap hit within this many days keeps an account out of (or moves it out of) trusted."))
    pool_trusted_max_messages_30d: int = Field(75_000, ge=1, description=(
        "Trusted pool: fewer than this many messages in the last 30 days."))
    pool_dedicated_min_messages_30d: int = Field(100_000, ge=1, description=(
        "Above this many messages in 30 days a dedicated IP is recommended."))
    max_complaint_rate: float = Field(0.001, ge=0, le=1, description=(
        "Complaint rate above which an account returns to shared and a warm-up ramp holds."))
    max_bounce_rate: float = Field(0.05, ge=0, le=1, description=(
        "Bounce rate above which an account returns to shared and a warm-up ramp holds."))
    warmup_schedule: str = Field("standard", description=(
        "Warm-up schedule for new or idle IPs: conservative, standard or aggressive."))
    warmup_idle_restart_days: int = Field(30, ge=1, description=(
        "An IP idle this many days restarts its warm-up."))
    pool_overflow: str = Field("", description=(
        "Name of a warm shared pool that carries what an account's own pool may not send now "
        "(warm-up caps, hourly limits, suspensions). Empty: such messages wait."))
    enforce_sender_hygiene: bool = Field(True, description=(
        "Refuse to send regular and automated mailings of an account assigned to a pool from a "
        "domain failing SPF/DKIM/DMARC/FCrDNS/MX checks or with a listed pool IP."))
    hygiene_nameserver: str = Field("", description=(
        "Resolver HOST[:PORT] for sender-hygiene checks (empty: the system's resolver)."))

    status_soft_bounce_mailings: int = Field(3, ge=1, description=(
        "Consecutive mailings that all failed temporarily before a contact moves to error."))
    status_block_limit: int = Field(3, ge=1, description=(
        "Consecutive category-1 blocks before a contact moves to error."))
    filtering_reject_share: float = Field(0.30, gt=0, le=1, description=(
        "Suspected B2B filtering: share of a domain's recipients in one mailing rejected as unknown."))
    filtering_min_rejected: int = Field(5, ge=1, description=(
        "Suspected B2B filtering: minimum rejected recipients of that domain in the mailing."))
    filtering_recent_days: int = Field(90, ge=0, description=(
        "Suspected B2B filtering: a 'user unknown' for an address delivered to or engaged with "
        "within this many days."))
    inbound_host: str = Field("127.0.0.1", description="Address `mailcarrier inbound` listens on.")
    inbound_port: int = Field(2526, ge=0, le=65535, description="Port `mailcarrier inbound` listens on.")
    inbound_max_bytes: int = Field(10_000_000, ge=1024, description=(
        "Largest inbound email accepted (SMTP answers 552 above it; imported files are stored "
        "truncated and marked failed)."))
    inbound_max_sessions: int = Field(100, ge=0, description=(
        "SMTP sessions `mailcarrier inbound` holds at once, all peers together (each may buffer a "
        "message up to inbound_max_bytes); more get 421. 0: unlimited."))
    inbound_max_sessions_per_peer: int = Field(10, ge=0, description=(
        "SMTP sessions one peer address (IPv6: its /64) may hold at once; more get 421. 0: unlimited."))
    inbound_peer_connections_per_minute: int = Field(120, ge=0, description=(
        "New SMTP connections one peer may open per minute; more get 421. 0: unlimited."))
    inbound_peer_messages_per_minute: int = Field(300, ge=0, description=(
        "Messages one peer may send per minute; more get 451 at RCPT (retried later). 0: unlimited."))
    inbound_unlimited_peers: str = Field("127.0.0.0/8,::1", description=(
        "Comma-separated addresses or CIDR networks exempt from the per-peer inbound limits (a relay "
        "in front of `mailcarrier inbound` sends everything); the total session limit still applies."))
    inbound_accept_addresses: str = Field("", description=(
        "Comma-separated feedback-loop and abuse addresses the inbound server also accepts, besides "
        "signed VERP addresses and postmaster@<bounce domain>."))
    inbound_tls_cert: Path | None = Field(None, description=(
        "PEM certificate for STARTTLS on the inbound server (with inbound_tls_key). Unset: no TLS."))
    inbound_tls_key: Path | None = Field(None, description="PEM private key for inbound_tls_cert.")
    inbound_recipient_match_days: int = Field(30, ge=1, description=(
        "A bounce matched by recipient address alone attaches to that address's delivery sent "
        "within this many days."))
    imap_host: str = Field("", description="IMAP server of the bounce mailbox (`bounces import --imap`).")
    imap_port: int = Field(993, ge=1, le=65535, description="IMAP port (993 with TLS, 143 without).")
    imap_tls: bool = Field(True, description="Connect to IMAP over TLS (IMAPS).")
    imap_starttls: bool = Field(True, description=(
        "Without imap_tls: upgrade the plain connection with STARTTLS, and refuse to log in when "
        "the server does not offer it. Off only for a server you trust on a private network: the "
        "password would travel in clear."))
    imap_ca_file: Path | None = Field(None, description=(
        "PEM file of the CA (or the self-signed certificate) that signs the IMAP server's "
        "certificate; default: the system's trusted CAs. Certificates are always verified."))
    imap_timeout: float = Field(30.0, gt=0, description=(
        "Seconds to wait for the IMAP server to connect and to answer each command."))
    imap_user: str = Field("", description="IMAP login name.")
    imap_password: str = Field("", description="IMAP password.")
    imap_folder: str = Field("INBOX", description="IMAP folder to read bounces from.")
    imap_delete: bool = Field(False, description=(
        "Delete messages from the IMAP folder once stored. Off: they are only flagged \\Seen and "
        "$MailcarrierStored, so nothing unread is ever destroyed."))
    dkim_selector: str = Field("mc1", description="DKIM selector of the generated sending-domain keys.")
    dkim_algorithm: str = Field("rsa", pattern="^(rsa|ed25519|ed25519-only)$", description=(
        "DKIM signing: rsa (2048 bits); ed25519 = an Ed25519 signature plus an RSA one under "
        "the selector '<selector>-rsa' (RFC 8463 dual signing: verifiers without ed25519 still "
        "pass); ed25519-only = Ed25519 alone."))
    dkim_sign: bool = Field(True, description="Sign every message with the sending domain's DKIM key.")
    delivery_batch_size: int = Field(500, ge=1, description="Deliveries claimed per worker batch.")
    delivery_concurrency: int = Field(200, ge=1, description=(
        "SMTP sessions one worker keeps busy at once, across all destinations."))
    delivery_lease_seconds: float = Field(120.0, gt=0, description=(
        "A claimed delivery whose worker stops renewing for this long is recovered by others."))
    smtp_timeout: float = Field(60.0, gt=0, description="Seconds to wait for each SMTP reply.")
    retry_schedule_hours: str = Field("0,1,6,30", description=(
        "Start of each delivery attempt, in hours after the first; its length is the attempt count. "
        "The default is seed 003's four attempts over 30 hours."))
    retry_max_age_hours: float = Field(30.0, gt=0, description=(
        "After this long a still-deferred recipient is a soft bounce (expired)."))
    retry_outcome_unknown: bool = Field(False, description=(
        "Resend after no answer to the final '.' (147/148), risking a duplicate."))
    destination_limits: str = Field("", description=(
        "Per-destination overrides 'pattern=CONNECTIONSxMESSAGES', comma separated, matched on the "
        "recipient domain or MX host, e.g. 'gmail.com=5x50,*.example=2x10'."))
    source_ip: str = Field("", description="Local address to send from (empty: the system's choice).")

    tracking_key_id: int = Field(1, ge=0, le=255, description=(
        "Key id signing new tracking links; bump it when rotating secret_key and list the old "
        "secret in tracking_retired_secrets so links in delivered mail keep working."))
    tracking_retired_secrets: str = Field("", description=(
        "Earlier tracking secrets still accepted, 'KEY_ID:SECRET' entries separated by commas."))
    tracking_link_days: int = Field(400, ge=0, description=(
        "Click, open and unsubscribe links expire this many days after sending (0: never)."))
    tracking_burst_seconds: float = Field(5.0, gt=0, description=(
        "Machine clicks: several links of one message hit from one address within this many seconds."))
    tracking_burst_links: int = Field(2, ge=1, description=(
        "Machine clicks: more than this many links of one message in one burst."))
    tracking_shared_ip_seconds: float = Field(60.0, gt=0, description=(
        "Machine clicks: window in which one address clicking for many recipients is a scanner."))
    tracking_shared_ip_recipients: int = Field(2, ge=1, description=(
        "Machine clicks: one address clicking for more than this many recipients of a mailing."))
    tracking_after_delivery_seconds: float = Field(60.0, ge=0, description=(
        "Hits this soon after delivery (the 250 reply, not the send) are machines; scanner bursts "
        "start a median ~43 s after delivery."))
    tracking_hold_seconds: float = Field(60.0, ge=0, description=(
        "Webhooks and automation see an open or click only after this hold, so a burst is "
        "recognised as a machine before anyone is notified."))
    tracking_spool_dir: Path | None = Field(None, description=(
        "Directory where accepted opens and clicks wait for the writer (one file per server "
        "process; survives a crash). Unset: data_dir/tracking-spool."))
    tracking_writer: Literal["thread", "external"] = Field("thread", description=(
        "Who writes spooled hits to the database: 'thread' (a thread of the app; embedded use) or "
        "'external' (a writer process; `mailcarrier serve` sets this and starts it)."))
    tracking_writer_nice: int = Field(10, ge=0, le=19, description=(
        "Niceness added to the writer process of `mailcarrier serve`: under CPU contention the "
        "endpoints come first and the writer catches up after (measured p99 about halved)."))
    tracking_batch_size: int = Field(500, ge=1, description="Hits written per database transaction.")
    subscribe_confirm_hours: int = Field(48, ge=1, description=(
        "A double opt-in confirmation link expires after this many hours."))
    subscribe_rate_limit: int = Field(5, ge=1, description=(
        "Subscription requests accepted per client address per subscribe_rate_window_seconds."))
    subscribe_rate_window_seconds: float = Field(600.0, gt=0, description=(
        "Window of the per-address subscription rate limit."))
    subscribe_from_address: str = Field("", description=(
        "Sender of double opt-in confirmations (empty: confirm@<hostname>)."))
    webhook_allow_http: bool = Field(False, description=(
        "Allow plain http webhook URLs (default: https only)."))
    webhook_internal_hosts: str = Field("", description=(
        "Comma-separated host names, addresses or CIDR networks that webhooks may reach although "
        "they are internal (loopback, private, link-local...), over http or https; for self-hosted "
        "receivers. Every other internal target is refused, at registration and at connect time."))
    report_hard_bounce_warn: float = Field(0.02, gt=0, le=1, description=(
        "Reports flag a mailing whose hard-bounce rate reaches this share as 'warn'."))
    report_hard_bounce_alert: float = Field(0.05, gt=0, le=1, description=(
        "Reports flag a mailing whose hard-bounce rate reaches this share as 'alert'."))

    @field_validator("trusted_proxies", "inbound_unlimited_peers")
    @classmethod
    def _networks(cls, value: str) -> str:
        """Each entry must be an IP address or CIDR network: a typo must not silently trust nothing."""
        for entry in value.split(","):
            if entry.strip():
                try:
                    ipaddress.ip_network(entry.strip(), strict=False)
                except ValueError as exc:
                    raise ValueError(f"{entry.strip()!r} is not an IP address or CIDR network") from exc
        return value

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'mailcarrier.db').resolve()}"

    def resolved_secret(self) -> bytes:
        """The master secret; generated and stored (mode 0600) on first use."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48), encoding="ascii")
        return path.read_text(encoding="ascii").strip().encode()


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
