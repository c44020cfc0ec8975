"""Names a user types for ``kemu trace -S/-D`` and the API's ``src=``: what they mean.

Pure functions over the control-plane model (``kemu.control.cluster.Cluster``); nothing here
touches the data plane. The forms, tried in this order:

- an IPv4 address (``10.96.0.10``), an external host (``ext/db`` or ``db``), a node
  (``node/node1`` or ``node1``);
- ``[NAMESPACE/]KIND/NAME`` (namespace ``default`` when left out), KIND as kubectl spells it:
  ``deploy``/``deployment``, ``rs``/``replicaset``, ``sts``/``statefulset``, ``ds``/``daemonset``,
  ``rc``/``replicationcontroller``, ``job``, ``po``/``pod``, ``svc``/``service`` (plurals too,
  case-insensitive). A known KIND in the first place wins over a namespace of that name. A
  workload names its pods: a Deployment's are those of its ReplicaSets (owner
  ``ReplicaSet <deployment>-<pod-template-hash>`` with that ``pod-template-hash`` label, the
  Deployment controller's naming), the others' those whose controller owner reference names
  it. One is chosen deterministically: the first by name among the ready, not terminating
  ones (else the first by name, said so), and ``Target.note`` says which;
- ``NAMESPACE/NAME``: as a destination a Service before a pod (kube-proxy's ClusterIP), as a
  source a pod before a Service;
- a DNS name (``productcatalogservice``, ``svc.ns``, ``svc.ns.svc``,
  ``svc.ns.svc.cluster.local``, ``redis-0.redis.shop``, ``10-244-1-3.shop.pod.cluster.local``),
  looked up in the cluster zone (``kemu.control.dns.lookup``: D-2, D-4..D-7) as a pod's resolver
  would (D-10, kubelet's ClusterFirst ``resolv.conf``): ``search <ns>.svc.<zone> svc.<zone>
  <zone>`` with ``ndots:5`` (fewer than 5 dots: every search suffix first, then the name as
  given; a trailing dot: only as given). ``<ns>`` is the source pod's namespace for ``-D``
  and ``default`` otherwise (a source has no resolver yet). A bare name that no Service
  answers is then a pod of ``default`` (kubectl's default namespace), as before. Names
  outside the zone are not resolved: kemu emulates no upstream DNS. kemu models less than
  kubelet here: every source pod searches as a ``ClusterFirst`` pod of its namespace, also a
  ``hostNetwork`` one (which, without ``dnsPolicy: ClusterFirstWithHostNet``, would use its
  node's resolver) and whatever its ``dnsConfig`` says.

Any of them may end in ``:PORT`` (a number) or ``:PORTNAME``. For a Service that picks the
Service port (by number, the first with it, of ``-p``'s protocol when given; by name, S-13)
and so the protocol; for a pod the container port of that name; for other targets only a
number. Sources take no port.

Unknown names raise ``TopologyError`` ("unknown destination 'shop/backnd': did you mean
'shop/backend'?"), with up to three of the nearest valid names (``difflib``).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kemu.control import dns
from kemu.control.model import Pod, Service, ServicePort
from kemu.errors import TopologyError

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster

Role = Literal["source", "destination"]
TargetKind = Literal["pod", "service", "external", "node", "ip"]

KINDS: dict[str, str] = {}
"""kubectl's names of a kind (lowercase) -> the kind."""
for _kind, _names in (
        ("Deployment", ("deploy", "deployment", "deployments")),
        ("ReplicaSet", ("rs", "replicaset", "replicasets")),
        ("StatefulSet", ("sts", "statefulset", "statefulsets")),
        ("DaemonSet", ("ds", "daemonset", "daemonsets")),
        ("ReplicationController", ("rc", "replicationcontroller", "replicationcontrollers")),
        ("Job", ("job", "jobs")),
        ("Pod", ("po", "pod", "pods")),
        ("Service", ("svc", "service", "services"))):
    for _n in _names:
        KINDS[_n] = _kind
SHORT = {"Deployment": "deploy", "ReplicaSet": "rs", "StatefulSet": "sts", "DaemonSet": "ds",
         "ReplicationController": "rc", "Job": "job", "Pod": "pod", "Service": "svc"}
WORKLOADS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "ReplicationController",
             "Job")

NDOTS = 5  # kubelet's resolv.conf (D-10)
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


@dataclass(frozen=True)
class Target:
    """What a typed name resolved to.

    ``name`` is the pod or Service key (``ns/name``), the external host's or node's name, or
    the address for ``ip``. ``port``/``protocol`` are set when the name chose a port (the
    protocol only when that port says it: a Service port or a named container port). ``note``
    says how the name was read when it took a choice or a translation (a workload's pod, a
    DNS name, a port), ``""`` when it was typed plainly.
    """

    typed: str
    kind: TargetKind
    name: str
    ip: ipaddress.IPv4Address | None
    port: int | None = None
    protocol: str | None = None
    note: str = ""


def resolve_source(cluster: Cluster, spec: str) -> Target:
    """A source (``-S``, ``src=``): a pod (a workload's, a Service's: chosen), an external host,
    a node or an address. See the module docstring."""
    base, port = split_port(spec)
    if port is not None:
        raise TopologyError(f"source {spec!r}: a source takes no port (-p sport= sets one)")
    return _resolve(cluster, spec, base, None, "source", None, None)


def resolve_destination(cluster: Cluster, spec: str, client: Pod | None = None,
                        protocol: str | None = None) -> Target:
    """A destination (``-D``): ``client`` is the source pod (its namespace is the resolver's,
    D-10), ``protocol`` the one ``-p`` gave (``TCP``/``UDP``) or None."""
    base, port = split_port(spec)
    return _resolve(cluster, spec, base, port, "destination", client, protocol)


def split_port(spec: str) -> tuple[str, int | str | None]:
    """``name:port`` -> (name, port number or port name); (spec, None) without a port."""
    base, colon, tail = spec.rpartition(":")
    if not colon or not base:
        return spec, None
    if tail.isdigit():
        number = int(tail)
        if not 1 <= number <= 65535:
            raise TopologyError(f"{spec!r}: port {tail} is not 1..65535")
        return base, number
    if _PORT_NAME.fullmatch(tail.lower()) and any(c.isalpha() for c in tail):
        return base, tail.lower()
    return spec, None


# --- the forms ----------------------------------------------------------------------------


def _resolve(cluster: Cluster, spec: str, base: str, port: int | str | None, role: Role,
             client: Pod | None, protocol: str | None) -> Target:
    try:
        ip = ipaddress.IPv4Address(base)
    except ValueError:
        pass
    else:
        return _numbered(Target(spec, "ip", str(ip), ip), port, "an address")
    if base.startswith("ext/") or base.startswith("node/"):
        found = _host(cluster, spec, base, port)
        if found is None:
            raise _unknown(cluster, spec, role)
        return found
    parts = base.split("/")
    if len(parts) == 3 or (len(parts) == 2 and parts[0].lower() in KINDS):
        ns, alias, name = parts if len(parts) == 3 else ("default", *parts)
        kind = KINDS.get(alias.lower())
        if kind is None:
            raise TopologyError(f"unknown {role} {spec!r}: {alias!r} is not a kind "
                                f"([NAMESPACE/]KIND/NAME, KIND one of "
                                f"{', '.join(sorted(set(SHORT.values())))})"
                                + _did_you_mean(alias.lower(), KINDS, ""))
        return _by_kind(cluster, spec, ns, kind, alias, name, port, role, protocol)
    if len(parts) == 2:
        ns, name = parts
        svc = _service(cluster, f"{ns}/{name}")
        pod = _pod(cluster, f"{ns}/{name}")
        if role == "source" and pod is not None:
            return _pod_target(spec, pod, port, "", protocol)
        if svc is not None:
            return _service_target(cluster, spec, svc, port, role, protocol, "")
        if pod is not None:
            return _pod_target(spec, pod, port, "", protocol)
        raise _unknown(cluster, spec, role)
    if len(parts) == 1 and base:
        # a bare name: as a source a pod of ``default`` first (kubectl), as a destination a
        # Service by DNS first (a pod's resolver); external hosts and nodes after both
        pod = _pod(cluster, f"default/{base}")
        if role == "source" and pod is not None:
            return _pod_target(spec, pod, port, "", protocol)
        found = _by_dns(cluster, spec, base, port, role, client, protocol)
        if found is None and pod is not None:
            found = _pod_target(spec, pod, port, "", protocol)
        if found is None:
            found = _host(cluster, spec, base, port)
        if found is not None:
            return found
    raise _unknown(cluster, spec, role)


def _host(cluster: Cluster, spec: str, base: str, port: int | str | None) -> Target | None:
    """An external host (``ext/NAME`` or ``NAME``) or a node (``node/NAME`` or ``NAME``)."""
    for ext in cluster.config.external_hosts:
        if base in (ext.name, f"ext/{ext.name}"):
            return _numbered(Target(spec, "external", ext.name, ext.ip), port,
                             f"external host {ext.name}")
    for node in cluster.nodes:
        if base in (node.name, f"node/{node.name}"):
            return _numbered(Target(spec, "node", node.name, node.internal_ip), port,
                             f"node {node.name}")
    return None


def _pod(cluster: Cluster, key: str) -> Pod | None:
    ns, _, name = key.partition("/")
    try:
        return cluster.pod(ns, name)
    except KeyError:
        return None


def _service(cluster: Cluster, key: str) -> Service | None:
    ns, _, name = key.partition("/")
    try:
        return cluster.service(ns, name)
    except KeyError:
        return None


def _numbered(t: Target, port: int | str | None, what: str) -> Target:
    if isinstance(port, str):
        raise TopologyError(f"{t.typed!r}: {what} has no named ports: give a number")
    if port is None:
        return t
    return Target(t.typed, t.kind, t.name, t.ip, port, None, f"port {port}")


def _by_kind(cluster: Cluster, spec: str, ns: str, kind: str, alias: str, name: str,
             port: int | str | None, role: Role, protocol: str | None) -> Target:
    if kind == "Pod":
        pod = _pod(cluster, f"{ns}/{name}")
        if pod is None:
            raise _unknown(cluster, spec, role)
        return _pod_target(spec, pod, port, "", protocol)
    if kind == "Service":
        svc = _service(cluster, f"{ns}/{name}")
        if svc is None:
            raise _unknown(cluster, spec, role)
        return _service_target(cluster, spec, svc, port, role, protocol, "")
    pods = workload_pods(cluster, ns, kind, name)
    if not pods:
        raise _unknown(cluster, spec, role)
    pod, why = choose(pods)
    return _pod_target(spec, pod, port, f"{kind} {ns}/{name}: {why}", protocol)


def workload_pods(cluster: Cluster, namespace: str, kind: str, name: str) -> list[Pod]:
    """The pods of workload ``kind`` ``namespace/name`` (see the module docstring): a
    Deployment's ReplicaSet names its pods too."""
    return [p for p in cluster.pods if p.namespace == namespace and p.owner is not None
            and ((p.owner.kind, p.owner.name) == (kind, name) or owner(p) == (kind, name))]


def owner(pod: Pod) -> tuple[str, str] | None:
    """(kind, name) of the workload a pod belongs to: a Deployment for the pods of its
    ReplicaSets (named ``<deployment>-<pod-template-hash>``), else its controller owner."""
    if pod.owner is None:
        return None
    h = pod.labels.get("pod-template-hash", "")
    if pod.owner.kind == "ReplicaSet" and h and pod.owner.name.endswith(f"-{h}"):
        return "Deployment", pod.owner.name[:-len(h) - 1]
    return pod.owner.kind, pod.owner.name


def choose(pods: list[Pod]) -> tuple[Pod, str]:
    """The pod a name stands for: the first by name among the ready, not terminating ones
    (else the first by name); and words saying so."""
    ready = sorted((p for p in pods if p.ready and not p.terminating), key=lambda p: p.name)
    if ready:
        return ready[0], (f"pod {ready[0].key}, the first by name of {len(ready)} ready "
                          f"pod{'s' if len(ready) > 1 else ''}")
    first = min(pods, key=lambda p: p.name)
    return first, (f"pod {first.key}, the first by name of {len(pods)} "
                   f"pod{'s' if len(pods) > 1 else ''} (none is ready)")


def _pod_target(spec: str, pod: Pod, port: int | str | None, note: str,
                protocol: str | None = None) -> Target:
    proto = None
    if isinstance(port, str):
        found = [p for p in pod.container_ports() if p.name == port]
        if not found:
            names = sorted({p.name for p in pod.container_ports() if p.name})
            raise TopologyError(f"{spec!r}: pod {pod.key} declares no port {port!r}"
                                + _did_you_mean(port, names, "") + _listing(names))
        if protocol is not None and found[0].protocol != protocol:
            raise TopologyError(f"{spec!r}: port {port} of pod {pod.key} is "
                                f"{found[0].protocol}, not {protocol} (-p)")
        note = _join(note, f"port {port} = {found[0].port}/{found[0].protocol}")
        port, proto = found[0].port, found[0].protocol
    elif port is not None:
        note = _join(note, f"port {port}")
    return Target(spec, "pod", pod.key, pod.ip, port, proto, note)


def _service_target(cluster: Cluster, spec: str, svc: Service, port: int | str | None,
                    role: Role, protocol: str | None, note: str) -> Target:
    if role == "source":  # kubectl exec svc/NAME: one of the pods behind it
        keys = {e.pod for s in cluster.endpoint_slices(svc) for e in s.endpoints if e.pod}
        pods = [p for k in sorted(keys) if (p := _pod(cluster, k)) is not None]
        if not pods:
            raise TopologyError(f"source {spec!r}: Service {svc.key} has no pods behind it "
                                "(no endpoint names a pod)")
        pod, why = choose(pods)
        return _pod_target(spec, pod, None, _join(note, f"Service {svc.key}: {why}"))
    if svc.type == "ExternalName":
        raise TopologyError(f"destination {spec!r}: Service {svc.key} is an ExternalName "
                            f"(CNAME {svc.external_name}): a name outside the cluster, which "
                            "kemu does not resolve (no upstream DNS)")
    sp = service_port(svc, port, protocol, spec)
    if svc.cluster_ip is not None:
        if sp is None:
            return Target(spec, "service", svc.key, svc.cluster_ip, note=note)
        return Target(spec, "service", svc.key, svc.cluster_ip, sp.port, sp.protocol,
                      _join(note, f"Service {svc.key} port {_port_words(sp)}"))
    # headless: the A records are the ready endpoints (D-4): the first by pod name
    if sp is not None:  # the endpoints with that port, and its number on each (S-13)
        found = cluster.backends(svc, sp)
    else:  # a headless Service may have no ports: its A records are its endpoints all the same
        found = [(e, None) for s in cluster.endpoint_slices(svc) for e in s.endpoints]
    ready = [(e, n) for e, n in found if e.ready or svc.publish_not_ready_addresses]
    if not ready:
        raise TopologyError(f"destination {spec!r}: headless Service {svc.key} has no ready "
                            "endpoint (its name does not resolve, D-4)")
    ready.sort(key=lambda en: (en[0].pod or "~", int(en[0].ip)))
    e, number = ready[0]
    pod = _pod(cluster, e.pod) if e.pod else None
    words = f"pod {pod.key}" if pod is not None else f"endpoint {e.ip}"
    why = _join(note, f"headless Service {svc.key}: {words}, the first by name of "
                      f"{len(ready)} ready endpoint{'s' if len(ready) > 1 else ''}")
    if sp is not None:
        why = _join(why, f"port {_port_words(sp)} -> {number}")
        return Target(spec, "pod" if pod else "ip", pod.key if pod else str(e.ip), e.ip,
                      number, sp.protocol, why)
    return Target(spec, "pod" if pod else "ip", pod.key if pod else str(e.ip), e.ip, note=why)


def service_port(svc: Service, port: int | str | None, protocol: str | None,
                 spec: str) -> ServicePort | None:
    """The Service port a typed ``:port`` names (None when none was typed)."""
    if port is None:
        return None
    if isinstance(port, str):
        for sp in svc.ports:
            if sp.name == port:
                if protocol is not None and sp.protocol != protocol:
                    raise TopologyError(f"{spec!r}: port {port} of Service {svc.key} is "
                                        f"{sp.protocol}, not {protocol} (-p)")
                return sp
        names = [sp.name for sp in svc.ports if sp.name]
        raise TopologyError(f"{spec!r}: Service {svc.key} has no port {port!r}"
                            + _did_you_mean(port, names, "")
                            + _listing([_port_words(sp) for sp in svc.ports]))
    found = [sp for sp in svc.ports if sp.port == port
             and (protocol is None or sp.protocol == protocol)]
    if not found:
        raise TopologyError(f"{spec!r}: Service {svc.key} has no port {port}"
                            + (f"/{protocol}" if protocol else "")
                            + _listing([_port_words(sp) for sp in svc.ports]))
    return found[0]


def _port_words(sp: ServicePort) -> str:
    return f"{sp.port}/{sp.protocol}" + (f" ({sp.name})" if sp.name else "")


# --- DNS names ----------------------------------------------------------------------------


def search_list(cluster: Cluster, namespace: str) -> list[str]:
    """kubelet's search domains for a pod of ``namespace`` (D-10)."""
    zone = dns.zone_of(cluster)
    return [f"{namespace}.svc.{zone}", f"svc.{zone}", zone]


def candidates(cluster: Cluster, name: str, namespace: str) -> list[str]:
    """The absolute names a resolver tries for ``name``, in order (D-10: ndots 5)."""
    if name.endswith("."):
        return [name.lower()]
    name = name.lower()
    searched = [f"{name}.{d}." for d in search_list(cluster, namespace)]
    return [f"{name}.", *searched] if name.count(".") >= NDOTS else [*searched, f"{name}."]


def _by_dns(cluster: Cluster, spec: str, name: str, port: int | str | None, role: Role,
            client: Pod | None, protocol: str | None) -> Target | None:
    namespace = client.namespace if role == "destination" and client is not None else "default"
    zone = dns.zone_of(cluster)
    for fqdn in candidates(cluster, name, namespace):
        m = re.fullmatch(rf"([^.]+)\.([^.]+)\.svc\.{re.escape(zone)}\.", fqdn)
        svc = _service(cluster, f"{m.group(2)}/{m.group(1)}") if m else None
        if svc is not None:
            how = "" if fqdn == f"{name.lower().rstrip('.')}." else f"{name} = "
            return _service_target(cluster, spec, svc, port, role, protocol,
                                   f"DNS {how}{fqdn.rstrip('.')}")
        rcode, answers = dns.lookup(cluster, fqdn, "A")
        addresses = sorted((ipaddress.IPv4Address(r.value) for r in answers if r.type == "A"),
                           key=int)
        if rcode == dns.NOERROR and addresses:
            ip = addresses[0]
            note = f"DNS {fqdn.rstrip('.')} A {ip}"
            pod = cluster.pod_by_ip(ip)
            if pod is not None:
                return _pod_target(spec, pod, port, note, protocol)
            return _numbered(Target(spec, "ip", str(ip), ip, note=note), port, str(ip))
    return None


# --- errors -------------------------------------------------------------------------------


def known_names(cluster: Cluster, typed: str = "") -> dict[str, str]:
    """Every name of this cluster a user could type -> what it names (``pod ns/name``, ...),
    in the shapes of the module docstring: DNS names in the shape ``typed`` has, workloads
    with its spelling of the kind."""
    out: dict[str, str] = {}
    for e in cluster.config.external_hosts:
        out[f"ext/{e.name}"] = f"external {e.name}"
    for n in cluster.nodes:
        out[n.name] = f"node {n.name}"
    for p in cluster.pods:
        out[p.key] = f"pod {p.key}"
        if p.namespace == "default":
            out.setdefault(p.name, f"pod {p.key}")
    for s in cluster.services:
        out[s.key] = f"service {s.key}"
    parts = typed.split("/")
    alias = parts[-2].lower() if len(parts) in (2, 3) else ""
    # a Deployment, not the ReplicaSets it made (``rs/NAME-HASH`` resolves all the same)
    workloads = sorted({(p.namespace, *w) for p in cluster.pods if (w := owner(p))})
    for ns, kind, name in workloads:
        if kind in WORKLOADS:
            word = alias if KINDS.get(alias) == kind else SHORT[kind]
            out[f"{word}/{name}" if ns == "default" else f"{ns}/{word}/{name}"] = \
                f"{kind} {ns}/{name}"
    zone = dns.zone_of(cluster)
    dots = typed.count(".")
    for s in cluster.services:
        if typed.rstrip(".").endswith(zone):
            out[f"{s.name}.{s.namespace}.svc.{zone}"] = f"service {s.key}"
        elif dots == 2:
            out[f"{s.name}.{s.namespace}.svc"] = f"service {s.key}"
        elif dots == 1:
            out[f"{s.name}.{s.namespace}"] = f"service {s.key}"
        else:  # a bare name: other namespaces' Services as ``svc.ns``
            out.setdefault(s.name if s.namespace == "default" else f"{s.name}.{s.namespace}",
                           f"service {s.key}")
    return out


def _unknown(cluster: Cluster, spec: str, role: Role) -> TopologyError:
    base, port = split_port(spec)
    hint = ("" if "/" in base or "." not in base else
            " (a DNS name is looked up in the cluster zone only: kemu emulates no upstream DNS)")
    more = _did_you_mean(base, known_names(cluster, base), "" if port is None else f":{port}")
    if not more:
        more = (": not a pod, workload, Service, external host, node or IPv4 address of this "
                "cluster")
    return TopologyError(f"unknown {role} {spec!r}{more}{hint}")


def _did_you_mean(typed: str, names: Iterable[str] | dict[str, str], suffix: str) -> str:
    """``: did you mean 'a', 'b' or 'c'?``: up to three names near ``typed`` (difflib), one
    per object when ``names`` maps each to what it names; ``""`` when none is near."""
    named = names if isinstance(names, dict) else {n: n for n in names}
    # near as a whole and near in the last part (``default/nothing`` is not near
    # ``default/sticky`` because both are in ``default``)
    tail = typed.rsplit("/", 1)[-1]
    close: list[str] = []
    seen: set[str] = set()
    for c in difflib.get_close_matches(typed, list(named), n=12, cutoff=0.6):
        if named[c] in seen or difflib.SequenceMatcher(
                None, tail, c.rsplit("/", 1)[-1]).ratio() < 0.6:
            continue
        seen.add(named[c])
        close.append(c)
    if not close:
        return ""
    quoted = [f"'{c}{suffix}'" for c in close[:3]]
    words = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f": did you mean {words}?"


def _listing(names: list[str]) -> str:
    return f" (it has {', '.join(names)})" if names else " (it has none)"


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b
