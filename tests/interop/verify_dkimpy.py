"""dkimpy on every message file named on the command line, each signature on its own.

Prints "<file> s=<selector> <pass|fail>" per signature; DNS through the system resolver (the
tests' own NSD), so the TXT record is read as a DNS server serves it, strings joined.
"""

from __future__ import annotations

import re
import sys

import dkim


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            message = handle.read()
        verifier = dkim.DKIM(message)
        selectors = re.findall(rb"^DKIM-Signature:.*?\bs=([A-Za-z0-9-]+)", message, re.M)
        for index, selector in enumerate(selectors):
            verdict = "pass" if verifier.verify(idx=index) else "fail"
            print(f"{path} s={selector.decode()} {verdict}")


if __name__ == "__main__":
    main(sys.argv[1:])
