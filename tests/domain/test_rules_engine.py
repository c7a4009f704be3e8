from pathlib import Path

import pytest

import mailcarrier.domain as pkg
from mailcarrier.domain import Reason, RuleFileError, SMTPStage, classify, load_rules
from mailcarrier.domain.rules_engine import RULE_FILES, default_rules, validate_rule_file


def test_shipped_rules_load_and_ids_are_unique() -> None:
    rules = default_rules().rules
    assert len(rules) > 50
    assert len({r.id for r in rules}) == len(rules)


def test_shipped_rule_files_validate() -> None:
    base = Path(pkg.__file__).parent / "rules"
    for name in RULE_FILES:
        assert validate_rule_file(base / name) > 0


def test_user_rules_are_evaluated_first(tmp_path: Path) -> None:
    extra = tmp_path / "site.toml"
    extra.write_text('[[rule]]\nid = "site.x"\nreason = "filtered"\ntext = ["user unknown"]\nsource = "test"\n')
    rules = load_rules([extra])
    result = classify("550 5.1.1 user unknown", code=550, stage=SMTPStage.RCPT, rules=rules)
    assert (result.reason, result.rule) == (Reason.FILTERED, "site.x")


@pytest.mark.parametrize(("body", "message"), [
    ('[[rule]]\nreason = "blocked"\n', "needs a string 'id'"),
    ('[[rule]]\nid = "a"\nreason = "nonsense"\n', "unknown reason"),
    ('[[rule]]\nid = "a"\nreason = "blocked"\ncodes = [999]\n', "SMTP reply codes"),
    ('[[rule]]\nid = "a"\nreason = "blocked"\ntext = ["(unclosed"]\n', "bad regular expression"),
    ('[[rule]]\nid = "a"\nreason = "blocked"\ncolour = "red"\n', "unknown key"),
    ('[[rule]]\nid = "a"\nreason = "blocked"\n[[rule]]\nid = "a"\nreason = "blocked"\n', "duplicate rule id"),
    ('[[rule]\n', "not valid TOML"),
    ('[[rule]]\nid = "a"\nreason = "blocked"\nstages = ["helo"]\n', "helo"),
    ('[[rule]]\nid = "a"\nreason = "blocked"\nstatus = ["x.1"]\n', "status"),
])
def test_bad_rule_files_say_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(RuleFileError, match=message.replace("(", r"\(")):
        validate_rule_file(path)
