"""Sending-IP pools as use-cases: the store behind eligibility, warm-up and throttling.

The decisions are the domain's (``domain.pools``, ``domain.warmup``,
``domain.throttle_rules``, ``domain.source_ip``); these modules gather their inputs from
the database, persist their results and keep the evidence: who was on an IP when it was
listed, why an account went back to shared, which automation action slowed a provider down
and when it ended. Every function takes an open connection; the caller owns the
transaction. Time is always passed in. One concern per module:

- :mod:`.values`: the value types returned;
- :mod:`.membership`: pools, IPs, assignments;
- :mod:`.eligibility`: eligibility and applications;
- :mod:`.reputation`: trap hits and listings (and those read from bounces);
- :mod:`.warmup`: volume counters and warm-up;
- :mod:`.throttling`: throttle automation;
- :mod:`.source_ips`: choosing the source IP of a message;
- :mod:`.sender_checks`: sender hygiene and DNSBL monitoring as sending inputs;
- :mod:`.account_view`: an account's view of its pool.

Import from the module that owns a name; this package re-exports nothing.
"""
