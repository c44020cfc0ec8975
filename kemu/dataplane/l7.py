"""Cilium's L7 HTTP proxy, as the emulated stacks see it: per-request verdicts on a redirected
TCP connection, the proxy's own answers, and the records of what it decided.

A connection only CiliumNetworkPolicy L7 rules allow (``toPorts[].rules.http``) is redirected
by the datapath to the HTTP proxy of the destination pod's node (``EV_L7_REDIRECT``; Cilium's
Envoy, https://docs.cilium.io/en/stable/security/policy/layer7/). The engine then puts an
``HttpProxy`` between that connection's reassembled TCP stream (``slowpath.TcpStream``) and
the pod's application:

- requests are taken from the stream in order (``slowpath.http_requests``: segments
  reassembled, pipelined requests one after the other) and each is judged alone;
- a request is allowed when one HTTP rule of one of the L7 rules allowing the connection
  matches it (rules are ORed, Cilium's docs above): ``method``, ``path`` and ``host`` are
  extended regular expressions matched against the whole method, request target (Envoy's
  ``:path``, the query included) and ``Host`` header (Envoy's ``safe_regex`` full match;
  kemu uses Python's ``re.fullmatch``, which agrees on the POSIX ERE subset); every
  ``headers`` entry must be present, with exactly its value when it names one;
- an allowed request goes on to the pod's application, whose answer goes back as it is;
- a denied one never reaches the pod: the proxy answers ``403 Forbidden`` with the body
  ``Access denied\\r\\n``, as cilium/proxy's ``cilium.l7policy`` filter does
  (``cilium/l7policy.cc``: ``sendLocalReply(Http::Code::Forbidden, denied_403_body_)``, the
  default body ``Access denied`` completed with CRLF), with the headers of Envoy's local
  reply (``content-length``, ``content-type: text/plain``, ``server: envoy``; no ``date``:
  kemu's answers stay deterministic). The connection stays open unless the request closes
  it;
- a request the proxy cannot parse gets Envoy's ``400 Bad Request`` and the connection is
  closed.

SEMANTICS ids: OV-7 (Cilium's per-endpoint policy map keyed by identity, port and protocol:
an entry of an L7 port carries the proxy redirect), P-2 (rules are a union), P-10 (Service
traffic is judged at its endpoint, after DNAT), CT-6 (the data rides conntrack: the proxy,
not the datapath, judges each request).

Each verdict is an ``L7Record`` (what Hubble reports of the proxy's access log: method, URL,
protocol, headers, the response code, FORWARDED or DROPPED, the policies), kept in this
module's ``RECORDS`` by id (the latest ``KEEP`` of them) so that the integer events of a batch
(``EV_L7_HTTP``: a=pod, b=record id, c=status) can name it in pcapng comments, traces and
flow records.

Where kemu models less: the proxy acts in front of the pod's application, so the TCP segments
of a redirected connection still show on the pod's veth and eth0 (Cilium's TPROXY takes them
at the node and Envoy opens its own connection to the pod); the pod's answers are not
rewritten by Envoy (no ``server: envoy`` or ``x-envoy-*`` headers on them); HTTP/2, gRPC,
Kafka and DNS rules are refused when the policy is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kemu.dataplane.slowpath import (
    HttpError,
    HttpRequest,
    TcpStream,
    http_requests,
)

DENIED_BODY = b"Access denied\r\n"


class HttpRuleLike(Protocol):
    """What the proxy reads of an HTTP rule (``kemu.control.model.HttpRule``)."""

    method: str | None
    path: str | None
    host: str | None
    headers: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class HttpMatch:
    """One HTTP rule, its expressions compiled."""

    method: re.Pattern[str] | None
    path: re.Pattern[str] | None
    host: re.Pattern[str] | None
    headers: tuple[tuple[str, str | None], ...]

    @classmethod
    def of(cls, rule: HttpRuleLike) -> HttpMatch:
        def rx(v: str | None) -> re.Pattern[str] | None:
            return re.compile(v) if v else None

        return cls(rx(rule.method), rx(rule.path), rx(rule.host),
                   tuple((k.lower(), v) for k, v in rule.headers))

    def matches(self, req: HttpRequest) -> bool:
        if self.method is not None and self.method.fullmatch(req.method) is None:
            return False
        if self.path is not None and self.path.fullmatch(req.target) is None:
            return False
        if self.host is not None:
            host = req.header("host")
            if host is None or self.host.fullmatch(host) is None:
                return False
        for name, value in self.headers:
            have = [v for k, v in req.headers if k == name]
            if not have or (value is not None and value not in have):
                return False
        return True


@dataclass(frozen=True)
class L7Rule:
    """An L7 rule allowing a redirected connection: its policy (``ns/name``), direction word,
    index in the policy, and its HTTP rules."""

    policy: str
    index: int
    http: tuple[HttpMatch, ...]


@dataclass
class L7Record:
    """One request the proxy judged, and its response (Hubble's ``HTTP`` L7 fields)."""

    pod: str                      # ns/name of the destination pod
    client: tuple[int, int]       # (address, port) as the proxy saw them
    server: tuple[int, int]
    method: str
    target: str                   # the request target (path and query)
    url: str
    protocol: str
    headers: tuple[tuple[str, str], ...]
    allowed: bool
    code: int
    policies: tuple[str, ...]     # allowed: the rule's policy; denied: every L7 policy
    rule: str = ""                # "shop/cnp-web ingress rule 0" when allowed

    @property
    def verdict(self) -> str:
        return "FORWARDED" if self.allowed else "DROPPED"

    def text(self) -> str:
        """``L7 proxy: GET /admin denied by policy shop/cnp-web (403)``."""
        if self.allowed:
            return (f"L7 proxy: {self.method} {self.target} allowed by policy {self.rule} "
                    f"({self.code})")
        return (f"L7 proxy: {self.method} {self.target} denied by policy "
                f"{', '.join(self.policies)} ({self.code})")


KEEP = 1 << 18
"""How many of the latest records ``RECORDS`` holds: a replay names each verdict in the batch
that made it (pcapng comments, flow records, traces), so older ones are not needed, and a
day-long replay full of HTTP keeps its memory bounded."""

RECORDS: dict[int, L7Record] = {}
"""The latest ``KEEP`` records of this process by id (``EV_L7_HTTP`` b: the events stay
integers); ids keep counting up, an evicted id is not reused."""
_next_id = 0


def record(rec: L7Record) -> int:
    global _next_id
    rid, _next_id = _next_id, _next_id + 1
    RECORDS[rid] = rec
    if len(RECORDS) > KEEP:
        del RECORDS[next(iter(RECORDS))]  # (dicts keep insertion order: the oldest)
    return rid


def get(rid: int) -> L7Record | None:
    """The record ``rid``, or None when it was never made or is older than the latest
    ``KEEP`` (the callers then name the verdict by its status alone)."""
    return RECORDS.get(rid)


def denied_response(close: bool) -> bytes:
    """Envoy's local reply of ``cilium.l7policy`` for a denied request."""
    lines = ["HTTP/1.1 403 Forbidden", f"content-length: {len(DENIED_BODY)}",
             "content-type: text/plain", "server: envoy"]
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + DENIED_BODY


def _error_response(status: int, reason: str) -> bytes:
    body = reason.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-length: {len(body)}\r\n"
            "content-type: text/plain\r\nserver: envoy\r\nconnection: close\r\n\r\n"
            ).encode() + body


def serialize(req: HttpRequest) -> bytes:
    """A request as the proxy sends it on to the pod."""
    head = f"{req.method} {req.target} {req.version}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in req.headers) + "\r\n"
    return head.encode("latin-1") + req.body


def _status(answer: bytes) -> int:
    """The status code of an HTTP response's first line, 0 when it has none."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(m.group(1)) if m else 0


Application = Callable[[TcpStream], bytes]


@dataclass
class HttpProxy:
    """The proxy of one redirected connection: ``rules`` the L7 rules allowing it.
    ``__call__`` is what ``TcpStream.proxy`` calls with the pod's application; each
    request's record id and response status are appended to ``pending`` (the engine takes
    them to the answer that carries the response)."""

    pod: str
    rules: Sequence[L7Rule]
    pending: list[tuple[int, int]] = field(default_factory=list)

    def judge(self, req: HttpRequest) -> L7Rule | None:
        """The first L7 rule one of whose HTTP rules matches ``req``; None: denied."""
        for rule in self.rules:
            if any(m.matches(req) for m in rule.http):
                return rule
        return None

    def __call__(self, stream: TcpStream, app: Application) -> bytes:
        try:
            requests = http_requests(stream.data)
        except HttpError as e:
            stream.data.clear()
            stream.close_after = True
            return _error_response(e.status, e.reason)
        out = b""
        for req in requests:
            rule = self.judge(req)
            close = not req.keep_alive
            if rule is None:
                answer = denied_response(close)
            else:
                sub = TcpStream(stream.peer, stream.local, 0, 0, stream.mss,
                                data=bytearray(serialize(req)))
                answer = app(sub)
                close = close or sub.close_after
            host = req.header("host")
            rec = L7Record(
                pod=self.pod, client=stream.peer, server=stream.local, method=req.method,
                target=req.target, url=f"http://{host}{req.target}" if host else req.target,
                protocol=req.version, headers=req.headers, allowed=rule is not None,
                code=_status(answer),
                policies=(rule.policy,) if rule is not None else _unique(
                    r.policy for r in self.rules),
                rule=f"{rule.policy} ingress rule {rule.index}" if rule is not None else "")
            self.pending.append((record(rec), rec.code))
            out += answer
            if close:
                stream.close_after = True
                stream.data.clear()  # what follows a closing request is never read
                break
        return out


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
