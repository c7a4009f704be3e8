"""``bounces import --imap`` against an own Dovecot: IMAPS and STARTTLS, certificates verified.

Dovecot refuses plain-text LOGIN without TLS (``disable_plaintext_auth = yes``), so a poll that
works on the plain port proves the STARTTLS upgrade happened. Its certificate is self-signed:
trusted only through ``imap_ca_file``; without it the poller must refuse to log in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from mailcarrier.inbound.imap_poller import ImapSecurityError, ImapSettings, poll_imap
from mailcarrier.services.inbound import list_inbound, process_all
from tests.inbound.factory import CTX, T0, contact, dsn, make_world
from tests.interop.servers import Dovecot, self_signed
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture


def test_imaps_and_starttls_with_verified_certificates(empty_engine: Engine, tmp_path: Path) -> None:  # noqa: F811
    world = make_world(empty_engine, ["ann@aol.test", "bob@aol.test"])
    ann, bob = world.sent["ann@aol.test"], world.sent["bob@aol.test"]
    with Dovecot() as dovecot:
        dovecot.deliver(dsn(to=ann.return_path, recipient=ann.email), "ann")

        def config(port: int, **options: Any) -> ImapSettings:
            return ImapSettings("127.0.0.1", port, dovecot.user, dovecot.password, **options)

        # IMAPS, certificate not trusted: refused before LOGIN, nothing stored
        untrusted = config(dovecot.imaps_port, tls=True)
        with pytest.raises(ImapSecurityError, match="certificate not trusted"):
            poll_imap(empty_engine, untrusted, lambda: T0)
        # ... nor with another CA
        other = self_signed(tmp_path / "other", "imap.pf.test")
        with pytest.raises(ImapSecurityError, match="certificate not trusted"):
            poll_imap(empty_engine, config(dovecot.imaps_port, tls=True, ca_file=other.ca), lambda: T0)
        assert list_inbound(empty_engine) == []

        # IMAPS with the server's CA: stored and flagged
        imaps = config(dovecot.imaps_port, tls=True, ca_file=dovecot.tls.ca)
        assert poll_imap(empty_engine, imaps, lambda: T0).stored == 1

        # plain port: STARTTLS (Dovecot would refuse LOGIN in clear), verified the same way
        dovecot.deliver(dsn(to=bob.return_path, recipient=bob.email, dsn_id="dsn-2@mx.receiver.test"), "bob")
        starttls = config(dovecot.imap_port, tls=False, ca_file=dovecot.tls.ca)
        with pytest.raises(ImapSecurityError, match="certificate not trusted"):
            poll_imap(empty_engine, config(dovecot.imap_port, tls=False), lambda: T0)
        assert poll_imap(empty_engine, starttls, lambda: T0).stored == 1
        assert poll_imap(empty_engine, starttls, lambda: T0).stored == 0  # flagged: not again
    process_all(empty_engine, CTX, T0)
    assert contact(empty_engine, ann.contact_id)["status"] == "error"
    assert contact(empty_engine, bob.contact_id)["status"] == "error"
    assert sorted(m.source for m in list_inbound(empty_engine)) == ["imap", "imap"]
