"""Interop tests: real third-party mail software on loopback (see servers.py).

They run with the rest of the suite when the programs are installed (``.ci/run`` installs them
from Debian) and are skipped, naming the missing program, otherwise.
"""
