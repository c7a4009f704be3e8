"""Open and click tracking, one concern per module.

- :mod:`.keys`: signing keys and thresholds from the settings;
- :mod:`.links`: send time: link registration and rewriting (the worker's link hook), and
  the click-token look-up at request time;
- :mod:`.hits`: a request as received and its spool record;
- :mod:`.spool`: the on-disk spool between the web server and the hit writer (runtime I/O);
- :mod:`.verdicts`: hit ingestion, each hit judged human or machine and stored;
- :mod:`.settle`: after the hold, engagement applied to contacts and handed to webhooks;
- :mod:`.writer`: the hit writer and recorder that run the above;
- :mod:`.engagement`: the per-mailing engagement report.

Import from the module that owns a name; this package re-exports nothing.
"""
