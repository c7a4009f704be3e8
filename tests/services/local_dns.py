"""A tiny authoritative DNS responder on loopback UDP, serving a dict of records."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset

Zone = Mapping[tuple[str, str], Sequence[str]]


def _serve(sock: socket.socket, zone: Zone, stop: threading.Event) -> None:
    names = {name.lower().rstrip(".") for name, _ in zone}
    while not stop.is_set():
        try:
            wire, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        except OSError:
            return
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        qname = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        records = zone.get((qname, rdtype), ())
        if records:
            response.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", rdtype, list(records)))
        elif qname not in names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(max_size=65535), peer)


@contextmanager
def local_dns(zone: Zone) -> Iterator[dns.resolver.Resolver]:
    """Serve ``zone`` on 127.0.0.1:<free port> and yield a resolver pointed at it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(sock, zone, stop), daemon=True)
    thread.start()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = sock.getsockname()[1]
    resolver.use_edns(0, 0, 4096)
    resolver.lifetime = 2.0
    try:
        yield resolver
    finally:
        stop.set()
        thread.join()
        sock.close()
