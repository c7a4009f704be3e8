"""HTTP interface: the FastAPI application behind ``mailcarrier serve`` (REST, tracking, consent)."""
