"""What ``kemu show`` lists, as objects for ``-o json|yaml`` and rows for the tables.

Two families of resources, two shapes of output.

**Kubernetes kinds** (``pods``, ``services``, ``endpoints``, ``nodes``, ``networkpolicies``,
``namespaces``) print as ``kubectl get -o json|yaml`` does: a ``List``
``{"apiVersion": "v1", "items": [...], "kind": "List", "metadata": {"resourceVersion": ""}}``
whose items are what an API server would return (keys sorted, as kubectl prints them), built
from kemu's model, with what kemu allocated filled in: Pods (``v1``) with ``spec.nodeName``,
``status.podIP``/``podIPs``, ``hostIP``/``hostIPs``, ``phase: Running``, the ``Ready``
condition, ``ownerReferences`` and kemu's ``kemu.dev/mac`` annotation (the MAC kemu gave the
pod's eth0; loading the output back pins it), ``metadata.deletionTimestamp`` set to the epoch
for terminating pods (kemu keeps no clock of object time); Services (``v1``) with
``clusterIP``/``clusterIPs``, ``nodePort``, ``targetPort`` (a number or a port name, as given),
the defaults the API server fills in (``sessionAffinity``, ``internalTrafficPolicy``,
``externalTrafficPolicy`` for NodePort and LoadBalancer, ``ipFamilies``) and
``status.loadBalancer``; ``endpoints`` lists EndpointSlices (``discovery.k8s.io/v1``, the
derived ones with the labels and owner the EndpointSlice controller sets); Nodes (``v1``) with
``podCIDR(s)`` and the InternalIP/Hostname addresses; NetworkPolicies
(``networking.k8s.io/v1``) as parsed, ``policyTypes`` defaulted; Namespaces (``v1``, Active).
No ``uid``, ``resourceVersion`` or timestamps: kemu has none. ``-o name`` prints
``pod/NAME``, ``service/NAME``, ``endpointslice.discovery.k8s.io/NAME``, ``node/NAME``,
``networkpolicy.networking.k8s.io/NAME``, ``namespace/NAME``, one per line.

**kemu's own views** (``routes``, ``dns``, ``interfaces``, ``conntrack``, ``fdb``,
``neighbours``) print in this schema, version ``kemu.dev/v1alpha1``::

    {"apiVersion": "kemu.dev/v1alpha1", "kind": "<Kind>List", "metadata": {...}, "items": [...]}

``metadata`` is ``{}`` except for the three state views, where it is ``{"after": [str],
"clockNs": int}``: what ran before the state was read (``"replay <capture>"``,
``"trace <src> -> <dst>"``; empty for a freshly loaded cluster) and the emulated clock then
(nanoseconds; a capture's own timestamps after a replay). Items, field: type (meaning):

- ``RouteList`` (one per route of each node and of the gateway, as ``ip route`` lists them;
  the gateway's ``default dev eth0`` is its way out of the cluster): ``node``: str (a node's
  name or ``gateway``);
  ``prefix``: str (CIDR); ``dev``: str (``eth0``, ``cbr0``, ``flannel.1``; empty for a
  discarding route); ``via``: str | null (next hop); ``src``: str | null (preferred source);
  ``proto``: str (``kernel``, ``static``; ``boot`` for a route set by ``spec.routes`` or
  ``replace_route``, as iproute2 adds it); ``onlink``: bool; ``type``: str (``unicast``,
  or ``blackhole``, ``unreachable``, ``prohibit``).
- ``DnsRecordList`` (the cluster zone as CoreDNS serves it): ``name``: str (absolute,
  lowercase); ``type``: str (A, SRV, PTR, TXT, CNAME); ``ttl``: int (seconds); ``value``: str
  (zone-file presentation form).
- ``InterfaceList`` (every emulated device, in the order of the pcapng's interfaces; the nodes'
  pseudo-devices for their own processes, never captured, are left out): ``name``: str (as in
  the pcapng: ``node1/eth0``, ``node1/cbr0``, ``node1/veth-<pod>``, ``node1/flannel.1``,
  ``<ns>/<pod>/eth0``, ``<ns>/<pod>/lo``, ``ext/<host>/eth0``, ``gateway/eth0``; the routed
  CNIs' host veths ``node1/eni<hash>`` (AWS VPC CNI), ``node1/azv<hash>`` (Azure CNI), no
  ``cbr0``); ``kind``: str (``node-eth``, ``bridge``, ``veth``, ``vtep``, ``pod-eth``,
  ``pod-lo``, ``external``, ``gateway``, ``veth-host``: a routed veth, an L3 device of the
  node); ``kernelName``: str (the name a Linux node would give it, <= 15 characters);
  ``node``: str | null (the node it is on; null for external hosts and the gateway); ``mac``:
  str; ``ip``: str | null; ``mtu``: int (the device's MTU, as the datapath enforces it: the
  kemu Cluster document's ``spec.mtu``, default 1500, for node uplinks, external hosts and
  the gateway; in VXLAN mode that minus 50 for ``flannel.1`` and, as flannel's CNI plugin
  hands ``FLANNEL_MTU`` to the bridge plugin, for ``cbr0``, the veths and the pods'
  ``eth0``; host-gw: every device the same; 65536 for ``lo``); ``owner``: {``kind``:
  ``Node`` | ``Pod`` | ``ExternalHost`` | ``Gateway``, ``name``: str (``ns/pod`` for pods)}
  (a veth is its pod's);
  ``peer``: str | null (the other end of a veth pair); ``bridge``: str | null (the bridge or
  segment it is a port of: ``node1/cbr0``, ``node-network``); ``hairpin``: bool;
  ``proxyArp``: bool (``net.ipv4.conf.<dev>.proxy_arp``: the node answers ARP on it for
  addresses it routes out of another device; the routed CNIs); ``description``: str (the
  pcapng's interface description). kube-router (``spec.cni: kube-router``): the pod
  bridge is ``kube-bridge``; ``node1/kube-dummy-if`` (kind ``dummy``) has no ``ip`` but
  ``addresses``: [str] (the Service addresses IPVS serves, held on it); ``node1/tun-<hash>``
  (kind ``ipip``, with overlayType full) has the node's address as its ``ip`` (its
  ``link/ipip`` local end) and the peer node's tunnel towards it as ``peer``.
- ``ListenerList`` (what each pod's emulated stack answers, ``kemu.control.listen``; hostNetwork
  pods are left out: the node's stack answers for them): ``namespace``: str; ``name``: str;
  ``ip``: str; ``all``: bool (every port listens); ``ports``: [{``port``: int, ``protocol``:
  ``TCP`` | ``UDP`` | ``SCTP``}] (sorted by port); ``text``: str (the table's LISTENING column).
- ``ConntrackList`` (each connection once, by its original direction): ``node``: str;
  ``protocol``: str (TCP, UDP, ICMP); ``original`` and ``reply``: {``src``: str, ``sport``: int,
  ``dst``: str, ``dport``: int} (ICMP: the echo id as ``sport``, 0 as ``dport``); ``state``:
  str (``SYN_SENT``, ``SYN_RECV``, ``ESTABLISHED``, ``FIN``, ``CLOSE``; ``UDP`` and ``ICMP`` for
  those protocols); ``timeoutSeconds``: int (left before it expires, as ``conntrack -L``
  prints it; 0: expired, removed when next looked up); ``expiresNs``: int (on the emulated
  clock); ``nat``: [str] (``DNAT``, ``SNAT``); ``replied``: bool (a reply was seen: not
  ``[UNREPLIED]``); ``assured``: bool; ``service``: str | null (the Service port a DNAT chose,
  ``ns/svc:port-name``, ``ns/svc`` for an unnamed port); ``backend``: str | null
  (``ip:port``).
- ``FdbEntryList`` (the learned MACs of every bridge, and the bridge devices' own addresses):
  ``bridge``: str (``node1/cbr0``, or ``node-network``: the segment of nodes, external hosts and
  the gateway); ``mac``: str; ``port``: str (interface name); ``local``: bool (the bridge
  device's own address: frames to it go up to the node, it never ages); ``ageSeconds``: float |
  null (since last seen; entries older than 300 s are expired and forgotten when next looked
  up); ``seenNs``: int | null.
- ``NeighbourList`` (each node's ARP table): ``node``: str; ``ip``: str; ``mac``: str;
  ``state``: str (``PERMANENT``: seeded when the cluster loads, what a settled cluster's kernels
  know, never aged; ``REACHABLE``: learned from ARP while running); ``dev``: str (the node's
  device towards it: ``cbr0``, ``eth0``, ``flannel.1``); ``headerCached``: bool (a frame has
  gone out through it: the kernel's cached hardware header).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kemu.control.model import (
    DnsConfig,
    EndpointSlice,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    PolicyPeer,
    PolicyRule,
    Service,
)
from kemu.control.selectors import matches
from kemu.control.workloads import pod_annotations
from kemu.dataplane import codes as C
from kemu.dataplane.describe import backend_text, ip_str, mac_str
from kemu.dataplane.tables import Tables

if TYPE_CHECKING:
    from kemu.control.cluster import Cluster

KEMU_API = "kemu.dev/v1alpha1"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
TERMINATING_SINCE = "1970-01-01T00:00:00Z"  # kemu has no object clock (workloads.pod_to_dict)

# resource -> (kind for -o name, namespaced)
KINDS: dict[str, tuple[str, bool]] = {
    "pods": ("pod", True), "services": ("service", True),
    "endpoints": ("endpointslice.discovery.k8s.io", True),
    "networkpolicies": ("networkpolicy.networking.k8s.io", True),
    "nodes": ("node", False), "namespaces": ("namespace", False),
}
VIEW_KINDS = {"resolvconf": "ResolvConfList", "routes": "RouteList", "dns": "DnsRecordList",
              "interfaces": "InterfaceList",
              "listeners": "ListenerList",
              "conntrack": "ConntrackList", "fdb": "FdbEntryList",
              "neighbours": "NeighbourList"}


def kubectl_list(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "items": items, "kind": "List",
            "metadata": {"resourceVersion": ""}}


def kemu_list(view: str, items: list[dict[str, Any]],
              metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": KEMU_API, "kind": VIEW_KINDS[view], "metadata": metadata or {},
            "items": items}


# --- which objects: namespace and label selection -------------------------------------------

def endpoint_labels(svc: Service, managed: bool = True) -> dict[str, str]:
    """Labels of a Service's EndpointSlices: the controller copies the Service's labels and adds
    the service name and itself as manager (hand-made slices: the service name)."""
    labels = dict(svc.labels) if managed and svc.selector is not None else {}
    labels[SERVICE_NAME_LABEL] = svc.name
    if managed:
        labels[MANAGED_BY_LABEL] = SLICE_CONTROLLER
    return dict(sorted(labels.items()))


def objects(cluster: Cluster, resource: str) -> list[Any]:
    """Every object of a Kubernetes kind, in kemu's order (``endpoints``: the Services whose
    endpoints the table lists; ``slices`` gives the EndpointSlices)."""
    if resource == "pods":
        return list(cluster.pods)
    if resource == "services":
        return list(cluster.services)
    if resource == "endpoints":
        return [s for s in cluster.services if s.type != "ExternalName"]
    if resource == "networkpolicies":
        return list(cluster.policies)
    if resource == "nodes":
        return list(cluster.nodes)
    if resource == "namespaces":
        return [cluster.namespaces[n] for n in sorted(cluster.namespaces)]
    raise KeyError(resource)


def labels_of(cluster: Cluster, resource: str, obj: Any) -> Mapping[str, str]:
    if resource == "endpoints":
        if isinstance(obj, EndpointSlice):
            return endpoint_labels(cluster.service(obj.namespace, obj.service), obj.managed)
        return endpoint_labels(obj, obj.selector is not None)
    return obj.labels  # type: ignore[no-any-return]


def namespace_of(obj: Any) -> str | None:
    return getattr(obj, "namespace", None) if not isinstance(obj, Namespace) else None


@dataclass
class Selection:
    """The objects to show, and how many the namespace filter left out (for the hint)."""

    objects: list[Any]
    elsewhere: int = 0


def select(cluster: Cluster, resource: str, candidates: Iterable[Any], ns: str | None,
           selector: LabelSelector | None) -> Selection:
    """``candidates`` in namespace ``ns`` (None: every namespace) matching ``selector``."""
    out, elsewhere = [], 0
    for obj in candidates:
        if selector is not None and not matches(selector, labels_of(cluster, resource, obj)):
            continue
        obj_ns = namespace_of(obj)
        if ns is not None and obj_ns is not None and obj_ns != ns:
            elsewhere += 1
            continue
        out.append(obj)
    return Selection(out, elsewhere)


def slices(cluster: Cluster, services: Iterable[Service]) -> list[EndpointSlice]:
    return [s for svc in services for s in cluster.endpoint_slices(svc)]


def names(resource: str, objs: Iterable[Any]) -> list[str]:
    """``-o name``: ``kind/name`` per object (kubectl prints no namespace)."""
    kind = KINDS[resource][0]
    return [f"{kind}/{o.name}" for o in objs]


# --- Kubernetes kinds in kubectl's shape ------------------------------------------------------

def _meta(name: str, namespace: str | None = None, labels: Mapping[str, str] | None = None,
          **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(sorted(labels.items()))
    meta.update({k: v for k, v in extra.items() if v})
    return meta


OWNER_API = {"ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
             "Deployment": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}


def pod_item(cluster: Cluster, pod: Pod) -> dict[str, Any]:
    annotations = pod_annotations(pod)
    owners = [{"apiVersion": OWNER_API.get(pod.owner.kind, "v1"), "blockOwnerDeletion": True,
               "controller": True, "kind": pod.owner.kind, "name": pod.owner.name}
              ] if pod.owner else []
    meta = _meta(pod.name, pod.namespace, pod.labels, annotations=annotations,
                 ownerReferences=owners,
                 deletionTimestamp=TERMINATING_SINCE if pod.terminating else None)
    containers = []
    for c in pod.containers:
        item: dict[str, Any] = {"name": c.name}
        if c.ports:
            item["ports"] = [{"containerPort": p.port, "protocol": p.protocol,
                              **({"name": p.name} if p.name else {})} for p in c.ports]
        containers.append(item)
    spec: dict[str, Any] = {"containers": containers, "nodeName": pod.node_name}
    for key, value in (("hostNetwork", pod.host_network), ("hostname", pod.hostname),
                       ("subdomain", pod.subdomain)):
        if value:
            spec[key] = value
    if pod.dns_policy != "ClusterFirst":  # what loads back into the same resolv.conf
        spec["dnsPolicy"] = pod.dns_policy
    if pod.dns_config is not None:
        spec["dnsConfig"] = dns_config_dict(pod.dns_config)
    host_ip = str(cluster.node(pod.node_name).internal_ip)
    status = {"conditions": [{"status": "True" if pod.ready else "False", "type": "Ready"}],
              "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "phase": "Running",
              "podIP": str(pod.ip), "podIPs": [{"ip": str(pod.ip)}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": status}


def dns_config_dict(cfg: DnsConfig) -> dict[str, Any]:
    """A ``dnsConfig`` as the API server returns it (empty lists left out)."""
    out: dict[str, Any] = {}
    if cfg.nameservers:
        out["nameservers"] = list(cfg.nameservers)
    if cfg.searches:
        out["searches"] = list(cfg.searches)
    if cfg.options:
        out["options"] = [{"name": n, **({"value": v} if v is not None else {})}
                          for n, v in cfg.options]
    return out


def service_item(svc: Service) -> dict[str, Any]:
    ports = []
    for p in svc.ports:
        port: dict[str, Any] = {"port": p.port, "protocol": p.protocol}
        if p.name:
            port["name"] = p.name
        if svc.type != "ExternalName":
            port["targetPort"] = p.target_port or p.port
        if p.node_port:
            port["nodePort"] = p.node_port
        ports.append(port)
    spec: dict[str, Any] = {"type": svc.type, "sessionAffinity": svc.session_affinity}
    if ports:
        spec["ports"] = ports
    if svc.type == "ExternalName":
        spec["externalName"] = svc.external_name
    else:
        ip = str(svc.cluster_ip) if svc.cluster_ip is not None else "None"
        spec.update(clusterIP=ip, clusterIPs=[ip], ipFamilies=["IPv4"],
                    ipFamilyPolicy="SingleStack",
                    internalTrafficPolicy=svc.internal_traffic_policy)
        if svc.type in ("NodePort", "LoadBalancer"):
            spec["externalTrafficPolicy"] = svc.external_traffic_policy
    if svc.selector is not None:
        spec["selector"] = dict(sorted(svc.selector.items()))
    if svc.session_affinity == "ClientIP":
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.affinity_timeout}}
    if svc.external_ips:
        spec["externalIPs"] = [str(ip) for ip in svc.external_ips]
    if svc.load_balancer_source_ranges:
        spec["loadBalancerSourceRanges"] = [str(n) for n in svc.load_balancer_source_ranges]
    if svc.publish_not_ready_addresses:
        spec["publishNotReadyAddresses"] = True
    lb: dict[str, Any] = {}
    if svc.load_balancer_ips:  # E-5: kemu treats every ingress IP as a VIP
        lb["ingress"] = [{"ip": str(ip), "ipMode": "VIP"} for ip in svc.load_balancer_ips]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(svc.name, svc.namespace, svc.labels), "spec": spec,
            "status": {"loadBalancer": lb}}


def slice_item(cluster: Cluster, sl: EndpointSlice) -> dict[str, Any]:
    svc = cluster.service(sl.namespace, sl.service)
    owners = [{"apiVersion": "v1", "blockOwnerDeletion": True, "controller": True,
               "kind": "Service", "name": svc.name}] if svc.selector is not None else []
    endpoints = []
    for e in sl.endpoints:
        item: dict[str, Any] = {"addresses": [str(e.ip)], "conditions": {
            "ready": e.ready, "serving": e.serving, "terminating": e.terminating}}
        if e.node_name:
            item["nodeName"] = e.node_name
        if e.pod:
            ns, _, name = e.pod.partition("/")
            item["targetRef"] = {"kind": "Pod", "name": name, "namespace": ns}
        if e.hostname:
            item["hostname"] = e.hostname
        if e.zone:
            item["zone"] = e.zone
        endpoints.append(item)
    return {"addressType": "IPv4", "apiVersion": "discovery.k8s.io/v1", "endpoints": endpoints,
            "kind": "EndpointSlice",
            "metadata": _meta(sl.name, sl.namespace, endpoint_labels(svc, sl.managed),
                              ownerReferences=owners),
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol}
                      for p in sl.ports]}


def node_item(node: Node) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": _meta(node.name, None, node.labels),
            "spec": {"podCIDR": str(node.pod_cidr), "podCIDRs": [str(node.pod_cidr)]},
            "status": {"addresses": [{"address": str(node.internal_ip), "type": "InternalIP"},
                                     {"address": node.name, "type": "Hostname"}],
                       "conditions": [{"status": "True", "type": "Ready"}]}}


def selector_dict(sel: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sorted(sel.match_labels.items()))
    if sel.match_expressions:
        out["matchExpressions"] = [{"key": r.key, "operator": r.operator,
                                    **({"values": list(r.values)} if r.values else {})}
                                   for r in sel.match_expressions]
    return out


def _peer(peer: PolicyPeer) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if peer.pod_selector is not None:
        out["podSelector"] = selector_dict(peer.pod_selector)
    if peer.namespace_selector is not None:
        out["namespaceSelector"] = selector_dict(peer.namespace_selector)
    if peer.ip_block is not None:
        out["ipBlock"] = {"cidr": str(peer.ip_block.cidr)}
        if peer.ip_block.except_:
            out["ipBlock"]["except"] = [str(n) for n in peer.ip_block.except_]
    if peer.entity is not None:  # a CiliumNetworkPolicy entity (kemu.control.cilium)
        out["kemu.dev/entity"] = peer.entity
    return out


def _rule(rule: PolicyRule, peers_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.peers:
        out[peers_key] = [_peer(p) for p in rule.peers]
    if rule.ports:
        out["ports"] = [{"protocol": p.protocol, **({"port": p.port} if p.port is not None
                                                    else {}),
                         **({"endPort": p.end_port} if p.end_port is not None else {})}
                        for p in rule.ports]
    if rule.http is not None:  # a CiliumNetworkPolicy's L7 rules: its proxy judges requests
        out["kemu.dev/http"] = [{k: v for k, v in (
            ("method", h.method), ("path", h.path), ("host", h.host),
            ("headers", [f"{n}: {v}" if v is not None else n for n, v in h.headers]))
            if v} for h in rule.http]
    return out


def policy_item(pol: NetworkPolicy) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector_dict(pol.pod_selector),
                            "policyTypes": list(pol.policy_types)}
    if pol.ingress:
        spec["ingress"] = [_rule(r, "from") for r in pol.ingress]
    if pol.egress:
        spec["egress"] = [_rule(r, "to") for r in pol.egress]
    # a CiliumNetworkPolicy is shown as kemu enforces it: its NetworkPolicy form, annotated
    note = {"kemu.dev/translated-from": f"cilium.io/v2 {pol.kind}"} \
        if pol.kind != "NetworkPolicy" else None
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(pol.name, pol.namespace, pol.labels, annotations=note),
            "spec": spec}


def namespace_item(ns: Namespace) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns.name, None, ns.labels),
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def policy_pods(cluster: Cluster, pol: NetworkPolicy) -> list[Pod]:
    """The pods a NetworkPolicy's ``podSelector`` selects (its namespace, ``matches``)."""
    return [p for p in cluster.pods
            if p.namespace == pol.namespace and matches(pol.pod_selector, p.labels)]


def k8s_items(cluster: Cluster, resource: str, objs: Sequence[Any]) -> list[dict[str, Any]]:
    if resource == "pods":
        return [pod_item(cluster, p) for p in objs]
    if resource == "services":
        return [service_item(s) for s in objs]
    if resource == "endpoints":
        return [slice_item(cluster, s) for s in objs]
    if resource == "nodes":
        return [node_item(n) for n in objs]
    if resource == "networkpolicies":
        return [policy_item(p) for p in objs]
    return [namespace_item(n) for n in objs]


# --- kemu's views: interfaces ---------------------------------------------------------------

OWNER_KINDS = {C.IF_POD_ETH: "Pod", C.IF_POD_LO: "Pod", C.IF_VETH: "Pod", C.IF_VETH_HOST: "Pod",
               C.IF_EXT_ETH: "ExternalHost", C.IF_GW_ETH: "Gateway"}


def interface_items(cluster: Cluster, t: Tables, ns: str | None = None
                    ) -> list[dict[str, Any]]:
    """Every device (module docstring); with ``ns``, only those of that namespace's pods."""
    from kemu.compiler.kube_router import service_addresses

    out = []
    dummy_addrs = service_addresses(cluster) if C.IF_DUMMY in t.if_kind else []
    for i in range(t.n_ifaces):
        kind = int(t.if_kind[i])
        if kind == C.IF_NODE_LOCAL:
            continue
        node = int(t.if_node[i])
        owner_kind = OWNER_KINDS.get(kind, "Node")
        owner_ix = int(t.if_owner[i])
        if owner_kind == "Pod":
            owner = t.pod_key[owner_ix]
        elif owner_kind == "ExternalHost":
            owner = t.ext_name[owner_ix]
        elif owner_kind == "Gateway":
            owner = "gateway"
        else:
            owner = t.node_name[node]
        if ns is not None and (owner_kind != "Pod" or not owner.startswith(f"{ns}/")):
            continue
        peer, bridge = int(t.if_peer[i]), int(t.if_bridge[i])
        out.append({
            "name": t.if_name[i], "kind": C.IF_KIND_NAMES[kind],
            "kernelName": t.if_kernel_name[i],
            "node": t.node_name[node] if node >= 0 else None,
            "mac": mac_str(t.if_mac[i]),
            "ip": ip_str(t.if_ip[i]) if int(t.if_ip[i]) else None,
            "mtu": int(t.if_mtu[i]),
            "owner": {"kind": owner_kind, "name": owner},
            "peer": t.if_name[peer] if peer >= 0 and peer != i else None,
            "bridge": t.br_name[bridge] if bridge >= 0 else None,
            "hairpin": bool(int(t.if_hairpin[i])),
            "proxyArp": bool(len(t.if_proxy_arp) and int(t.if_proxy_arp[i])),
            "description": t.if_desc[i],
        })
        if kind == C.IF_DUMMY:  # kube-router's kube-dummy-if: every Service address, /32
            out[-1]["addresses"] = dummy_addrs
    return out


def listener_items(cluster: Cluster, ns: str | None = None) -> list[dict[str, Any]]:
    """What each pod's emulated stack answers (``kemu.control.listen``; module docstring);
    with ``ns``, only that namespace's pods. hostNetwork pods have no stack of their own."""
    from kemu.control.listen import listening_map

    lm = listening_map(cluster)
    return [{"namespace": p.namespace, "name": p.name, "ip": str(p.ip),
             "all": lm[p.key].all,
             "ports": [{"port": port, "protocol": proto}
                       for proto, port in sorted(lm[p.key].ports, key=lambda k: (k[1], k[0]))],
             "text": lm[p.key].text()}
            for p in cluster.pods if (ns is None or p.namespace == ns) and not p.host_network]


def listener_rows(items: Sequence[Mapping[str, Any]], wide: bool
                  ) -> tuple[list[str], list[list[str]]]:
    return (["NAMESPACE", "NAME", "IP", "LISTENING"],
            [[it["namespace"], it["name"], it["ip"], it["text"]] for it in items])


def owner_word(owner: Mapping[str, str]) -> str:
    """``pod shop/web-1``, ``node node1``, ``external host db``, ``gateway`` (describe's words)."""
    kind, name = owner["kind"], owner["name"]
    return {"Pod": f"pod {name}", "Node": f"node {name}", "ExternalHost": f"external host {name}",
            "Gateway": "gateway"}[kind]


def _addresses_cell(addrs: Sequence[str]) -> str:
    """kube-dummy-if's Service addresses in the table: up to three, then how many more."""
    more = f",+{len(addrs) - 3} more" if len(addrs) > 3 else ""
    return ",".join(addrs[:3]) + more


def interface_rows(items: Sequence[Mapping[str, Any]], wide: bool
                   ) -> tuple[list[str], list[list[str]]]:
    headers = ["NAME", "KIND", "MAC", "IP", "MTU", "OWNER"]
    if wide:
        headers += ["KERNEL-NAME", "PEER", "BRIDGE", "PROXY-ARP"]
    rows = []
    for it in items:
        ip = it["ip"] or _addresses_cell(it.get("addresses") or []) or "<none>"
        row = [it["name"], it["kind"], it["mac"], ip, str(it["mtu"]),
               owner_word(it["owner"])]
        if wide:
            row += [it["kernelName"], it["peer"] or "<none>", it["bridge"] or "<none>",
                    "on" if it["proxyArp"] else "off"]
        rows.append(row)
    return headers, rows


# --- kemu's views: the datapath's state -------------------------------------------------------

@dataclass
class DatapathState:
    """The datapath's mutable state at one moment, with what is needed to put it in words."""

    tables: Tables
    state: dict[str, list[tuple]]
    clock_ns: int
    after: list[str] = field(default_factory=list)
    seeded: frozenset[tuple[int, int, int]] = frozenset()  # (node, ip, mac) set at load

    @property
    def metadata(self) -> dict[str, Any]:
        return {"after": list(self.after), "clockNs": int(self.clock_ns)}


def state_of(emu: Any, after: Sequence[str] = ()) -> DatapathState:
    """The state of an ``EmulatedCluster``'s datapath now (``after``: what ran before)."""
    eng = emu.engine
    t = emu.tables
    seeded: frozenset[tuple[int, int, int]] = frozenset()
    if eng.static_neighbours:  # what a fresh datapath of these tables seeds
        fresh = eng.impl.Datapath(t, eng.seed, True).state()["neigh"]
        seeded = frozenset((int(n), int(ip), int(mac)) for n, ip, mac, _hh in fresh)
    return DatapathState(t, eng.dp.state(), int(eng.clock_ns), list(after), seeded)


def conntrack_items(st: DatapathState) -> list[dict[str, Any]]:
    t = st.tables
    out = []
    for row in st.state["conntrack"]:
        node, p, s, sp_, d, dp, _rp, rs, rsp, rd, rdp, flags, state, exp, svc, be = row
        out.append({
            "node": t.node_name[node], "protocol": C.PROTO_NAMES.get(p, str(p)),
            "original": {"src": ip_str(s), "sport": int(sp_), "dst": ip_str(d),
                         "dport": int(dp)},
            "reply": {"src": ip_str(rs), "sport": int(rsp), "dst": ip_str(rd),
                      "dport": int(rdp)},
            "state": C.CT_STATES[state],
            "timeoutSeconds": max(0, (int(exp) - st.clock_ns) // 10**9),
            "expiresNs": int(exp),
            "nat": [name for bit, name in ((C.CT_DNAT, "DNAT"), (C.CT_SNAT, "SNAT"))
                    if flags & bit],
            "replied": bool(flags & C.CT_REPLIED), "assured": bool(flags & C.CT_ASSURED),
            "service": t.sp_name[svc] if 0 <= svc < len(t.sp_name) else None,
            "backend": backend_text(t, be) if be >= 0 else None,
        })
    return out


def _tuple(e: Mapping[str, Any]) -> str:
    return f"{e['src']}:{e['sport']} -> {e['dst']}:{e['dport']}"


def conntrack_rows(items: Sequence[Mapping[str, Any]], wide: bool
                   ) -> tuple[list[str], list[list[str]]]:
    headers = ["NODE", "PROTO", "ORIGINAL", "REPLY", "STATE", "TIMEOUT", "NAT"]
    if wide:
        headers += ["FLAGS", "SERVICE", "BACKEND"]
    rows = []
    for it in items:
        row = [it["node"], it["protocol"], _tuple(it["original"]), _tuple(it["reply"]),
               it["state"], str(it["timeoutSeconds"]), ",".join(it["nat"]) or "<none>"]
        if wide:
            flags = (["ASSURED"] if it["assured"] else []) + (
                [] if it["replied"] else ["UNREPLIED"])
            row += [",".join(flags) or "<none>", it["service"] or "<none>",
                    it["backend"] or "<none>"]
        rows.append(row)
    return headers, rows


def fdb_items(st: DatapathState) -> list[dict[str, Any]]:
    """Learned entries (bridge order, then MAC) after each node bridge's own address."""
    t = st.tables
    learned: dict[int, list[dict[str, Any]]] = {}
    for b, mac, port, seen in st.state["fdb"]:
        learned.setdefault(int(b), []).append({
            "bridge": t.br_name[b], "mac": mac_str(mac), "port": t.if_name[port],
            "local": False, "ageSeconds": round(max(0, st.clock_ns - int(seen)) / 1e9, 6),
            "seenNs": int(seen)})
    out = []
    for b, name in enumerate(t.br_name):
        local = int(t.br_local_if[b])
        if local >= 0:
            out.append({"bridge": name, "mac": mac_str(t.if_mac[local]),
                        "port": t.if_name[local], "local": True, "ageSeconds": None,
                        "seenNs": None})
        out.extend(learned.get(b, []))
    return out


def fdb_rows(items: Sequence[Mapping[str, Any]], wide: bool
             ) -> tuple[list[str], list[list[str]]]:
    return ["BRIDGE", "MAC", "PORT", "AGE/LOCAL"], [
        [it["bridge"], it["mac"], it["port"],
         "local" if it["local"] else f"{int(it['ageSeconds'])}s"] for it in items]


def route_index(t: Tables) -> list[tuple[int, int, dict[int, int]]]:
    """Routes by prefix length, longest first: (length, mask, {prefix: route})."""
    by_len: dict[int, dict[int, int]] = {}
    for r in range(len(t.rt_prefix)):
        by_len.setdefault(int(t.rt_len[r]), {})[int(t.rt_prefix[r])] = r
    return [(ln, (0xFFFFFFFF << (32 - ln)) & 0xFFFFFFFF if ln else 0, by_len[ln])
            for ln in sorted(by_len, reverse=True)]


def neighbour_dev(t: Tables, index: list[tuple[int, int, dict[int, int]]], node: int,
                  ip: int) -> str:
    """The node's device towards ``ip``: by its longest-prefix route (R-1; a node with its
    own table, R-2: by that)."""
    if int(t.node_rt_count[node]) or len(t.tun_if):  # (kube-router's tunnels: per node)
        from kemu.frontend.engine import route_dev

        out = route_dev(t, node, ip)
        return t.if_kernel_name[out] if out >= 0 else "eth0"
    for _ln, mask, prefixes in index:
        r = prefixes.get(ip & mask, -1)
        if r < 0:
            continue
        if int(t.rt_kind[r]) == C.RT_POD_CIDR:
            if int(t.rt_node[r]) == node:
                return t.if_kernel_name[int(t.node_br_if[node])]  # cbr0, kube-bridge
            if t.vxlan:
                return "flannel.1"
            if 0 < t.ovs_tunnel < C.ANTREA_NOENCAP:  # Antrea: onlink on antrea-gw0
                return t.if_kernel_name[int(t.node_br_if[node])]
        break
    return "eth0"


def neighbour_items(st: DatapathState) -> list[dict[str, Any]]:
    t = st.tables
    index = route_index(t)
    return [{"node": t.node_name[node], "ip": ip_str(ip), "mac": mac_str(mac),
             "state": "PERMANENT" if (int(node), int(ip), int(mac)) in st.seeded
             else "REACHABLE",
             "dev": neighbour_dev(t, index, int(node), int(ip)), "headerCached": bool(hh)}
            for node, ip, mac, hh in st.state["neigh"]]


def neighbour_rows(items: Sequence[Mapping[str, Any]], wide: bool
                   ) -> tuple[list[str], list[list[str]]]:
    headers = ["NODE", "IP", "MAC", "STATE"] + (["DEV", "HEADER-CACHED"] if wide else [])
    rows = []
    for it in items:
        row = [it["node"], it["ip"], it["mac"], it["state"]]
        if wide:
            row += [it["dev"], "yes" if it["headerCached"] else "no"]
        rows.append(row)
    return headers, rows


STATE_VIEWS = {"conntrack": (conntrack_items, conntrack_rows),
               "fdb": (fdb_items, fdb_rows),
               "neighbours": (neighbour_items, neighbour_rows)}


# --- a pod's resolv.conf ------------------------------------------------------------------------

def find_pod(cluster: Cluster, ref: str, namespace: str | None) -> Pod:
    """``ns/pod``, or ``pod`` in ``namespace`` (default ``default``); an unknown one is a
    ``KemuError`` naming the nearest pods."""
    import difflib

    from kemu.errors import KemuError

    ns, sep, name = ref.partition("/")
    if not sep:
        ns, name = namespace or "default", ref
    try:
        return cluster.pod(ns, name)
    except KeyError:
        keys = [p.key for p in cluster.pods]
        near = difflib.get_close_matches(f"{ns}/{name}", keys, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise KemuError(f"no pod {ns}/{name} in this cluster{hint}") from None


def resolvconf_item(cluster: Cluster, pod: Pod) -> dict[str, Any]:
    """The ``resolvconf`` view of one pod (``kemu.control.resolvconf``): ``-o json|yaml``
    give ``{"pod", "dnsPolicy" (as given), "effectivePolicy" (ClusterFirst on hostNetwork:
    Default), "nameservers", "searches", "options", "warnings", "text"}``; the table form
    prints ``text``, the file as the pod sees it."""
    from kemu.control.resolvconf import resolv_conf

    conf = resolv_conf(cluster, pod)
    return {"pod": pod.key, "dnsPolicy": pod.dns_policy, "effectivePolicy": conf.policy,
            "nameservers": conf.nameservers, "searches": conf.searches,
            "options": conf.options, "warnings": conf.warnings, "text": conf.text()}
