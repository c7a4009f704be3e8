"""CSV import on real databases: validation, merging, idempotence, injection, isolation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from mailcarrier.domain.errors import ParseError
from mailcarrier.services.contact_import import import_csv, normalise_address
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import audience_members, contacts
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)

GOOD = (
    "Email,First_Name,Last_Name,Company\n"
    "ann@example.com,Ann,Lee,Acme\n"
    "BOB@Example.COM,Bob,,Initech\n"
    "carl@bücher.example,Carl,,\n"
    "not-an-address,X,,\n"
    "ann@example.com,Annie,Lee,Acme\n"
    '"dan@example.com","Dan\r\nBcc: victim@example.org",,\n'
    "eve@example.com,Eve\n"
    ",,,\n"
)


@pytest.fixture
def db(empty_engine: Engine) -> Iterator[tuple[Engine, int, int]]:  # noqa: F811
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        one = account_repo.create_account(conn, "one", "One", T0)
        two = account_repo.create_account(conn, "two", "Two", T0)
    yield empty_engine, one.id, two.id


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text(text, encoding="utf-8", newline="")
    return path


def emails(engine: Engine, account: int) -> dict[str, tuple[str, dict[str, str]]]:
    with engine.connect() as conn:
        rows = conn.execute(select(contacts.c.email, contacts.c.first_name, contacts.c.fields)
                            .where(contacts.c.account_id == account))
        return {r.email: (r.first_name, r.fields) for r in rows}


def test_import_validates_merges_and_reports(db: tuple[Engine, int, int], tmp_path: Path) -> None:
    engine, one, two = db
    report = import_csv(engine, one, "newsletter", write(tmp_path, GOOD), T0, batch_rows=2)
    stored = emails(engine, one)
    assert set(stored) == {"ann@example.com", "bob@example.com", "carl@xn--bcher-kva.example"}
    assert stored["ann@example.com"] == ("Annie", {"company": "Acme"})
    assert report.rows_imported >= 3 and report.bad_count == 3
    by_line = {bad.line: bad.reason for bad in report.bad_rows}
    assert "invalid address" in by_line[5]
    assert "header injection" in by_line[8]
    assert "expected 4 fields" in by_line[9]
    assert emails(engine, two) == {}


def test_reimport_changes_nothing(db: tuple[Engine, int, int], tmp_path: Path) -> None:
    engine, one, _ = db
    path = write(tmp_path, GOOD)
    import_csv(engine, one, "newsletter", path, T0)
    with engine.connect() as conn:
        before = [tuple(r) for r in conn.execute(select(contacts).order_by(contacts.c.id))]
    import_csv(engine, one, "newsletter", path, T0)
    with engine.connect() as conn:
        after = [tuple(r) for r in conn.execute(select(contacts).order_by(contacts.c.id))]
        members = conn.execute(select(func.count()).select_from(audience_members)).scalar_one()
    assert before == after and members == 3


def test_same_address_in_two_accounts_is_two_contacts(db: tuple[Engine, int, int],
                                                      tmp_path: Path) -> None:
    engine, one, two = db
    path = write(tmp_path, "email\nann@example.com\n")
    import_csv(engine, one, "a", path, T0)
    import_csv(engine, two, "a", path, T0)
    assert list(emails(engine, one)) == list(emails(engine, two)) == ["ann@example.com"]


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty CSV"),
    ("name,company\nx,y\n", "no email column"),
    ('email,name\n"ann@example.com,Ann\n', "line"),
])
def test_malformed_files(db: tuple[Engine, int, int], tmp_path: Path, text: str,
                         message: str) -> None:
    engine, one, _ = db
    with pytest.raises(ParseError, match=message):
        import_csv(engine, one, "a", write(tmp_path, text), T0)


def test_normalise_address() -> None:
    assert normalise_address(" Ann@Example.COM ") == "ann@example.com"
    assert normalise_address("x@bücher.example") == "x@xn--bcher-kva.example"
    with pytest.raises(ValueError, match="@"):
        normalise_address("nobody")


@given(st.text(max_size=80))
def test_normalise_address_never_crashes_and_is_idempotent(raw: str) -> None:
    try:
        address = normalise_address(raw)
    except ValueError:
        return
    assert address == address.lower() and address.count("@") >= 1
    assert normalise_address(address) == address


@given(st.from_regex(r"[A-Za-z0-9.+_-]{1,70}@[A-Za-z0-9.-]{1,30}(\.[a-z]{2,4})?", fullmatch=True)
       | st.text(max_size=40))
def test_fast_path_agrees_with_full_validator(raw: str) -> None:
    try:
        full = validate_email(raw.strip(), check_deliverability=False)
        expected: str | None = f"{full.local_part}@{full.ascii_domain}".lower()
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = normalise_address(raw)
    except ValueError:
        got = None
    assert got == expected


def test_rows_before_a_malformed_line_are_imported_and_counted(
        db: tuple[Engine, int, int], tmp_path: Path) -> None:
    """Batches are written while the next is read: when reading fails, the batches already
    read are in the database and in the count, and the error names the line."""
    engine, one, _ = db
    rows = "".join(f"user{i}@example.com,U{i}\n" for i in range(7))
    path = write(tmp_path, f"email,first_name\n{rows}\"broken@example.com,B\n")
    with pytest.raises(ParseError, match="line"):
        import_csv(engine, one, "a", path, T0, batch_rows=3)
    assert sorted(emails(engine, one)) == sorted(f"user{i}@example.com" for i in range(6))


def test_import_into_an_in_memory_database(tmp_path: Path) -> None:
    """An in-memory SQLite database is one per connection: the import writes in the caller's
    thread there, so the rows land in the caller's database."""
    engine = make_engine("sqlite:///:memory:")
    upgrade(engine)
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "mem", "Mem", T0).id
    import_csv(engine, account, "a", write(tmp_path, GOOD), T0, batch_rows=2)
    assert set(emails(engine, account)) == {"ann@example.com", "bob@example.com",
                                            "carl@xn--bcher-kva.example"}
