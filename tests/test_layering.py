"""The domain core imports only the standard library and itself (ARCHITECTURE.md §3)."""

import ast
import sys
from pathlib import Path

from mailcarrier import domain

DOMAIN_DIR = Path(domain.__file__).parent
# Third-party imports the core may make: pure computation, no I/O. email-validator checks
# address syntax (deliverability off) so bounce recipients and contact import agree on
# what an address is (issue 16 item 6). pyahocorasick finds many words in one pass over a
# text (domain/family_filter.py rules wording families out before their regex searches).
ALLOWED = frozenset({"email_validator", "ahocorasick"})


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots


def test_domain_imports_only_stdlib_and_domain() -> None:
    offenders: list[str] = []
    for path in sorted(DOMAIN_DIR.rglob("*.py")):
        for name in _imported_roots(path):
            top = name.split(".")[0]
            if name.startswith("mailcarrier.domain") or top == "__future__":
                continue
            if top in sys.stdlib_module_names or top in ALLOWED:
                continue
            offenders.append(f"{path.relative_to(DOMAIN_DIR)} imports {name}")
    assert not offenders, "the domain core must stay pure:\n" + "\n".join(offenders)
