"""A pod's /etc/resolv.conf as kubelet writes it, and the names its resolver asks for (D-10).

``parse_dns_policy`` / ``parse_dns_config`` read ``spec.dnsPolicy`` and ``spec.dnsConfig`` with
the API server's checks (``ValidatePodSpec``): the policy is one of ``ClusterFirst`` (the
default), ``ClusterFirstWithHostNet``, ``Default``, ``None``; at most 3 nameservers, each an
IP address; at most 32 search domains of at most 2048 characters together (the expanded
limits, GA since 1.28), each a DNS subdomain (one trailing dot allowed); every option has a
name; ``None`` needs at least one nameserver. The same shape is the Cluster document's
``spec.nodeDNS``: the nodes' own /etc/resolv.conf (kemu models one for every node).

``resolv_conf(cluster, pod)`` follows kubelet's ``pkg/kubelet/network/dns/dns.go``
(``GetPodDNS``):

- ``ClusterFirst`` (and ``ClusterFirstWithHostNet``): ``nameserver`` = the cluster DNS
  (kubelet's ``clusterDNS``: the ClusterIP of ``kube-system/kube-dns``, else the tenth address
  of the service CIDR as kubeadm configures it), ``search <ns>.svc.<zone> svc.<zone> <zone>``
  followed by the node's search domains, ``options ndots:5`` (the node's options are not
  kept). ``ClusterFirst`` on a ``hostNetwork`` pod falls back to ``Default``, as kubelet does.
- ``Default``: the node's resolv.conf: ``spec.nodeDNS`` of the Cluster document, or, when
  it is not given, ``nameserver <the node network's gateway>`` with no search domain and no
  option (a node whose DHCP/resolver points at its router; no gateway: no nameserver, and
  glibc then asks 127.0.0.1).
- ``None``: nothing but ``dnsConfig``.

``dnsConfig`` is then merged in (``appendDNSConfig``): its nameservers and searches appended,
duplicates dropped keeping the first; its options override same-named ones and add the
others. kubelet lays the merged options out in Go map order (random each time); kemu keeps
the base options first and new ones in the pod's order, which glibc reads the same. Finally
``formDNSConfigFitsLimits``: more than 3 nameservers are cut to the first 3, search domains
beyond 32, longer than 253 characters, or past 2048 characters on the line are left out,
each with the warning kubelet records as a ``DNSConfigForming`` event. ``text()`` is the
file as the container runtime writes it (containerd: ``search``, ``nameserver`` lines,
``options``).

``Search(name, conf)`` walks the names glibc's ``res_nsearch`` tries, in its order
(``resolv/res_query.c``): a name with a trailing dot only as it is; a name with at least
``ndots`` dots as it is first, then with each search domain; else with each search domain,
then as it is. ``Search.result(rcode, answered)`` says whether glibc goes on: an answer with
records ends the search; NXDOMAIN (``HOST_NOT_FOUND``), NODATA (``NO_DATA``: NOERROR without
records) and SERVFAIL go on to the next domain; any other error (REFUSED, FORMERR, NOTIMP)
ends the search-domain loop, after which the name as it is is still tried if it was not yet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kemu.control.manifests import Fields, dns_subdomain_error, join
from kemu.control.model import ClusterConfig, DnsConfig, Pod, Service


class Cluster(Protocol):
    """What this module reads of ``kemu.control.cluster.Cluster`` (which imports the loader,
    which imports this module: a protocol, not an import)."""

    config: ClusterConfig
    services: list[Service]

POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
MAX_NAMESERVERS = 3        # validation.MaxDNSNameservers; glibc's MAXNS
MAX_SEARCH_PATHS = 32      # validation.MaxDNSSearchPaths (expanded DNS config)
MAX_SEARCH_CHARS = 2048    # validation.MaxDNSSearchListChars
MAX_SEARCH_LENGTH = 253    # a DNS subdomain: longer ones are dropped (glibc 2.28 aborts)
CLUSTER_OPTIONS = [("ndots", "5")]  # kubelet's defaultDNSOptions
NDOTS_DEFAULT, NDOTS_MAX = 1, 15    # glibc: ndots defaults to 1, capped at RES_MAXNDOTS
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


def parse_dns_policy(f: Fields, spec: dict[str, Any], spath: str) -> str:
    """``spec.dnsPolicy`` of a pod spec (``ClusterFirst`` when absent)."""
    return f.choice(spec, spath, "dnsPolicy", POLICIES, "ClusterFirst")


def parse_dns_config(f: Fields, spec: dict[str, Any], spath: str, key: str = "dnsConfig",
                     need_nameserver: bool = False) -> DnsConfig | None:
    """A ``dnsConfig``-shaped mapping (``spec.dnsConfig``, the Cluster's ``spec.nodeDNS``),
    checked as the API server checks it; None when absent. ``need_nameserver``: dnsPolicy
    None, which needs at least one."""
    where = join(spath, key)
    if spec.get(key) is None:
        if need_nameserver:
            f.problem(where, "required when dnsPolicy is None (at least one nameserver)")
        return None
    d = f.mapping(spec, spath, key)
    f.known(d, where, ("nameservers", "searches", "options"))
    cfg = DnsConfig()
    servers = f.seq(d, where, "nameservers")
    for i, text in enumerate(servers):
        try:
            cfg.nameservers.append(str(ipaddress.ip_address(str(text).strip())))
        except ValueError:
            f.problem(f"{where}.nameservers[{i}]", f"'{text}' must be a valid IP address")
    if len(servers) > MAX_NAMESERVERS:
        f.problem(f"{where}.nameservers", f"must not have more than {MAX_NAMESERVERS} "
                  f"nameservers (got {len(servers)})")
    if need_nameserver and not servers:
        f.problem(f"{where}.nameservers", "must have at least one nameserver when dnsPolicy "
                  "is None")
    searches = f.seq(d, where, "searches")
    for i, text in enumerate(searches):
        value = str(text)
        name = value[:-1] if value.endswith(".") and value != "." else value
        if err := dns_subdomain_error(name):
            f.problem(f"{where}.searches[{i}]", f"'{value}' {err}")
        else:
            cfg.searches.append(value)
    if len(searches) > MAX_SEARCH_PATHS:
        f.problem(f"{where}.searches", f"must not have more than {MAX_SEARCH_PATHS} search "
                  f"paths (got {len(searches)})")
    if len(" ".join(str(s) for s in searches)) > MAX_SEARCH_CHARS:
        f.problem(f"{where}.searches", f"must not have more than {MAX_SEARCH_CHARS} "
                  "characters (including spaces) in the search list")
    for opath, opt in f.mappings(d, where, "options"):
        f.known(opt, opath, ("name", "value"))
        name = f.string(opt, opath, "name", required=True)
        value = opt.get("value")
        if name:
            cfg.options.append((name, None if value is None else str(value)))
    return cfg


@dataclass
class ResolvConf:
    """A resolv.conf: nameservers, search domains, options (``name`` or ``name:value``), and
    the ``DNSConfigForming`` warnings kubelet recorded while forming it."""

    nameservers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    policy: str = "ClusterFirst"  # the policy in effect (ClusterFirst on hostNetwork: Default)
    warnings: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The file as the container runtime writes it."""
        out = ""
        if self.searches:
            out += f"search {' '.join(self.searches)}\n"
        out += "".join(f"nameserver {ns}\n" for ns in self.nameservers)
        if self.options:
            out += f"options {' '.join(self.options)}\n"
        return out

    @property
    def ndots(self) -> int:
        """glibc's ``ndots`` (the last ``ndots:n`` wins; 1 by default, at most 15)."""
        n = NDOTS_DEFAULT
        for opt in self.options:
            name, _, value = opt.partition(":")
            if name == "ndots" and value.isdigit():
                n = min(int(value), NDOTS_MAX)
        return n


def cluster_dns(cluster: Cluster) -> str:
    """kubelet's ``clusterDNS``: the kube-dns Service's ClusterIP, else kubeadm's default
    (the tenth address of the service CIDR)."""
    for svc in cluster.services:
        if svc.namespace == "kube-system" and svc.name == "kube-dns" and svc.cluster_ip:
            return str(svc.cluster_ip)
    return str(cluster.config.service_cidr.network_address + 10)


def node_dns(cluster: Cluster) -> DnsConfig:
    """The nodes' resolv.conf: ``spec.nodeDNS``, else ``nameserver <gateway>``."""
    if cluster.config.node_dns is not None:
        return cluster.config.node_dns
    gw = cluster.config.gateway_ip
    return DnsConfig(nameservers=[str(gw)] if gw is not None else [])


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def resolv_conf(cluster: Cluster, pod: Pod) -> ResolvConf:
    """The pod's resolv.conf (see the module docstring)."""
    host = node_dns(cluster)
    policy = pod.dns_policy
    if policy == "ClusterFirst" and pod.host_network:
        policy = "Default"  # kubelet: ClusterFirst on the host network falls back
    conf = ResolvConf(policy=policy)
    options: dict[str, str | None] = {}
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        zone = cluster.config.dns_domain.strip(".")
        conf.nameservers = [cluster_dns(cluster)]
        conf.searches = _unique([f"{pod.namespace}.svc.{zone}", f"svc.{zone}", zone,
                                 *host.searches])
        options = dict(CLUSTER_OPTIONS)
    elif policy == "Default":
        conf.nameservers = list(host.nameservers)
        conf.searches = list(host.searches)
        options = dict(host.options)
    if pod.dns_config is not None:
        conf.nameservers = _unique(conf.nameservers + pod.dns_config.nameservers)
        conf.searches = _unique(conf.searches + pod.dns_config.searches)
        options.update(pod.dns_config.options)
    conf.options = [name if value in (None, "") else f"{name}:{value}"
                    for name, value in options.items()]
    if len(conf.nameservers) > MAX_NAMESERVERS:
        conf.nameservers = conf.nameservers[:MAX_NAMESERVERS]
        conf.warnings.append("Nameserver limits were exceeded, some nameservers have been "
                             f"omitted, the applied nameserver line is: "
                             f"{' '.join(conf.nameservers)}")
    conf.searches, cut = _fit_searches(conf.searches)
    if cut:
        conf.warnings.append("Search Line limits were exceeded, some search paths have been "
                             f"omitted, the applied search line is: {' '.join(conf.searches)}")
    return conf


def _fit_searches(searches: list[str]) -> tuple[list[str], bool]:
    """kubelet's ``formDNSSearchFitsLimits``: (the search list kept, whether any was cut)."""
    cut = len(searches) > MAX_SEARCH_PATHS
    kept = [s for s in searches[:MAX_SEARCH_PATHS] if len(s) <= MAX_SEARCH_LENGTH]
    cut = cut or len(kept) < min(len(searches), MAX_SEARCH_PATHS)
    line = len(" ".join(kept))
    while kept and line > MAX_SEARCH_CHARS:
        line -= len(kept.pop()) + 1
        cut = True
    return kept, cut


class Search:
    """glibc's ``res_nsearch`` walk over the candidates of one name (module docstring).

    ``for qname in search: ... search.result(rcode, answered)``: each candidate is asked
    until ``result`` says an answer ended it or the candidates run out.
    """

    def __init__(self, name: str, conf: ResolvConf) -> None:
        self.name = name
        trailing = name.endswith(".")
        dots = name.count(".")
        self.absolute = name if trailing else name + "."
        self.as_is_first = trailing or dots >= conf.ndots
        domains = [] if trailing else [d.strip(".") for d in conf.searches]
        self.domains = [f"{name}.{d}." if d else self.absolute for d in domains]
        self.root_on_list = any(not d.strip(".") for d in domains)
        self.plan = ([self.absolute] if self.as_is_first else []) + self.domains + (
            [] if self.as_is_first or self.root_on_list else [self.absolute])
        self._stop_domains = False
        self._in_domains = False
        self.done = False

    def __iter__(self) -> Iterator[str]:
        if self.as_is_first:
            yield self.absolute
            if self.done:
                return
        self._in_domains = True
        for qname in self.domains:
            if self._stop_domains:
                break
            yield qname
            if self.done:
                return
        self._in_domains = False
        if not (self.as_is_first or self.root_on_list):
            yield self.absolute

    def result(self, rcode: int | None, answered: bool) -> None:
        """What the last candidate got: ``rcode`` (None: no reply), whether it had records."""
        if rcode == NOERROR and answered:
            self.done = True
        elif self._in_domains and rcode not in (NXDOMAIN, NOERROR, SERVFAIL):
            self._stop_domains = True  # REFUSED, FORMERR, no reply...: the list ends
