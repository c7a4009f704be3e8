import asyncio
import datetime
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailcarrier.delivery.sandbox import Sandbox
from mailcarrier.delivery.transport import SmtpSession


def _server_context(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.sandbox.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def test_opportunistic_starttls_records_version_and_cipher(tmp_path: Path) -> None:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # opportunistic TLS, as MTAs do between each other

    async def run(sandbox: Sandbox) -> None:
        session = await SmtpSession.open(sandbox.host, sandbox.port, helo_name="mta.test", timeout=5,
                                         tls_context=client)
        result = await session.send("b-1@bounce.test", "ada@example.com", b"Subject: x\r\n\r\nhi\r\n")
        await session.close()
        assert result.reply is not None and result.reply.code == 250
        assert result.tls_version is not None and result.tls_version.startswith("TLS")
        assert result.tls_cipher
        assert "C: STARTTLS" in result.dialogue and "(TLS established)" in result.dialogue
        assert result.dialogue.index("(TLS established)") < result.dialogue.index("C: MAIL FROM")

    with Sandbox(tls_context=_server_context(tmp_path)) as sandbox:
        asyncio.run(run(sandbox))
        assert [r.recipient for r in sandbox.received] == ["ada@example.com"]
