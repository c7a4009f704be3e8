"""Adapters that send mail: DKIM signing, MX resolution, SMTP transport."""
