"""The ``mailcarrier`` command line (Typer + Rich)."""
