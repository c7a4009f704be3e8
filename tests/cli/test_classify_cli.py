import json
from pathlib import Path

from typer.testing import CliRunner

from mailcarrier.cli.main import app

runner = CliRunner()


def test_classify_json_shape() -> None:
    result = runner.invoke(app, ["classify", "550 5.1.1 <x@example.com>: Recipient address rejected: User unknown",
                                 "--stage", "rcpt", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["reason"] == "userunknown"
    assert doc["category"] == 2
    assert doc["hard_bounce"] is True
    assert doc["retry"] is False
    assert isinstance(doc["rule"], str) and doc["rule"]


def test_classify_stage_changes_the_answer() -> None:
    at_rcpt = json.loads(runner.invoke(app, ["classify", "452 Too many recipients", "-s", "rcpt", "-f", "json"]).stdout)
    assert at_rcpt["retry"] is True and at_rcpt["reason"] == "toomanyconn"


def test_classify_internal_code() -> None:
    doc = json.loads(runner.invoke(app, ["classify", "147", "-f", "json"]).stdout)
    assert doc["outcome_unknown"] is True and doc["internal_code"] == 147


def test_classify_garbage_is_a_clear_error() -> None:
    result = runner.invoke(app, ["classify", "hello"])
    assert result.exit_code == 2
    assert "three-digit code" in result.output


def test_rules_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[[rule]]\nid = "a"\nreason = "blocked"\ntext = ["x"]\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nid = "a"\nreason = "nope"\n')
    ok = runner.invoke(app, ["rules", "validate", str(good)])
    assert ok.exit_code == 0 and "1 rules OK" in ok.output
    ko = runner.invoke(app, ["rules", "validate", str(bad)])
    assert ko.exit_code == 3 and "unknown reason" in ko.output


RULES = Path(__file__).resolve().parents[2] / "src" / "mailcarrier" / "domain" / "rules"
PROVIDERS = RULES.parent / "data" / "providers"


def test_rules_validate_reads_every_shipped_layout() -> None:
    files = sorted([*RULES.glob("*.toml"), *PROVIDERS.glob("*.toml")])
    result = runner.invoke(app, ["rules", "validate", *map(str, files)])
    assert result.exit_code == 0, result.output
    for layout in ("rules layout", "reasons layout", "provider layout", "detectors layout"):
        assert layout in result.output
    assert result.output.count("provider layout") == len(list(PROVIDERS.glob("*.toml"))) > 10


def test_rules_validate_finds_a_bad_rule_in_a_provider_file(tmp_path: Path) -> None:
    bad = tmp_path / "acme.toml"
    bad.write_text('[provider]\nid = "acme"\nname = "Acme"\ndomains = ["acme.example"]\n'
                   '[[rule]]\ntier = "wording"\nid = "acme.x"\nreason = "blocked"\ntext = ["(unclosed"]\n'
                   'source = "Acme postmaster page"\n')
    result = runner.invoke(app, ["rules", "validate", str(bad)])
    assert result.exit_code == 3 and "bad regular expression" in result.output
    bad.write_text('[provider]\nid = "acme"\nname = "Acme"\ndomains = ["acme.example"]\n'
                   '[[rule]]\ntier = "late"\nid = "acme.x"\nreason = "blocked"\nsource = "s"\n')
    result = runner.invoke(app, ["rules", "validate", str(bad)])
    assert result.exit_code == 3 and "'tier'" in result.output


def test_rules_validate_finds_a_bad_pattern_in_a_reasons_file(tmp_path: Path) -> None:
    bad = tmp_path / "reasons.toml"
    bad.write_text('first_pass = ["userunknown"]\nsecond_pass = []\nvague_reasons = []\n'
                   '[status]\n"5.1.1" = "userunknown"\n[patterns]\nuserunknown = ["(unclosed"]\n')
    result = runner.invoke(app, ["rules", "validate", str(bad)])
    assert result.exit_code == 3 and "reasons.toml" in result.output
    unknown = tmp_path / "x.toml"
    unknown.write_text('title = "no rules here"\n')
    assert runner.invoke(app, ["rules", "validate", str(unknown)]).exit_code == 3


def test_rules_list_support_counts_what_each_rule_decides(tmp_path: Path) -> None:
    replies = tmp_path / "replies.toml"
    replies.write_text('[[reply]]\nstage = "rcpt"\nreply = "550 5.1.1 <a@b.example>: Recipient address '
                       'rejected: User unknown in local recipient table"\n')
    corpus = Path(__file__).parent / "data"
    result = runner.invoke(app, ["rules", "list", "--support", "--corpus", str(corpus),
                                 "--replies", str(replies)])
    assert result.exit_code == 0, result.output
    assert "reasons.toml:userunknown#" in result.output
    assert "rules decided something" in result.output
