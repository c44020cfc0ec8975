"""Cluster DNS: the records CoreDNS's kubernetes plugin serves, and lookups against them.

``records(cluster)`` lists every record of the cluster zone (``cluster.local`` by default) per
the Kubernetes DNS specification, schema 1.1.0 (kubernetes/dns docs/specification.md), as
CoreDNS's kubernetes plugin implements it:

- D-1 ``dns-version.<zone>. TXT "1.1.0"``;
- D-2 ClusterIP Service: ``<svc>.<ns>.svc.<zone>. A <clusterIP>`` and its PTR;
- D-3 SRV per *named* port ``_<port>._<proto>.<svc>.<ns>.svc.<zone>.`` -> the service name;
- D-4 headless: one A per *ready* endpoint at the service name, SRV = ready endpoints x named
  ports (endpoint port, target ``<host>.<svc>...``), a PTR per ready endpoint;
  ``<host>`` is the endpoint hostname (D-5, set when a pod's subdomain names the Service) or
  the dashed IP ``10-244-1-3``, as CoreDNS does; such per-endpoint names exist for ClusterIP
  Services too (D-6), as do their PTRs;
- D-6 pod records ``a-b-c-d.<ns>.pod.<zone>. A`` for every pod with its own IP;
- D-7 ExternalName: ``<svc>.<ns>.svc.<zone>. CNAME <externalName>.``.

What schema 1.1.0 changed from 1.0.1, and what kemu does about it:

- IPv6 (the dual-stack update): ``AAAA`` for IPv6 ClusterIPs and endpoints, ``ip6.arpa.``
  PTRs, ExternalName CNAMEs asked as ``AAAA``. kemu's model is IPv4 only (an IPv6 family is
  warned about as not modelled where it is loaded), so no name has an ``AAAA`` record:
  ``AAAA`` questions get NODATA on existing names (D-9), the CNAME on ExternalName ones, and
  ``ip6.arpa.`` names NXDOMAIN (the kubernetes plugin is authoritative for both reverse
  zones in kubeadm's Corefile) instead of REFUSED.
- The deprecated ``a-b-c-d.<ns>.pod.<zone>`` records left the required set (section 2.6 of
  1.0.1 removed); CoreDNS still serves them with ``pods insecure`` (kubeadm's Corefile), a
  schema extension section 3 allows: kemu keeps them (D-6).
- SRV records are written ``<priority> <weight> <port> <target>`` (RFC 2782 order; 1.0.1's
  text had weight first): what kemu always sent.

TTL 5 s everywhere (D-8). SRV priority 0, weight ``100 // n`` among the n records of a name.
Values are in zone-file presentation form (``0 100 53 kube-dns.kube-system.svc.cluster.local.``,
``"1.1.0"``); names are lowercase, absolute (trailing dot).

``lookup(cluster, qname, qtype)`` answers like CoreDNS with ``pods insecure`` (kubeadm's
Corefile), with the rcode as an int: names compare case-insensitively (D-8); an existing name
without the asked type is NODATA (``NOERROR`` = 0, no answers), a missing one ``NXDOMAIN`` = 3
(D-9); a headless Service without ready endpoints does not exist (D-4). ``soa(cluster, qname)``
is the SOA record CoreDNS puts in the authority section of those negative answers (D-9), for
the zone the name is in: ``cluster.local. 5 IN SOA ns.dns.cluster.local.
hostmaster.cluster.local. <serial> 7200 1800 86400 5`` (the same for ``in-addr.arpa.`` and
``ip6.arpa.``); CoreDNS's serial is the time of the last change it saw, kemu's the cluster's
``version`` (its count of changes). Names neither in the
zone nor under ``in-addr.arpa``/``ip6.arpa`` get ``REFUSED`` = 5: upstream resolution is not
emulated.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import weakref
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster

TTL = 5
SPEC_VERSION = "1.1.0"
NOERROR, NXDOMAIN, REFUSED = 0, 3, 5  # DNS rcodes (RFC 1035)
RCODE_NAMES = {NOERROR: "NOERROR", NXDOMAIN: "NXDOMAIN", REFUSED: "REFUSED"}


@dataclass(frozen=True, order=True)
class DnsRecord:
    name: str   # absolute, lowercase: "web.shop.svc.cluster.local."
    type: str   # A, SRV, PTR, TXT, CNAME
    value: str  # presentation form
    ttl: int = TTL

    def __str__(self) -> str:
        return f"{self.name} {self.ttl} IN {self.type} {self.value}"


def dashed(ip: ipaddress.IPv4Address) -> str:
    return str(ip).replace(".", "-")


def reverse_name(ip: ipaddress.IPv4Address) -> str:
    """``10.96.0.10`` -> ``10.0.96.10.in-addr.arpa.``"""
    return ip.reverse_pointer + "."


def zone_of(cluster: Cluster) -> str:
    return cluster.config.dns_domain.lower().strip(".")


def records(cluster: Cluster) -> list[DnsRecord]:
    """Every record of the cluster zone and of its reverse names, sorted, no duplicates."""
    zone = zone_of(cluster)
    out: set[DnsRecord] = {DnsRecord(f"dns-version.{zone}.", "TXT", f'"{SPEC_VERSION}"')}
    srv: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for svc in cluster.services:
        base = f"{svc.name}.{svc.namespace}.svc.{zone}."
        if svc.type == "ExternalName":
            out.add(DnsRecord(base, "CNAME", svc.external_name.lower().rstrip(".") + "."))
            continue
        ready: dict[ipaddress.IPv4Address, str] = {}
        for s in cluster.endpoint_slices(svc):
            for ep in s.endpoints:
                if ep.ready:
                    ready.setdefault(ep.ip, (ep.hostname or dashed(ep.ip)).lower())
        for ip, host in ready.items():
            out.add(DnsRecord(f"{host}.{base}", "A", str(ip)))
            out.add(DnsRecord(reverse_name(ip), "PTR", f"{host}.{base}"))
        if svc.cluster_ip is not None:
            out.add(DnsRecord(base, "A", str(svc.cluster_ip)))
            out.add(DnsRecord(reverse_name(svc.cluster_ip), "PTR", base))
        else:
            out.update(DnsRecord(base, "A", str(ip)) for ip in ready)
        for port in svc.ports:
            if not port.name:
                continue  # D-3: unnamed ports get no SRV
            name = f"_{port.name}._{port.protocol.lower()}.{base}"
            if svc.cluster_ip is not None:
                srv[name].append((port.port, base))
                continue
            for ep, number in cluster.backends(svc, port):
                if ep.ready:
                    srv[name].append((number, f"{ready[ep.ip]}.{base}"))
    for name, targets in srv.items():
        unique = sorted(set(targets))
        weight = 100 // len(unique)
        out.update(DnsRecord(name, "SRV", f"0 {weight} {port} {target}")
                   for port, target in unique)
    for pod in cluster.pods:
        if not pod.host_network:
            out.add(DnsRecord(f"{dashed(pod.ip)}.{pod.namespace}.pod.{zone}.", "A", str(pod.ip)))
    return sorted(out, key=_fields)  # the dataclass order, without its per-comparison tuples


def _fields(r: DnsRecord) -> tuple[str, str, str, int]:
    return (r.name, r.type, r.value, r.ttl)


class _Zone(dict[str, list[DnsRecord]]):
    """Records by name, and every name reversed and sorted (to find names below a name)."""

    def __init__(self, recs: list[DnsRecord]) -> None:
        super().__init__()
        for r in recs:
            self.setdefault(r.name, []).append(r)
        self.reversed_names = sorted(name[::-1] for name in self)

    def has_below(self, name: str) -> bool:
        """Whether some name ends with ``"." + name`` (``name`` is an empty non-terminal)."""
        tail = ("." + name)[::-1]
        i = bisect.bisect_left(self.reversed_names, tail)
        return i < len(self.reversed_names) and self.reversed_names[i].startswith(tail)


_cache: weakref.WeakKeyDictionary[Cluster, tuple[int, _Zone]] = weakref.WeakKeyDictionary()


def _index(cluster: Cluster) -> _Zone:
    cached = _cache.get(cluster)
    if cached is not None and cached[0] == cluster.version:
        return cached[1]
    _cache[cluster] = (cluster.version, _Zone(records(cluster)))
    return _cache[cluster][1]


def lookup(cluster: Cluster, qname: str, qtype: str) -> tuple[int, list[DnsRecord]]:
    """Answer one question: (rcode as an int, answer records). See the module docstring."""
    name = qname.lower().rstrip(".") + "."
    qtype = qtype.upper()
    zone = zone_of(cluster)
    index = _index(cluster)
    if not (name == f"{zone}." or name.endswith(f".{zone}.") or name.endswith(".in-addr.arpa.")
            or name.endswith(".ip6.arpa.")):
        return REFUSED, []
    found = index.get(name)
    if found is not None:
        answers = [r for r in found if qtype in (r.type, "ANY")]
        if not answers and qtype != "CNAME":
            answers = [r for r in found if r.type == "CNAME"]
            for r in list(answers):  # chase in-zone targets once
                answers += [t for t in index.get(r.value, []) if t.type == qtype]
        return NOERROR, answers
    pod = re.fullmatch(rf"(\d+-\d+-\d+-\d+)\.([a-z0-9-]+)\.pod\.{re.escape(zone)}\.", name)
    if pod is not None:  # pods insecure: any well-formed address in an existing namespace
        try:
            ip = ipaddress.IPv4Address(pod.group(1).replace("-", "."))
        except ValueError:
            return NXDOMAIN, []
        if pod.group(2) not in cluster.namespaces:
            return NXDOMAIN, []
        return NOERROR, [DnsRecord(name, "A", str(ip))] if qtype in ("A", "ANY") else []
    if _exists(cluster, name, zone, index):
        return NOERROR, []
    return NXDOMAIN, []


def soa(cluster: Cluster, qname: str) -> DnsRecord | None:
    """The SOA of the zone ``qname`` is in (the cluster zone or a reverse zone), or None."""
    name = qname.lower().rstrip(".") + "."
    zone = zone_of(cluster) + "."
    for z in (zone, "in-addr.arpa.", "ip6.arpa."):
        if name == z or name.endswith("." + z):
            return DnsRecord(z, "SOA", f"ns.dns.{z} hostmaster.{z} {cluster.version} 7200 1800 "
                                       f"86400 {TTL}")
    return None


def _exists(cluster: Cluster, name: str, zone: str, index: _Zone) -> bool:
    """Names with no records of their own that still exist (NODATA, not NXDOMAIN)."""
    if name in (f"{zone}.", f"svc.{zone}.", f"pod.{zone}."):
        return True
    for ns in cluster.namespaces:
        if name in (f"{ns}.svc.{zone}.", f"{ns}.pod.{zone}."):
            return True
    return index.has_below(name)  # empty non-terminal (_tcp.web...)
