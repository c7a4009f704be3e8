"""Application services: use cases that combine the domain core with I/O adapters."""
