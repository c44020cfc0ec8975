"""Address maps: a capture from elsewhere replayed onto the emulated cluster's hosts.

A real capture's addresses are not the emulated cluster's. ``replay --map ADDR=TARGET``
(``address_map`` in the API) names, for an IPv4 address or CIDR of the capture, what it
becomes in the cluster:

- ``NS/POD``: that pod's address; ``NS/`` (a namespace): the capture's hosts in ADDR, in
  address order, onto the namespace's pods with addresses of their own, in name order (pods
  another rule names are skipped; more hosts than pods is an error);
- ``svc/NS/NAME`` or a Service's ClusterIP: the Service (several hosts may share it). Frames
  to it are load-balanced like in-cluster traffic; frames from it (a capture's replies) are
  not placed: its endpoints answer with ``--respond``;
- ``ext/NAME``: an external host; ``node/NAME``: a node; an IPv4 address of the cluster.

A CIDR's hosts are the addresses the capture uses in it (a pass over the capture finds
them; its network and broadcast addresses are left out). Each capture address follows its
most specific rule. Every frame's IPv4 source and destination (ARP: sender and target
address, ICMP errors: the quoted header too) go through the map before placement, with the
IPv4, TCP, UDP and ICMP checksums updated (RFC 1624: a checksum that was wrong stays wrong);
addresses the map does not name are left alone. Two capture hosts onto one host (a pod, an
external host, a node) and targets that do not exist are errors naming the option.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from kemu.control.cluster import Cluster
from kemu.dataplane import codes as C
from kemu.dataplane.describe import ip_str, owner_text
from kemu.dataplane.packet import csum_replace16, csum_replace32, put16, put32, u16, u32
from kemu.dataplane.tables import Tables
from kemu.errors import KemuError
from kemu.frontend.placement import WHY_SERVICE
from kemu.io.frames import Capture

_ICMP_ERRORS = (3, 4, 5, 11, 12)
_ENOUGH = 1 << 20  # hosts listed per CIDR before giving up on a pass (a /12 of a capture)


@dataclass(frozen=True)
class Rule:
    label: str                   # "--map 10.0.0.0/24=shop/", for messages
    net: ipaddress.IPv4Network
    target: str


@dataclass(frozen=True)
class Target:
    ip: int
    what: str          # "pod default/client", "Service shop/frontend", ...
    service: bool = False


def parse_rules(spec: Mapping[str, str] | Iterable[str]) -> list[Rule]:
    """``{"ADDR": "TARGET"}`` or ``["ADDR=TARGET", ...]`` as rules; bad syntax is an error."""
    pairs: list[tuple[str, str, str]] = []
    if isinstance(spec, Mapping):
        pairs = [(f"{a}={t}", str(a), str(t)) for a, t in spec.items()]
    else:
        for item in spec:
            addr, eq, target = str(item).partition("=")
            pairs.append((str(item), addr, target if eq else ""))
    rules, problems, seen = [], [], {}
    for text, addr, target in pairs:
        label = f"--map {text}"
        addr, target = addr.strip(), target.strip()
        if not target:
            problems.append(f"{label}: expected ADDR=TARGET (e.g. 10.0.0.5=default/client, "
                            "10.0.0.0/24=shop/)")
            continue
        try:
            net = ipaddress.IPv4Network(addr, strict=False)
        except ValueError:
            problems.append(f"{label}: {addr!r} is not an IPv4 address or CIDR")
            continue
        if net in seen:
            problems.append(f"{label}: {net} is already mapped by {seen[net]}")
            continue
        seen[net] = label
        rules.append(Rule(label, net, target))
    if problems:
        raise KemuError("\n".join(problems))
    return rules


def _targets(model: Cluster, t: Tables, rule: Rule) -> list[Target] | str:
    """What a rule's target names (a namespace: its pods), or why it names nothing."""
    spec = rule.target
    pods = {p.key: p for p in model.pods}
    if spec.startswith("svc/"):
        key = spec[4:]
        svc = next((s for s in model.services if s.key == key), None)
        if svc is None:
            return f"no Service {key} (kemu show ... services -A lists them)"
        if svc.cluster_ip is None:
            return f"Service {key} has no ClusterIP ({'headless' if svc.headless else svc.type})"
        return [Target(int(svc.cluster_ip), f"Service {key}", True)]
    if spec.startswith("ext/") and spec[4:] in t.ext_name:
        ext = model.config.external_hosts[t.ext_name.index(spec[4:])]
        return [Target(int(ext.ip), f"external host {ext.name}")]
    if spec.startswith("node/") and spec[5:] in t.node_name:
        node = model.nodes[t.node_name.index(spec[5:])]
        return [Target(int(node.internal_ip), f"node {node.name}")]
    if spec.endswith("/") and spec.count("/") == 1:
        ns = spec[:-1]
        own = sorted((p for p in model.pods if p.namespace == ns and not p.host_network
                      and p.ip is not None), key=lambda p: p.name)
        if not own:
            return f"namespace {ns} has no pods with addresses of their own"
        return [Target(int(p.ip), f"pod {p.key}") for p in own]
    if spec.count("/") == 1:
        pod = pods.get(spec)
        if pod is not None and pod.ip is not None:
            return [Target(int(pod.ip), f"pod {pod.key}")]
        if spec.startswith(("ext/", "node/")):
            kind = "external host" if spec.startswith("ext/") else "node"
            return f"no {kind} {spec.split('/', 1)[1]}"
        return f"no pod {spec} (kemu show ... pods -A lists them)"
    try:
        ip = int(ipaddress.IPv4Address(spec))
    except ValueError:
        return (f"{spec!r} is not NS/POD, NS/, svc/NS/NAME, ext/NAME, node/NAME or an IPv4 "
                "address of the cluster")
    owner = t.owner_of(ip)
    if owner >= 0:
        return [Target(ip, owner_text(t, owner))]
    for svc in model.services:
        if svc.cluster_ip is not None and int(svc.cluster_ip) == ip:
            return [Target(ip, f"Service {svc.key}", True)]
    return f"{spec} is not an address of this cluster (no pod, host, node or ClusterIP)"


class AddressMap:
    """Capture address -> cluster address, and the rewrite of a chunk's frames through it."""

    def __init__(self, pairs: dict[int, tuple[Target, str]]) -> None:
        order = sorted(pairs)
        self.keys = np.array(order, dtype=np.int64)
        self.values = np.array([pairs[a][0].ip for a in order], dtype=np.int64)
        self.service = np.array([pairs[a][0].service for a in order], dtype=bool)
        self.what = [pairs[a][0].what for a in order]
        self.labels = [pairs[a][1] for a in order]
        self.hits = np.zeros(len(order), dtype=bool)  # addresses met in replayed frames
        self._dict = dict(zip(order, (pairs[a][0].ip for a in order), strict=True))

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def build(cls, model: Cluster, t: Tables, rules: list[Rule],
              capture: str | os.PathLike | None = None, limit: int = 0) -> AddressMap:
        """Resolve ``rules`` (CIDRs: over the hosts ``capture`` uses in them, in its first
        ``limit`` frames when that is not 0); all problems in one ``KemuError``."""
        problems: list[str] = []
        resolved: dict[Rule, list[Target]] = {}
        for rule in rules:
            got = _targets(model, t, rule)
            if isinstance(got, str):
                problems.append(f"{rule.label}: {got}")
            else:
                resolved[rule] = got
        if problems:
            raise KemuError("\n".join(problems))
        wide = [r.net for r in rules if r.net.prefixlen < 32]
        hosts = capture_hosts(capture, wide, limit) if wide and capture is not None else \
            np.zeros(0, np.int64)
        # each capture address follows its most specific rule
        owner: dict[int, Rule] = {}
        for rule in sorted(rules, key=lambda r: -r.net.prefixlen):
            if rule.net.prefixlen == 32:
                owner.setdefault(int(rule.net.network_address), rule)
                continue
            lo, hi = int(rule.net.network_address), int(rule.net.broadcast_address)
            inside = hosts[(hosts >= lo) & (hosts <= hi)]
            if rule.net.prefixlen < 31:
                inside = inside[(inside != lo) & (inside != hi)]
            for a in inside.tolist():
                owner.setdefault(a, rule)
        by_rule: dict[Rule, list[int]] = {}
        for a in sorted(owner):
            by_rule.setdefault(owner[a], []).append(a)
        taken = {ts[0].ip for r, ts in resolved.items() if not r.target.endswith("/")
                 and not ts[0].service}
        pairs: dict[int, tuple[Target, str]] = {}
        for rule in rules:
            addrs, targets = by_rule.get(rule, []), resolved[rule]
            if rule.target.endswith("/") and not rule.target.startswith("svc/"):
                free = [x for x in targets if x.ip not in taken]
                if len(addrs) > len(free):
                    problems.append(
                        f"{rule.label}: the capture has {_n(len(addrs), 'host')} in "
                        f"{rule.net} but namespace {rule.target[:-1]} has "
                        f"{_n(len(free), 'pod')} to put them on"
                        + (f" ({len(targets) - len(free)} more named by other --map)"
                           if len(free) < len(targets) else "")
                        + "; map some hosts one by one or narrow the CIDR")
                    continue
                for a, x in zip(addrs, free, strict=False):
                    pairs[a] = (x, rule.label)
            elif len(addrs) > 1 and not targets[0].service:
                shown = ", ".join(ip_str(a) for a in addrs[:3]) + (
                    f" and {len(addrs) - 3} more" if len(addrs) > 3 else "")
                problems.append(f"{rule.label}: the capture has {_n(len(addrs), 'host')} in "
                                f"{rule.net} ({shown}): they cannot all become "
                                f"{targets[0].what}; map them onto a namespace (NS/) or one "
                                "by one")
            else:
                for a in addrs:
                    pairs[a] = (targets[0], rule.label)
        onto: dict[int, list[int]] = {}
        for a, (x, _label) in pairs.items():
            if not x.service:
                onto.setdefault(x.ip, []).append(a)
        for ip, addrs in sorted(onto.items()):
            if len(addrs) > 1:
                labels = sorted({pairs[a][1] for a in addrs})
                problems.append(f"{' and '.join(labels)}: capture hosts "
                                f"{', '.join(ip_str(a) for a in sorted(addrs))} would all "
                                f"become {pairs[addrs[0]][0].what} ({ip_str(ip)})")
        if problems:
            raise KemuError("\n".join(problems))
        return cls(pairs)

    # ------------------------------------------------------------ per chunk
    def apply(self, cap: Capture) -> tuple[np.ndarray, np.ndarray]:
        """``rewrite`` a chunk (its buffer copied first if read-only)."""
        if not cap.buf.flags.writeable:
            cap.buf = cap.buf.copy()
        return self.rewrite(cap.buf, cap.offsets, cap.lengths)

    def unplace_services(self, placed: tuple[np.ndarray, np.ndarray, np.ndarray],
                         mapped: tuple[np.ndarray, np.ndarray]) -> None:
        """Frames whose source the map made a Service address are not placed (``WHY_SERVICE``):
        no host sends from a ClusterIP; the Service's endpoints answer (``--respond``)."""
        if not self.service.any():
            return
        iface, _mode, why = placed
        src_k = mapped[0]
        svc = np.zeros(len(src_k), bool)
        svc[src_k >= 0] = self.service[src_k[src_k >= 0]]
        iface[svc] = -1
        why[svc] = WHY_SERVICE

    def count(self, mapped: tuple[np.ndarray, np.ndarray], n: int) -> int:
        """How many of a chunk's first ``n`` frames were rewritten; notes the addresses met."""
        src_k, dst_k = mapped[0][:n], mapped[1][:n]
        self.hits[src_k[src_k >= 0]] = True
        self.hits[dst_k[dst_k >= 0]] = True
        return int(np.count_nonzero((src_k >= 0) | (dst_k >= 0)))

    def lookup(self, addrs: np.ndarray) -> np.ndarray:
        """Index into ``keys`` of each address, -1 where the map does not name it."""
        if not len(self.keys):
            return np.full(len(addrs), -1, np.int32)
        pos = np.minimum(np.searchsorted(self.keys, addrs), len(self.keys) - 1)
        return np.where(self.keys[pos] == addrs, pos, -1).astype(np.int32)

    def rewrite(self, buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Rewrite the frames in ``buf`` in place; per frame the map index of its source and
        destination (ARP: sender and target address), -1 where not mapped. Header fields are
        gathered and written back as rows (one copy per frame, not per byte)."""
        n = len(offsets)
        src_k = np.full(n, -1, np.int32)
        dst_k = np.full(n, -1, np.int32)
        if not n or not len(self.keys):
            return src_k, dst_k
        off = np.asarray(offsets, np.int64)
        ln = np.asarray(lengths, np.int64)
        et = np.full(n, -1, np.int64)
        ok = np.flatnonzero(ln >= 14)
        et[ok] = _be16(buf, off[ok] + 12)
        # IPv4: a whole header
        ip = np.flatnonzero((et == 0x0800) & (ln >= 34))
        if len(ip):
            hdr = _rows(buf, off[ip] + 14, 20)  # as 32-bit words: 3 source, 4 destination
            ihl = (hdr[:, 0] & 0xF).astype(np.int64) * 4
            good = (hdr[:, 0] >> 4 == 4) & (ihl >= 20) & (ln[ip] >= 14 + ihl)
            words = hdr.view(">u4")
            s_old, d_old = words[:, 3].astype(np.int64), words[:, 4].astype(np.int64)
            sk, dk = self.lookup(s_old), self.lookup(d_old)
            hit = good & ((sk >= 0) | (dk >= 0))
            if not hit.all():
                ip, sk, dk, hdr = ip[hit], sk[hit], dk[hit], hdr[hit]
                s_old, d_old = s_old[hit], d_old[hit]
            if len(ip):
                src_k[ip], dst_k[ip] = sk, dk
                self._rewrite_ipv4(buf, off[ip], ln[ip], hdr, s_old, d_old,
                                   np.where(sk >= 0, self.values[sk], s_old),
                                   np.where(dk >= 0, self.values[dk], d_old))
        # ARP: sender and target protocol addresses (IPv4 over Ethernet)
        arp = np.flatnonzero((et == 0x0806) & (ln >= 42))
        if len(arp):
            s_old, d_old = _be32(buf, off[arp] + 28), _be32(buf, off[arp] + 38)
            sk, dk = self.lookup(s_old), self.lookup(d_old)
            for sel, at, k in ((sk >= 0, 28, sk), (dk >= 0, 38, dk)):
                if sel.any():
                    _put32(buf, off[arp[sel]] + at, self.values[k[sel]])
            src_k[arp], dst_k[arp] = sk, dk
        return src_k, dst_k

    def _rewrite_ipv4(self, buf: np.ndarray, off: np.ndarray, ln: np.ndarray,
                      hdr: np.ndarray, s_old: np.ndarray, d_old: np.ndarray,
                      s_new: np.ndarray, d_new: np.ndarray) -> None:
        """Frames at ``off`` with IPv4 headers ``hdr`` (their first 20 bytes, as rows)."""
        olds, news = (s_old, d_old), (s_new, d_new)
        words, halves = hdr.view(">u4"), hdr.view(">u2")
        words[:, 3], words[:, 4] = s_new, d_new
        halves[:, 5] = csum_update(halves[:, 5], olds, news)
        _put_rows(buf, off + 14, hdr)
        ihl = (hdr[:, 0] & 0xF).astype(np.int64) * 4
        l4 = off + 14 + ihl
        # fragments after the first carry no L4 header
        first = (((hdr[:, 6].astype(np.int64) << 8) | hdr[:, 7]) & 0x1FFF) == 0
        proto = hdr[:, 9]
        have = ln - 14 - ihl  # captured bytes of L4
        tcp = first & (proto == C.PROTO_TCP) & (have >= 18)
        if tcp.any():
            at = l4[tcp] + 16
            _put16(buf, at, csum_update(_be16(buf, at), (s_old[tcp], d_old[tcp]),
                                        (s_new[tcp], d_new[tcp])))
        udp = first & (proto == C.PROTO_UDP) & (have >= 8)
        if udp.any():
            at = l4[udp] + 6
            check = _be16(buf, at)
            used = check != 0  # 0: no checksum (RFC 768), left so
            at, check = at[used], check[used]
            sel = np.flatnonzero(udp)[used]
            new = csum_update(check, (s_old[sel], d_old[sel]), (s_new[sel], d_new[sel]))
            _put16(buf, at, np.where(new == 0, 0xFFFF, new))
        icmp = first & (proto == C.PROTO_ICMP) & (have >= 8 + 20)
        if icmp.any():
            idx = np.flatnonzero(icmp)
            idx = idx[np.isin(buf[l4[idx]], _ICMP_ERRORS)]
            for k in idx.tolist():  # rare: the quoted header, one frame at a time
                self._rewrite_quoted(buf, int(off[k]), int(l4[k]), int(off[k] + ln[k]))

    def _rewrite_quoted(self, buf: np.ndarray, start: int, l4: int, end: int) -> None:
        """An ICMP error's quoted IPv4 header (and the start of its L4 header) through the map,
        with its checksums and the ICMP checksum updated."""
        f = bytearray(buf[start:end].tobytes())
        icmp, q = l4 - start, l4 - start + 8
        ihl = (f[q] & 0xF) * 4
        if f[q] >> 4 != 4 or ihl < 20 or q + ihl > len(f):
            return
        old = (u32(f, q + 12), u32(f, q + 16))
        new = tuple(self._dict.get(a, a) for a in old)
        if new == old:
            return
        icheck = u16(f, icmp + 2)
        for at, o, v in ((q + 12, old[0], new[0]), (q + 16, old[1], new[1])):
            put32(f, at, v)
            icheck = csum_replace32(icheck, o, v)
        words = [(q + 10, csum_replace32(csum_replace32(u16(f, q + 10), old[0], new[0]),
                                         old[1], new[1]))]
        ql4, have = q + ihl, len(f) - q - ihl
        if u16(f, q + 6) & 0x1FFF == 0:
            at = {C.PROTO_UDP: 6 if have >= 8 else -1, C.PROTO_TCP: 16 if have >= 18 else -1
                  }.get(f[q + 9], -1)
            if at >= 0 and not (f[q + 9] == C.PROTO_UDP and u16(f, ql4 + at) == 0):
                c = csum_replace32(csum_replace32(u16(f, ql4 + at), old[0], new[0]),
                                   old[1], new[1])
                words.append((ql4 + at, 0xFFFF if c == 0 and f[q + 9] == C.PROTO_UDP else c))
        for at, v in words:
            icheck = csum_replace16(icheck, u16(f, at), v)
            put16(f, at, v)
        put16(f, icmp + 2, icheck)
        buf[start:end] = np.frombuffer(bytes(f), np.uint8)


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def csum_update(check: np.ndarray, olds: tuple[np.ndarray, ...], news: tuple[np.ndarray, ...]
                ) -> np.ndarray:
    """RFC 1624 eqn. 3 over 32-bit fields, vectorised: ``packet.csum_replace32`` of each
    (old, new) pair in turn, for every element."""
    s = (~np.asarray(check, np.int64)) & 0xFFFF
    for old, new in zip(olds, news, strict=True):
        old, new = np.asarray(old, np.int64), np.asarray(new, np.int64)
        s = s + ((~(old >> 16)) & 0xFFFF) + ((~old) & 0xFFFF) + (new >> 16) + (new & 0xFFFF)
    for _ in range(3):
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def capture_hosts(capture: str | os.PathLike, nets: list[ipaddress.IPv4Network],
                  limit: int = 0) -> np.ndarray:
    """The IPv4 addresses (sources, destinations, ARP sender and target) a capture's frames
    use inside ``nets``, sorted; the first ``limit`` frames when that is not 0."""
    from kemu.io.capture import iter_capture
    from kemu.io.linktypes import to_ethernet

    found = np.zeros(0, np.int64)
    done = 0
    for chunk in iter_capture(capture, chunk_bytes=8 << 20, reuse_buffer=True):
        cap = to_ethernet(chunk)
        n = len(cap) if not limit else min(len(cap), limit - done)
        addrs = frame_addresses(cap.buf, cap.offsets[:n], cap.lengths[:n])
        inside = np.zeros(len(addrs), bool)
        for net in nets:
            lo, hi = int(net.network_address), int(net.broadcast_address)
            inside |= (addrs >= lo) & (addrs <= hi)
        found = np.union1d(found, addrs[inside])
        if len(found) > _ENOUGH:
            raise KemuError(f"--map {nets[0]}: the capture has more than {_ENOUGH} hosts in "
                            "the mapped CIDRs")
        done += n
        if limit and done >= limit:
            break
    return found


def frame_addresses(buf: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """IPv4 sources and destinations and ARP sender and target addresses of frames (one
    array, in no particular order)."""
    off = np.asarray(offsets, np.int64)
    ln = np.asarray(lengths, np.int64)
    ok = np.flatnonzero(ln >= 14)
    et = _be16(buf, off[ok] + 12)
    ip, arp = ok[(et == 0x0800) & (ln[ok] >= 34)], ok[(et == 0x0806) & (ln[ok] >= 42)]
    return np.concatenate([_be32(buf, off[ip] + 26), _be32(buf, off[ip] + 30),
                           _be32(buf, off[arp] + 28), _be32(buf, off[arp] + 38)])


def _rows(buf: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``buf[starts[i]:+width]`` for every i, as a (len(starts), width) copy."""
    return sliding_window_view(buf, width)[starts]


def _put_rows(buf: np.ndarray, starts: np.ndarray, rows: np.ndarray) -> None:
    sliding_window_view(buf, rows.shape[1], writeable=True)[starts] = rows


def _bytes16(value: np.ndarray) -> np.ndarray:
    return np.asarray(value).astype(">u2").view(np.uint8).reshape(-1, 2)


def _be16(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _rows(buf, pos, 2).copy().view(">u2")[:, 0].astype(np.int64)


def _be32(buf: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return _rows(buf, pos, 4).copy().view(">u4")[:, 0].astype(np.int64)


def _put16(buf: np.ndarray, pos: np.ndarray, value: np.ndarray) -> None:
    _put_rows(buf, pos, _bytes16(value))


def _put32(buf: np.ndarray, pos: np.ndarray, value: np.ndarray) -> None:
    _put_rows(buf, pos, np.asarray(value).astype(">u4").view(np.uint8).reshape(-1, 4))
