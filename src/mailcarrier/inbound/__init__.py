"""The return path's I/O: the inbound SMTP server, file and mailbox import, the IMAP poller."""
