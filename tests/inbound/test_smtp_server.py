"""The inbound SMTP server on loopback: who it accepts, what it stores, what processing does."""

from __future__ import annotations

import datetime
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from mailcarrier.inbound.smtp_server import InboundServer
from mailcarrier.services.inbound import list_inbound
from mailcarrier.storage.inbound_messages import raw_message as store_raw
from tests.inbound.factory import BOUNCE_DOMAIN, CTX, T0, World, arf, contact, delivery, dsn, make_world
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

ACCEPT = frozenset({"postmaster", f"postmaster@{BOUNCE_DOMAIN}", "fbl@sender.test"})


@pytest.fixture
def world(empty_engine: Engine) -> Iterator[World]:  # noqa: F811
    yield make_world(empty_engine, ["ann@aol.test", "bob@aol.test"])


@pytest.fixture
def server(world: World) -> Iterator[InboundServer]:
    with InboundServer(world.engine, CTX, accept=ACCEPT, max_bytes=200_000,
                       clock=lambda: T0 + datetime.timedelta(hours=1)) as running:
        yield running


def rcpt(server: InboundServer, address: str) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.ehlo("mx.receiver.test")
        client.mail("")
        return client.rcpt(address)


def test_refuses_strangers_and_forged_verp_at_rcpt(world: World, server: InboundServer) -> None:
    ann = world.sent["ann@aol.test"]
    local, _, domain = ann.return_path.partition("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{domain}"
    assert rcpt(server, "someone@elsewhere.test")[0] == 550  # never relays
    code, text = rcpt(server, forged)
    assert code == 550 and b"not a bounce address" in text
    assert rcpt(server, f"b-1.2.3.abc@{BOUNCE_DOMAIN}")[0] == 550
    assert rcpt(server, ann.return_path)[0] == 250
    assert rcpt(server, ann.return_path.upper())[0] == 250  # relays that upper-case the address
    assert rcpt(server, "postmaster")[0] == 250
    assert rcpt(server, "fbl@sender.test")[0] == 250


def test_dsn_over_smtp_is_stored_then_flips_the_delivery(world: World, server: InboundServer) -> None:
    ann, bob = world.sent["ann@aol.test"], world.sent["bob@aol.test"]
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.sendmail("", [ann.return_path], dsn(to=ann.return_path, recipient=ann.email))
        client.sendmail("fbl@receiver.test", ["fbl@sender.test"],
                        arf(to="fbl@sender.test", recipient=bob.email, message_id=bob.message_id))
    assert server.wait_idle(30)
    assert delivery(world.engine, ann.delivery_id)["state"] == "bounced_hard"
    assert contact(world.engine, ann.contact_id)["email_invalid"]
    assert contact(world.engine, bob.contact_id)["status"] == "opted_out"
    stored = {m.kind: m for m in list_inbound(world.engine)}
    assert stored["bounce"].source == "smtp" and stored["bounce"].envelope_to == (ann.return_path,)
    assert stored["bounce"].origin.startswith("127.0.0.1:")
    assert stored["complaint"].match_method == "message_id"


def test_oversized_message_is_refused_with_552(world: World, server: InboundServer) -> None:
    ann = world.sent["ann@aol.test"]
    big = dsn(to=ann.return_path, recipient=ann.email) + (b"x" * 998 + b"\r\n") * 300
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as announced:  # SIZE= declared at MAIL
            client.sendmail("", [ann.return_path], big)
        assert announced.value.smtp_code == 552
        client.rset()
        assert client.docmd("MAIL FROM:<>")[0] == 250  # undeclared: counted during DATA
        assert client.rcpt(ann.return_path)[0] == 250
        assert client.data(big)[0] == 552
    assert list_inbound(world.engine) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                     max_size=40))
def test_any_bytes_are_stored_and_never_crash_the_server(world: World, server: InboundServer,
                                                         lines: list[bytes]) -> None:
    ann = world.sent["ann@aol.test"]
    body = b"\r\n".join(lines)
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.ehlo("mx.receiver.test")
        code, _ = client.docmd("MAIL FROM:<>")
        assert code == 250
        assert client.rcpt(ann.return_path)[0] == 250
        assert client.data(body)[0] == 250
    assert server.wait_idle(30)
    assert delivery(world.engine, ann.delivery_id)["state"] in ("delivered", "bounced_hard", "bounced_soft")
    assert all(m.state != "pending" for m in list_inbound(world.engine, limit=1000))
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        assert client.noop()[0] == 250


def _tls_files(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BOUNCE_DOMAIN)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return context


def test_starttls_offered_when_a_certificate_is_configured(world: World, tmp_path: Path) -> None:
    client_tls = ssl.create_default_context()
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE
    ann = world.sent["ann@aol.test"]
    with InboundServer(world.engine, CTX, accept=ACCEPT, tls_context=_tls_files(tmp_path)) as tls_server, \
            smtplib.SMTP(tls_server.host, tls_server.port, timeout=10) as client:
        client.ehlo("mx.receiver.test")
        assert client.has_extn("starttls")
        client.starttls(context=client_tls)
        client.ehlo("mx.receiver.test")
        client.sendmail("", [ann.return_path], dsn(to=ann.return_path, recipient=ann.email))
        assert tls_server.wait_idle(30)
    assert delivery(world.engine, ann.delivery_id)["state"] == "bounced_hard"


def test_processing_in_a_separate_process(world: World) -> None:
    ann = world.sent["ann@aol.test"]
    with InboundServer(world.engine, CTX, accept=ACCEPT, processors=1) as separate:
        with smtplib.SMTP(separate.host, separate.port, timeout=10) as client:
            client.sendmail("", [ann.return_path], dsn(to=ann.return_path, recipient=ann.email))
        assert separate.wait_idle(60)
    assert delivery(world.engine, ann.delivery_id)["state"] == "bounced_hard"


@pytest.mark.parametrize("body", [
    b"",
    b"one line\r\n",
    b"Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\nends with a dot.\r\nx.\r\n\r\n.\r\nlast",
    b"Subject: long\r\n\r\n" + b"y" * 70_000 + b"\r\n.tail\r\n",
])
def test_data_arrives_byte_exact_after_dot_unstuffing(world: World, server: InboundServer, body: bytes) -> None:
    ann = world.sent["ann@aol.test"]
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.ehlo("mx.receiver.test")
        assert client.docmd("MAIL FROM:<>")[0] == 250
        assert client.rcpt(ann.return_path)[0] == 250
        assert client.data(body)[0] == 250  # smtplib dot-stuffs and ends the last line
        assert client.noop()[0] == 250  # the session goes on after the end marker
    assert server.wait_idle(30)
    [stored] = list_inbound(world.engine)
    with world.engine.connect() as conn:
        raw = store_raw(conn, stored.id)
    expected = body if body.endswith(b"\r\n") else body + b"\r\n"  # smtplib ends the last line
    assert raw == expected


def test_empty_data_and_a_pipelined_command_after_the_marker(world: World, server: InboundServer) -> None:
    ann = world.sent["ann@aol.test"]
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        stream = sock.makefile("rb")

        def reply() -> bytes:
            while (line := stream.readline())[3:4] == b"-":
                pass
            return line

        assert reply().startswith(b"220")
        sock.sendall(b"EHLO mx.receiver.test\r\n")
        assert reply().startswith(b"250")
        sock.sendall(b"MAIL FROM:<>\r\nRCPT TO:<" + ann.return_path.encode() + b">\r\nDATA\r\n")
        assert [reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        sock.sendall(b".\r\nNOOP\r\n")  # empty message, next command in the same packet
        assert reply().startswith(b"250") and reply().startswith(b"250")
    assert server.wait_idle(30)
    [stored] = list_inbound(world.engine)
    assert stored.size == 0 and stored.state == "failed"
