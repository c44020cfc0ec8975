"""Documents -> parsed, defaulted and validated objects (``Parsed``), as the API server would.

The loader reads what each modelled kind says (Namespace, Node, Pod, Deployment, ReplicaSet,
ReplicationController, StatefulSet, DaemonSet, Job, Service, EndpointSlice, v1 Endpoints
(mirrored into EndpointSlices as kube-controller-manager's mirroring controller does),
NetworkPolicy, CiliumNetworkPolicy L3/L4 (``kemu.control.cilium``), the kemu ``Cluster``
document), applies the API server's defaults, and records a
``Problem`` for every invalid field (file, object ``namespace/Kind/name`` and JSON path). It
never stops at the first problem: ``kemu.control.cluster.load_cluster`` raises one
``ManifestError`` with all of them. Input it accepts but kemu does not model (IPv6 and
dual-stack, SCTP, ``ipMode``, topology hints, NetworkPolicy enforcement, ...) becomes a
``Notice`` (``Parsed.notices``), a warning the front ends print once; silence means modelled.
Without a kemu ``Cluster`` document, a dump's Node objects make the address ranges inferred
(``kemu.control.ipam.infer``).

Defaults: namespace ``default``; port protocol TCP; ``targetPort`` = ``port``; Service type
ClusterIP, sessionAffinity None (ClientIP timeout 10800 s, max 86400), traffic policies
Cluster; NetworkPolicy ``policyTypes`` per P-3; ``kubernetes.io/metadata.name`` on namespaces.
``status``, ``managedFields``, ``uid``, ``resourceVersion`` are ignored except the status
fields kemu honours (pod IPs and readiness, node addresses, LoadBalancer ingress IPs).

A kind that does not exist in an API group Kubernetes serves (``apps/v1 Deploymnet``) is an
error with a suggestion (``KNOWN_KINDS``); kinds kemu does not model, and objects of other API
groups (CRDs), go to ``ignored`` and to one notice per kind (not errors).
Unknown fields are errors, with the nearest known name, where kemu knows every field (Service
spec and ports, pod specs and containers, container ports, NetworkPolicy, EndpointSlice,
Endpoints, the kemu document); elsewhere they are ignored.
Addresses are not allocated here (see ``cluster`` and ``ipam``).
"""

from __future__ import annotations

import bisect
import difflib
from dataclasses import dataclass, field
from typing import Any

from kemu.control import ipam, workloads
from kemu.control.cilium import parse_cilium_policy
from kemu.control.cni import parse_cni
from kemu.control.ipam import NodeDraft
from kemu.control.manifests import (
    Document,
    Fields,
    dns_label_error,
    dns_subdomain_error,
    join,
    port_name_error,
)
from kemu.control.model import (
    ClusterConfig,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    ExternalHost,
    IPv4Address,
    IPv4Network,
    Namespace,
    NetworkPolicy,
    Notice,
    RouteChange,
    Service,
    ServicePort,
)
from kemu.control.resolvconf import parse_dns_config
from kemu.control.selectors import is_empty, matches, matches_map, parse_policy, parse_selector
from kemu.errors import Problem

KEMU_API = "kemu.dev/v1alpha1"
MODELLED = {
    ("", "Namespace"), ("", "Node"), ("", "Pod"), ("", "Service"),
    ("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"),
    ("apps", "DaemonSet"), ("batch", "Job"), ("discovery.k8s.io", "EndpointSlice"),
    ("networking.k8s.io", "NetworkPolicy"), ("kemu.dev", "Cluster"),
    ("", "ReplicationController"), ("", "Endpoints"), ("cilium.io", "CiliumNetworkPolicy"),
}
KNOWN_KINDS: dict[str, tuple[str, ...]] = {
    "": ("Binding", "ComponentStatus", "ConfigMap", "Endpoints", "Event", "LimitRange",
         "Namespace", "Node", "PersistentVolume", "PersistentVolumeClaim", "Pod", "PodTemplate",
         "ReplicationController", "ResourceQuota", "Secret", "Service", "ServiceAccount"),
    "apps": ("ControllerRevision", "DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"),
    "batch": ("CronJob", "Job"),
    "autoscaling": ("HorizontalPodAutoscaler", "Scale"),
    "policy": ("Eviction", "PodDisruptionBudget", "PodSecurityPolicy"),
    "networking.k8s.io": ("IPAddress", "Ingress", "IngressClass", "NetworkPolicy",
                          "ServiceCIDR"),
    "discovery.k8s.io": ("EndpointSlice",),
    "rbac.authorization.k8s.io": ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"),
    "apiextensions.k8s.io": ("CustomResourceDefinition",),
    "admissionregistration.k8s.io": (
        "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
        "MutatingWebhookConfiguration", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration"),
    "storage.k8s.io": ("CSIDriver", "CSINode", "CSIStorageCapacity", "StorageClass",
                       "VolumeAttachment", "VolumeAttributesClass"),
    "scheduling.k8s.io": ("PriorityClass",),
    "coordination.k8s.io": ("Lease", "LeaseCandidate"),
    "certificates.k8s.io": ("CertificateSigningRequest", "ClusterTrustBundle"),
    "node.k8s.io": ("RuntimeClass",),
    "events.k8s.io": ("Event",),
    "apiregistration.k8s.io": ("APIService",),
    "flowcontrol.apiserver.k8s.io": ("FlowSchema", "PriorityLevelConfiguration"),
    "resource.k8s.io": ("DeviceClass", "ResourceClaim", "ResourceClaimTemplate",
                        "ResourceSlice"),
    "kemu.dev": ("Cluster",),
}
"""Every kind of the API groups Kubernetes itself serves (v1.33): a kind not listed for one of
these groups is a typo (an error with a suggestion); other groups (CRDs) are not checked."""
CLUSTER_SCOPED = {"Namespace", "Node", "Cluster"}
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MIRROR_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
LEADER_ANNOTATION = "control-plane.alpha.kubernetes.io/leader"
MAX_MIRRORED_PER_SUBSET = 1000
"""The mirroring controller's default ``--mirroring-max-endpoints-per-subset``."""
CLUSTER_SPEC_FIELDS = ("nodes", "clusterCIDR", "nodeCIDRMaskSize", "serviceCIDR", "nodeNetwork",
                       "gateway", "mode", "mtu", "dnsDomain", "nodePortRange", "externalHosts",
                       "kubeProxy", "masquerade", "listen", "loadBalancer", "nodeDNS", "routes",
                       "networkPolicy", "cni")
SERVICE_SPEC_FIELDS = (
    "type", "clusterIP", "clusterIPs", "ports", "selector", "externalIPs", "sessionAffinity",
    "sessionAffinityConfig", "loadBalancerIP", "loadBalancerSourceRanges", "loadBalancerClass",
    "externalName", "externalTrafficPolicy", "internalTrafficPolicy", "healthCheckNodePort",
    "publishNotReadyAddresses", "ipFamilies", "ipFamilyPolicy", "allocateLoadBalancerNodePorts",
    "trafficDistribution")
SERVICE_PORT_FIELDS = ("name", "protocol", "appProtocol", "port", "targetPort", "nodePort")
MAX_AFFINITY_TIMEOUT = 86400
MAX_REPLICAS = 100000
"""Most pods one workload may ask for (replicas, a Job's parallelism and completions)."""


@dataclass
class ServiceDraft:
    """A Service before ClusterIP and NodePort allocation."""

    service: Service
    cluster_ip: IPv4Address | None = None  # pinned spec.clusterIP
    ip_field: str = "spec.clusterIP"       # where the pin came from (or spec.clusterIPs[0])
    wants_ip: bool = False                 # needs a ClusterIP (not headless, not ExternalName)
    wants_node_ports: bool = False         # ports without a pinned nodePort get one
    source: str = ""
    obj: str = ""


@dataclass
class SliceDraft:
    slice: EndpointSlice
    source: str
    obj: str
    controller_managed: bool  # made by the EndpointSlice controller of a real cluster
    mirrored: bool = False    # made by the mirroring controller (labelled so, or by kemu)
    from_endpoints: bool = False  # kemu's mirror of a v1 Endpoints object given here


@dataclass
class Parsed:
    """Everything the manifests say, before placement and allocation."""

    config: ClusterConfig = field(default_factory=ClusterConfig)
    config_origin: tuple[str, str] = ("", "")  # (source, object) of the kemu document
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    nodes: list[NodeDraft] = field(default_factory=list)
    pods: list[workloads.PodDraft] = field(default_factory=list)
    services: list[ServiceDraft] = field(default_factory=list)
    slices: list[SliceDraft] = field(default_factory=list)
    policies: list[NetworkPolicy] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)  # accepted, not modelled (warnings)

# the labels the kubelet puts on its Node besides kubernetes.io/hostname (initialNode in
# pkg/kubelet/kubelet_node_status.go; k8s.io/api/core/v1/well_known_labels.go: "kubelet
# applies both beta and GA labels to ensure backward compatibility"): manifests that still
# select beta.kubernetes.io/os (Sock Shop's) are scheduled as on a real cluster
KUBELET_LABELS = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}


def _group(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def object_label(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{name}" if kind in CLUSTER_SCOPED else f"{namespace}/{kind}/{name}"


@dataclass
class _Item:
    doc: Document
    kind: str
    namespace: str
    name: str
    f: Fields


def parse(docs: list[Document], problems: list[Problem]) -> Parsed:
    """Parse every document; problems go to ``problems``."""
    out = Parsed()
    items: dict[str, list[_Item]] = {}
    seen: dict[tuple[str, str, str], str] = {}
    for doc in docs:
        item = _classify(doc, problems, out.ignored, out.notices)
        if item is None:
            continue
        key = (item.kind, item.namespace, item.name)
        if key in seen:
            item.f.problem("metadata.name", f"duplicate {item.kind} (also in {seen[key]})")
            continue
        seen[key] = doc.source
        items.setdefault(item.kind, []).append(item)

    configs = items.get("Cluster", [])
    for extra in configs[1:]:
        extra.f.problem("", f"only one kemu Cluster document is allowed (also "
                        f"{configs[0].doc.source}: Cluster/{configs[0].name})")
    doc_nodes: list[NodeDraft] | None = None
    if configs:
        out.config_origin = (configs[0].doc.source, configs[0].f.obj)
        out.config, doc_nodes = parse_config(configs[0].f, configs[0].doc.obj, configs[0].name,
                                             configs[0].doc.source)
    out.nodes = _merge_nodes(doc_nodes, [parse_node(i.f, i.doc.obj, i.name, i.doc.source)
                                         for i in items.get("Node", [])],
                             configs[0] if configs else None, problems)
    for n in out.nodes:  # what the kubelet sets, visible to nodeSelectors (DaemonSets)
        n.labels = {**KUBELET_LABELS, "kubernetes.io/hostname": n.name, **n.labels}
    out.config.node_names = [n.name for n in out.nodes]
    for i in items.get("Namespace", []):
        labels = i.f.labels(i.f.mapping(i.doc.obj, "", "metadata"), "metadata", "labels")
        labels["kubernetes.io/metadata.name"] = i.name
        out.namespaces[i.name] = Namespace(name=i.name, labels=labels)

    claimed: set[tuple[str, str, str]] = set()  # (namespace, kind, name) owning given pods
    for i in items.get("Pod", []):
        draft, skip = workloads.parse_pod(i.f, i.doc.obj, i.namespace, i.name, i.doc.source)
        if draft.owner is not None:  # even completed: a finished Job makes no new pods
            claimed.add((i.namespace, draft.owner.kind, draft.owner.name))
        if skip:
            out.ignored.append(f"{i.doc.source}: {i.f.obj} ignored ({skip})")
            continue
        out.pods.append(draft)
    for i in items.get("ReplicaSet", []):
        owner = workloads.owner_of(i.f, i.f.mapping(i.doc.obj, "", "metadata"))
        if owner is not None:
            claimed.add((i.namespace, owner.kind, owner.name))
    claimed_sets: dict[str, list[str]] = {}  # namespace -> names of claimed ReplicaSets, sorted
    for ns, k, rs in claimed:
        if k == "ReplicaSet":
            claimed_sets.setdefault(ns, []).append(rs)
    for rs_names in claimed_sets.values():
        rs_names.sort()
    for kind in ("Deployment", "ReplicaSet", "ReplicationController", "StatefulSet",
                 "DaemonSet", "Job"):
        for i in items.get(kind, []):
            if (i.namespace, kind, i.name) in claimed or (kind == "Deployment" and _has_prefix(
                    claimed_sets.get(i.namespace, []), f"{i.name}-")):
                out.ignored.append(f"{i.doc.source}: {i.f.obj} ignored (its pods are given)")
                continue
            out.pods.extend(parse_workload(i.f, i.doc.obj, kind, i.namespace, i.name,
                                           i.doc.source, out.nodes))
    for i in items.get("Service", []):
        out.services.append(parse_service(i.f, i.doc.obj, i.namespace, i.name, i.doc.source))
    for i in items.get("EndpointSlice", []):
        parsed = parse_slice(i.f, i.doc.obj, i.namespace, i.name)
        if isinstance(parsed, str):
            out.ignored.append(f"{i.doc.source}: {i.f.obj} ignored ({parsed})")
        elif parsed is not None:
            out.slices.append(parsed)
    for i in items.get("Endpoints", []):
        mirrored = mirror_endpoints(i.f, i.doc.obj, i.namespace, i.name, out.notices)
        if isinstance(mirrored, str):
            out.ignored.append(f"{i.doc.source}: {i.f.obj} ignored ({mirrored})")
        else:
            out.slices.extend(mirrored)
    for i in items.get("NetworkPolicy", []):
        out.policies.append(parse_policy(i.f, i.doc.obj, i.namespace, i.name))
    for i in items.get("CiliumNetworkPolicy", []):  # L3/L4, kemu.control.cilium
        cnp = parse_cilium_policy(i.f, i.doc.obj, i.namespace, i.name)
        if cnp is not None:
            out.policies.append(cnp)
            if out.config.cni.name != "cilium":  # only Cilium's agent enforces it
                i.f.notice("kind", f"a CiliumNetworkPolicy with spec.cni "
                           f"{out.config.cni.name}: only Cilium enforces it (kemu enforces it "
                           "on this datapath anyway; spec.cni: cilium says what a cluster "
                           "would run)")
    if not configs and items.get("Node"):  # a cluster dump: its address ranges from itself
        said = ipam.infer(out.config, out.nodes, [
            ipam.PodAddress(d.ip, d.node_name) for d in out.pods
            if d.ip is not None and d.node_name and not d.template.host_network],
            [d.cluster_ip for d in out.services if d.cluster_ip is not None])
        if said:
            out.notices.append(Notice(items["Node"][0].doc.source, "", "", "no kemu Cluster "
                                      f"document: inferred {said}"))
    return out


def _has_prefix(names: list[str], prefix: str) -> bool:
    """Whether a name of the sorted list ``names`` starts with ``prefix``."""
    i = bisect.bisect_left(names, prefix)
    return i < len(names) and names[i].startswith(prefix)


def _classify(doc: Document, problems: list[Problem], ignored: list[str],
              unmodelled: list[Notice]) -> _Item | None:
    obj = doc.obj
    where = f"document {doc.index + 1}"
    kind, api = obj.get("kind"), obj.get("apiVersion")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    namespace = ns if isinstance(ns, str) and ns else "default"
    if kind == "Cluster" and name is None:
        name, meta = "kemu", meta if isinstance(meta, dict) else {}
    if isinstance(kind, str) and isinstance(name, str):
        where = object_label(kind, namespace, name)
    f = Fields(problems, doc.source, where, unmodelled)
    if not isinstance(kind, str) or not kind:
        f.problem("kind", "required field is missing")
        return None
    if not isinstance(api, str) or not api:
        f.problem("apiVersion", "required field is missing")
        return None
    group = _group(api)
    if group in KNOWN_KINDS and kind not in KNOWN_KINDS[group]:
        hint = difflib.get_close_matches(kind, KNOWN_KINDS[group], n=1, cutoff=0.6) or \
            [k for k in KNOWN_KINDS[group] if k.lower() == kind.lower()]
        also = f" (did you mean '{hint[0]}'?)" if hint else ""
        f.problem("kind", f"'{kind}' is not a kind of {api}{also}")
        return None
    if (group, kind) not in MODELLED:
        what = f"{api} {kind}" if kind in {k for _, k in MODELLED} else kind
        ignored.append(f"{doc.source}: {where} ignored ({what} is not modelled)")
        unmodelled.append(Notice(doc.source, where, "", f"{what} is not modelled: ignored",
                                 covers=ignored[-1]))
        return None
    if kind == "Cluster" and api != KEMU_API:
        f.problem("apiVersion", f"'{api}' is not supported (use {KEMU_API})")
        return None
    if not isinstance(meta, dict):
        f.problem("metadata", "required field is missing")
        return None
    if not isinstance(name, str) or not name:
        f.problem("metadata.name", "required field is missing")
        return None
    if ns is not None and (not isinstance(ns, str) or dns_label_error(ns)):
        f.problem("metadata.namespace", f"'{ns}' is not a valid namespace name")
        return None
    if kind in ("Service", "Namespace"):
        err = dns_label_error(name, rfc1035=kind == "Service")
    else:
        err = dns_subdomain_error(name)
    if err:
        f.problem("metadata.name", f"'{name}' {err}")
        return None
    return _Item(doc, kind, "" if kind in CLUSTER_SCOPED else namespace, name, f)


# --- the kemu document and nodes ---------------------------------------------------------------

def parse_config(f: Fields, obj: dict[str, Any], name: str,
                 source: str) -> tuple[ClusterConfig, list[NodeDraft] | None]:
    """The kemu ``Cluster`` document -> config, and its node list (None: not given).

    ``spec.gateway`` defaults to the first host of the node network; ``none`` (or null) means
    the node network has no gateway router (nodes get no default route).
    """
    spec = f.mapping(obj, "", "spec")
    f.known(spec, "spec", CLUSTER_SPEC_FIELDS)
    c = ClusterConfig(name=name)
    for key, attr in (("clusterCIDR", "cluster_cidr"), ("serviceCIDR", "service_cidr"),
                      ("nodeNetwork", "node_network")):
        if key in spec:
            net = f.cidr(spec[key], f"spec.{key}")
            if net is not None:
                setattr(c, attr, net)
    c.node_cidr_prefix = f.integer(spec, "spec", "nodeCIDRMaskSize", default=24, lo=1,
                                   hi=30) or 24
    if c.node_cidr_prefix < c.cluster_cidr.prefixlen:
        f.problem("spec.nodeCIDRMaskSize", f"/{c.node_cidr_prefix} is larger than the cluster "
                  f"CIDR {c.cluster_cidr}")
        c.node_cidr_prefix = c.cluster_cidr.prefixlen
    c.gateway_ip = c.node_network.network_address + 1
    if "gateway" in spec and spec["gateway"] in (None, "none", "None"):
        c.gateway_ip = None  # no gateway router: nodes have no default route
    elif "gateway" in spec:
        gw = f.ip(spec["gateway"], "spec.gateway")
        if gw is not None and gw not in c.node_network:
            f.problem("spec.gateway", f"{gw} is outside the node network {c.node_network}")
        elif gw is not None:
            c.gateway_ip = gw
    c.mode = f.choice(spec, "spec", "mode", ("host-gw", "vxlan"), "host-gw")  # type: ignore[assignment]
    c.cni = parse_cni(f, spec)
    if c.cni.name == "flannel" and c.cni.options.get("backend"):
        if "mode" in spec and spec["mode"] != c.cni.options["backend"]:
            f.problem("spec.cni.backend", f"'{c.cni.options['backend']}' contradicts spec.mode "
                      f"'{spec['mode']}' (both are flannel's backend; give one)")
        c.mode = c.cni.options["backend"]
    elif c.cni.name != "flannel" and "mode" in spec:
        f.problem("spec.mode", f"is flannel's backend; the {c.cni.name} CNI's options go in "
                  "spec.cni")
    c.mtu = f.integer(spec, "spec", "mtu", default=1500, lo=576, hi=9216) or 1500
    c.listen = f.choice(spec, "spec", "listen", ("declared", "services", "all"),  # type: ignore[assignment]
                        "services")
    c.dns_domain = f.string(spec, "spec", "dnsDomain", default="cluster.local").rstrip(".")
    if err := dns_subdomain_error(c.dns_domain):
        f.problem("spec.dnsDomain", f"'{c.dns_domain}' {err}")
        c.dns_domain = "cluster.local"
    c.node_dns = parse_dns_config(f, spec, "spec", "nodeDNS")  # the nodes' resolv.conf
    if "nodePortRange" in spec:
        text = f.string(spec, "spec", "nodePortRange")
        lo, _, hi = text.partition("-")
        if lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 65535:
            c.node_port_range = (int(lo), int(hi))
        else:
            f.problem("spec.nodePortRange", f"'{text}' is not a port range like 30000-32767")
    kp = f.mapping(spec, "spec", "kubeProxy")
    f.known(kp, "spec.kubeProxy", ("masqueradeRandomFully",))
    c.masquerade_random_fully = f.boolean(kp, "spec.kubeProxy", "masqueradeRandomFully",
                                          default=True)
    mq = f.mapping(spec, "spec", "masquerade")
    f.known(mq, "spec.masquerade", ("enabled", "randomFully", "nonMasqueradeCIDRs"))
    c.ip_masq = f.boolean(mq, "spec.masquerade", "enabled", default=True)
    c.ip_masq_random_fully = f.boolean(mq, "spec.masquerade", "randomFully", default=True)
    if "nonMasqueradeCIDRs" in mq:
        nets = []
        for j, text in enumerate(f.seq(mq, "spec.masquerade", "nonMasqueradeCIDRs")):
            net = f.cidr(text, f"spec.masquerade.nonMasqueradeCIDRs[{j}]")
            if net is not None:
                nets.append(net)
        c.non_masquerade_cidrs = nets
    lbc = f.mapping(spec, "spec", "loadBalancer")
    f.known(lbc, "spec.loadBalancer", ("pool", "mode"))
    c.lb_mode = f.choice(lbc, "spec.loadBalancer", "mode", ("l2", "routed"), "l2")  # type: ignore[assignment]
    for j, text in enumerate(f.seq(lbc, "spec.loadBalancer", "pool")):
        net = f.cidr(text, f"spec.loadBalancer.pool[{j}]")
        if net is not None:
            c.lb_pool.append(net)
    npc = f.mapping(spec, "spec", "networkPolicy")  # P-8: ICMP under policy isolation
    f.known(npc, "spec.networkPolicy", ("icmp",))
    c.policy_icmp = f.choice(npc, "spec.networkPolicy", "icmp", ("deny", "allow"), "deny")  # type: ignore[assignment]
    for rpath, r in f.mappings(spec, "spec", "routes"):
        change = _route_change(f, rpath, r, f"{name} {rpath}")
        if change is not None:
            c.routes.append(change)
    hosts: set[str] = set()  # names of c.external_hosts
    for i, (hpath, h) in enumerate(f.mappings(spec, "spec", "externalHosts")):
        f.known(h, hpath, ("name", "ip", "ports"))
        hname = f.string(h, hpath, "name", required=True) or f"external-{i}"
        if err := dns_label_error(hname):
            f.problem(join(hpath, "name"), f"'{hname}' {err}")
        ip = f.ip(h["ip"], join(hpath, "ip")) if "ip" in h else None
        if "ip" not in h:
            f.problem(join(hpath, "ip"), "required field is missing")
        host = ExternalHost(name=hname, ip=ip or IPv4Address(0))
        for j, p in enumerate(f.seq(h, hpath, "ports")):
            proto, _, num = str(p).partition("/")
            if proto.upper() in ("TCP", "UDP", "SCTP") and num.isdigit() and \
                    1 <= int(num) <= 65535:
                host.ports.append((proto.upper(), int(num)))
            else:
                f.problem(join(join(hpath, "ports"), j), f"'{p}' is not like \"tcp/80\"")
        if hname in hosts:
            f.problem(join(hpath, "name"), f"duplicate external host '{hname}'")
        elif ip is not None:
            c.external_hosts.append(host)
            hosts.add(hname)
    if "nodes" not in spec:
        return c, None
    nodes = spec["nodes"]
    if isinstance(nodes, int) and not isinstance(nodes, bool):
        if not 1 <= nodes <= 4096:
            f.problem("spec.nodes", f"{nodes} is out of range 1-4096")
            return c, None
        return c, [NodeDraft(f"node{i}", source=source, obj=f.obj) for i in range(1, nodes + 1)]
    if not isinstance(nodes, list):
        f.problem("spec.nodes", "expected a node count or a list of nodes")
        return c, None
    drafts: list[NodeDraft] = []
    names: set[str] = set()
    for i, n in enumerate(nodes):
        where = f"spec.nodes[{i}]"
        n = {"name": n} if isinstance(n, str) else n
        if not isinstance(n, dict):
            f.problem(where, "expected a node name or a mapping {name, labels, ip, podCIDR}")
            continue
        f.known(n, where, ("name", "labels", "ip", "podCIDR"))
        nname = f.string(n, where, "name", required=True)
        if nname and (err := dns_subdomain_error(nname)):
            f.problem(join(where, "name"), f"'{nname}' {err}")
            continue
        if nname in names:
            f.problem(join(where, "name"), f"duplicate node '{nname}'")
            continue
        d = NodeDraft(nname, labels=f.labels(n, where, "labels"), source=source, obj=f.obj)
        if "ip" in n:
            d.ip, d.ip_field = f.ip(n["ip"], join(where, "ip")), join(where, "ip")
        if "podCIDR" in n:
            d.pod_cidr, d.cidr_field = f.cidr(n["podCIDR"], join(where, "podCIDR")), \
                join(where, "podCIDR")
        if nname:
            drafts.append(d)
            names.add(nname)
    return c, drafts


def parse_node(f: Fields, obj: dict[str, Any], name: str, source: str) -> NodeDraft:
    meta = f.mapping(obj, "", "metadata")
    spec = f.mapping(obj, "", "spec")
    status = f.mapping(obj, "", "status")
    d = NodeDraft(name, labels=f.labels(meta, "metadata", "labels"), source=source, obj=f.obj)
    cidrs = f.seq(spec, "spec", "podCIDRs")
    if any(isinstance(c, str) and ":" in c for c in cidrs):
        f.notice("spec.podCIDRs", "IPv6 pod CIDRs are not modelled (IPv4 only)")
    if "podCIDR" in spec:
        d.pod_cidr, d.cidr_field = f.cidr(spec["podCIDR"], "spec.podCIDR"), "spec.podCIDR"
    elif cidrs:
        d.pod_cidr, d.cidr_field = f.cidr(cidrs[0], "spec.podCIDRs[0]"), "spec.podCIDRs[0]"
    for apath, a in f.mappings(status, "status", "addresses"):
        if a.get("type") == "InternalIP" and "." in str(a.get("address", "")):
            d.ip, d.ip_field = f.ip(a.get("address"), join(apath, "address")), \
                join(apath, "address")
            break
    return d


def _merge_nodes(doc_nodes: list[NodeDraft] | None, objects: list[NodeDraft],
                 config: _Item | None, problems: list[Problem]) -> list[NodeDraft]:
    """Nodes: the document's list, refined by Node objects; else the objects; else 3 nodes."""
    if doc_nodes is None:
        if objects:
            return sorted(objects, key=lambda n: n.name)
        src, obj = (config.doc.source, config.f.obj) if config else ("", "")
        return [NodeDraft(f"node{i}", source=src, obj=obj) for i in (1, 2, 3)]
    by_name = {n.name: n for n in doc_nodes}
    for o in objects:
        base = by_name.get(o.name)
        if base is None:
            problems.append(Problem(o.source, o.obj, "metadata.name", f"node '{o.name}' is not "
                                    "among the kemu document's nodes "
                                    f"({', '.join(sorted(by_name))})"))
            continue
        base.labels.update(o.labels)
        for attr, fld in (("ip", "ip_field"), ("pod_cidr", "cidr_field")):
            mine, theirs = getattr(base, attr), getattr(o, attr)
            if theirs is None:
                continue
            if mine is not None and mine != theirs:
                problems.append(Problem(o.source, o.obj, getattr(o, fld), f"{theirs} differs "
                                        f"from {mine} given in the kemu document"))
            setattr(base, attr, theirs)
            setattr(base, fld, getattr(o, fld))
            base.source, base.obj = o.source, o.obj
    return sorted(by_name.values(), key=lambda n: n.name)


# --- workloads ---------------------------------------------------------------------------------

def parse_workload(f: Fields, obj: dict[str, Any], kind: str, namespace: str, name: str,
                   source: str, nodes: list[NodeDraft]) -> list[workloads.PodDraft]:
    spec = f.mapping(obj, "", "spec", required=True)
    template = f.mapping(spec, "spec", "template", required=True)
    tmeta = f.mapping(template, "spec.template", "metadata")
    tspec = f.mapping(template, "spec.template", "spec", required=bool(template))
    t = workloads.parse_template(f, tmeta, tspec, "spec.template.metadata", "spec.template.spec")
    if kind == "Job":
        parallelism = f.integer(spec, "spec", "parallelism", default=1, lo=0,
                                hi=MAX_REPLICAS) or 0
        completions = f.integer(spec, "spec", "completions", lo=0, hi=MAX_REPLICAS)
        count = min(parallelism, completions) if completions is not None else parallelism
    elif kind == "DaemonSet":
        count = 0
    else:
        count = f.integer(spec, "spec", "replicas", default=1, lo=0, hi=MAX_REPLICAS) or 0
    if kind == "ReplicationController":  # a plain map, defaulted to the template's labels
        selector_map = f.labels(spec, "spec", "selector")
        if "selector" in spec and not selector_map:
            f.problem("spec.selector", "must not be empty")
        elif selector_map and not matches_map(selector_map, t.labels):
            f.problem("spec.selector", "does not match the template's labels "
                      "(spec.template.metadata.labels)")
        elif not selector_map and not t.labels:
            f.problem("spec.template.metadata.labels", "required field is missing (the "
                      "selector defaults to them)")
    elif kind != "Job":
        selector = parse_selector(f, spec, "spec", "selector")
        if "selector" not in spec:
            f.problem("spec.selector", "required field is missing")
        elif is_empty(selector):
            f.problem("spec.selector", "must not be empty")
        elif not matches(selector, t.labels):
            f.problem("spec.selector", "does not match the template's labels "
                      "(spec.template.metadata.labels)")
    service_name = f.string(spec, "spec", "serviceName") if kind == "StatefulSet" else ""
    eligible = ([n.name for n in nodes if matches_map(t.node_selector, n.labels)]
                if kind == "DaemonSet" else [])  # only a DaemonSet places its own pods
    instances = workloads.expand(kind, namespace, name, count, template, service_name, eligible)
    return [workloads.draft_from(t, inst, namespace, source, f.obj) for inst in instances]


# --- services and endpoint slices ---------------------------------------------------------------

def parse_service(f: Fields, obj: dict[str, Any], namespace: str, name: str,
                  source: str) -> ServiceDraft:
    meta = f.mapping(obj, "", "metadata")
    spec = f.mapping(obj, "", "spec", required=True)
    status = f.mapping(obj, "", "status")
    f.known(spec, "spec", SERVICE_SPEC_FIELDS)
    svc = Service(namespace=namespace, name=name, source=source,
                  labels=f.labels(meta, "metadata", "labels"))
    svc.type = f.choice(spec, "spec", "type",  # type: ignore[assignment]
                        ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"), "ClusterIP")
    draft = ServiceDraft(svc, source=source, obj=f.obj)
    ip_text, ip_field = f.string(spec, "spec", "clusterIP"), "spec.clusterIP"
    ips = f.seq(spec, "spec", "clusterIPs")
    if not ip_text and ips and isinstance(ips[0], str):
        ip_text, ip_field = ips[0], "spec.clusterIPs[0]"
    if ":" in ip_text:  # an IPv6 (primary) ClusterIP: its IPv4 one, if any, else allocate
        v4 = [(i, v) for i, v in enumerate(ips) if isinstance(v, str) and "." in v]
        ip_text, ip_field = (v4[0][1], f"spec.clusterIPs[{v4[0][0]}]") if v4 else ("", "")
    _family_notices(f, spec, "spec")
    headless = ip_text == "None"
    if svc.type == "ExternalName":
        svc.external_name = f.string(spec, "spec", "externalName", required=True).rstrip(".")
        if svc.external_name and (err := dns_subdomain_error(svc.external_name.lower())):
            f.problem("spec.externalName", f"'{svc.external_name}' {err}")
        if ip_text and not headless:
            f.problem(ip_field, "must be empty for type ExternalName")
    elif headless:
        if svc.type != "ClusterIP":
            f.problem(ip_field, f"None (headless) is not allowed for type {svc.type}")
    elif ip_text:
        draft.cluster_ip, draft.ip_field = f.ip(ip_text, ip_field), ip_field
        draft.wants_ip = draft.cluster_ip is None  # bad pin reported; allocate to go on
    else:
        draft.wants_ip = True
    svc.ports = _service_ports(f, spec, svc.type)
    if not svc.ports and svc.type != "ExternalName" and not headless:
        f.problem("spec.ports", "required field is missing (a Service needs at least one port)")
    draft.wants_node_ports = svc.type == "NodePort" or (
        svc.type == "LoadBalancer"
        and f.boolean(spec, "spec", "allocateLoadBalancerNodePorts", default=True))
    selector = f.labels(spec, "spec", "selector")
    svc.selector = selector or None
    svc.session_affinity = f.choice(spec, "spec", "sessionAffinity",  # type: ignore[assignment]
                                    ("None", "ClientIP"), "None")
    config = f.mapping(spec, "spec", "sessionAffinityConfig")
    if config:
        if svc.session_affinity == "None":
            f.problem("spec.sessionAffinityConfig", "must not be set when sessionAffinity is "
                      "None")
        client = f.mapping(config, "spec.sessionAffinityConfig", "clientIP")
        svc.affinity_timeout = f.integer(client, "spec.sessionAffinityConfig.clientIP",
                                         "timeoutSeconds", default=10800, lo=1,
                                         hi=MAX_AFFINITY_TIMEOUT) or 10800
    for key, attr in (("externalTrafficPolicy", "external_traffic_policy"),
                      ("internalTrafficPolicy", "internal_traffic_policy")):
        setattr(svc, attr, f.choice(spec, "spec", key, ("Cluster", "Local"), "Cluster"))
    svc.external_ips = [ip for i, v in enumerate(f.seq(spec, "spec", "externalIPs"))
                        if (ip := f.ip(v, f"spec.externalIPs[{i}]")) is not None]
    if spec.get("externalTrafficPolicy") == "Local" and svc.type not in (
            "NodePort", "LoadBalancer") and not svc.external_ips:
        f.problem("spec.externalTrafficPolicy", "Local is only for NodePort and LoadBalancer "
                  "Services or Services with externalIPs")
    ranges = f.seq(spec, "spec", "loadBalancerSourceRanges")
    if ranges and svc.type != "LoadBalancer":
        f.problem("spec.loadBalancerSourceRanges", "is only for type LoadBalancer")
    svc.load_balancer_source_ranges = [
        n for i, v in enumerate(ranges)
        if (n := f.cidr(v, f"spec.loadBalancerSourceRanges[{i}]")) is not None]
    if "loadBalancerIP" in spec and spec["loadBalancerIP"]:
        if svc.type != "LoadBalancer":
            f.problem("spec.loadBalancerIP", "is only for type LoadBalancer")
        else:
            svc.load_balancer_ip = f.ip(spec["loadBalancerIP"], "spec.loadBalancerIP")
    lb = f.mapping(status, "status", "loadBalancer")
    for ipath, ing in f.mappings(lb, "status.loadBalancer", "ingress"):
        if "ip" in ing and "." in str(ing["ip"]):
            ip = f.ip(ing["ip"], join(ipath, "ip"))
            if ip is not None:
                svc.load_balancer_ips.append(ip)
        elif "ip" in ing:
            f.notice(join(ipath, "ip"), "IPv6 load-balancer addresses are not modelled")
        elif "hostname" in ing:
            f.notice(join(ipath, "hostname"), "a load balancer known by hostname only is not "
                     "modelled (no address to send to)")
        if ing.get("ipMode", "VIP") != "VIP":
            f.notice(join(ipath, "ipMode"), f"ipMode {ing.get('ipMode')} is not modelled: "
                     "kube-proxy short-circuits this address as for ipMode VIP (S-13)")
    for key, what in (
            ("trafficDistribution", "topology hints are not modelled: every endpoint is used"),
            ("healthCheckNodePort", "kube-proxy's health-check server is not modelled"),
            ("loadBalancerClass", "kemu's load balancer serves every class")):
        if spec.get(key) not in (None, ""):
            f.notice(join("spec", key), what)
    svc.publish_not_ready_addresses = f.boolean(spec, "spec", "publishNotReadyAddresses")
    return draft


SCTP_NOTICE = ("SCTP is matched and NATed by port only: its association states, its CRC32c "
               "checksum after NAT and answers of the emulated stacks are not modelled")


def _family_notices(f: Fields, spec: dict[str, Any], path: str) -> None:
    """IPv6 and dual-stack Services: kemu models IPv4 single-stack only."""
    families = [v for v in f.seq(spec, path, "ipFamilies") if isinstance(v, str)]
    policy = spec.get("ipFamilyPolicy")
    if "IPv6" in families:
        f.notice(join(path, "ipFamilies"), "IPv6 is not modelled: the Service gets an IPv4 "
                 "ClusterIP only")
    elif policy in ("RequireDualStack", "PreferDualStack"):
        f.notice(join(path, "ipFamilyPolicy"), f"{policy}: dual-stack is not modelled (IPv4 "
                 "only)")


def _service_ports(f: Fields, spec: dict[str, Any], type_: str) -> list[ServicePort]:
    out: list[ServicePort] = []
    names: set[str] = set()  # (sets: a Service of 10,000 ports must not take n**2 steps)
    numbers: set[tuple[int, str]] = set()
    items = f.mappings(spec, "spec", "ports")
    for ppath, p in items:
        f.known(p, ppath, SERVICE_PORT_FIELDS)
        number = f.integer(p, ppath, "port", required=True, lo=1, hi=65535)
        sp = ServicePort(port=number or 0, protocol=f.protocol(p, ppath),  # type: ignore[arg-type]
                         name=f.string(p, ppath, "name"))
        if sp.protocol == "SCTP":
            f.notice(join(ppath, "protocol"), SCTP_NOTICE)
        if sp.name and (err := dns_label_error(sp.name)):
            f.problem(join(ppath, "name"), f"'{sp.name}' {err}")
        elif not sp.name and len(items) > 1:
            f.problem(join(ppath, "name"), "required when a Service has more than one port")
        elif sp.name and sp.name in names:
            f.problem(join(ppath, "name"), f"duplicate port name '{sp.name}'")
        if number and (number, sp.protocol) in numbers:
            f.problem(ppath, f"duplicate port {number}/{sp.protocol}")
        names.add(sp.name)
        numbers.add((number or 0, sp.protocol))
        target = p.get("targetPort")
        if target is None or target == 0:
            sp.target_port = sp.port
        elif isinstance(target, str):
            if err := port_name_error(target):
                f.problem(join(ppath, "targetPort"), f"'{target}' {err}")
            sp.target_port = target
        else:
            sp.target_port = f.integer(p, ppath, "targetPort", lo=1, hi=65535) or sp.port
        if "nodePort" in p and p["nodePort"] not in (None, 0):
            if type_ not in ("NodePort", "LoadBalancer"):
                f.problem(join(ppath, "nodePort"), f"may not be used with type {type_}")
            else:
                sp.node_port = f.integer(p, ppath, "nodePort", lo=1, hi=65535) or 0
        out.append(sp)
    return out


def parse_slice(f: Fields, obj: dict[str, Any], namespace: str,
                name: str) -> SliceDraft | str | None:
    """An explicit EndpointSlice; a string says why it is ignored (IPv6, FQDN)."""
    meta = f.mapping(obj, "", "metadata")
    labels = f.labels(meta, "metadata", "labels")
    f.known(obj, "", ("apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"))
    family = f.string(obj, "", "addressType", required=True)
    if family and family != "IPv4":
        return f"addressType {family} is not modelled"
    service = labels.get(SERVICE_NAME_LABEL, "")
    if not service:
        f.problem("metadata.labels", f"the label {SERVICE_NAME_LABEL} is required (it names the "
                  "Service)")
    s = EndpointSlice(namespace=namespace, name=name, service=service, managed=False)
    for epath, e in f.mappings(obj, "", "endpoints"):
        f.known(e, epath, ("addresses", "conditions", "hostname", "nodeName", "targetRef",
                           "zone", "hints", "deprecatedTopology"))
        addrs = f.seq(e, epath, "addresses", required=True)
        if "addresses" in e and not addrs:
            f.problem(join(epath, "addresses"), "must have one address")
        ip = f.ip(addrs[0], join(epath, "addresses[0]")) if addrs else None
        cond = f.mapping(e, epath, "conditions")
        cpath = join(epath, "conditions")
        ready = f.boolean(cond, cpath, "ready", default=True)
        if e.get("hints"):
            f.notice(join(epath, "hints"), "topology hints are not modelled: every endpoint "
                     "is used (S-11)")
        ref = f.mapping(e, epath, "targetRef")
        pod = ""
        if ref.get("kind") == "Pod" and isinstance(ref.get("name"), str):
            pod = f"{ref.get('namespace') or namespace}/{ref['name']}"
        if ip is not None:
            s.endpoints.append(Endpoint(
                ip=ip, ready=ready, serving=f.boolean(cond, cpath, "serving", default=ready),
                terminating=f.boolean(cond, cpath, "terminating"),
                node_name=f.string(e, epath, "nodeName"), pod=pod,
                hostname=f.string(e, epath, "hostname"), zone=f.string(e, epath, "zone")))
    for ppath, p in f.mappings(obj, "", "ports"):
        f.known(p, ppath, ("name", "protocol", "port", "appProtocol"))
        number = f.integer(p, ppath, "port", required=True, lo=1, hi=65535)
        if number:
            s.ports.append(EndpointPort(port=number, protocol=f.protocol(p, ppath),  # type: ignore[arg-type]
                                        name=f.string(p, ppath, "name")))
    s.endpoints.sort(key=lambda e: e.ip)
    managed = labels.get(MANAGED_BY_LABEL) == "endpointslice-controller.k8s.io"
    mirrored = labels.get(MANAGED_BY_LABEL) == MIRROR_CONTROLLER
    return SliceDraft(s, f.source, f.obj, managed, mirrored) if service else None


def mirror_endpoints(f: Fields, obj: dict[str, Any], namespace: str, name: str,
                     notices: list[Notice]) -> list[SliceDraft] | str:
    """A legacy v1 Endpoints object -> the EndpointSlices the mirroring controller makes of it
    (kubernetes pkg/controller/endpointslicemirroring), or why it mirrors nothing.

    Skipped: Endpoints labelled ``endpointslice.kubernetes.io/skip-mirror: "true"`` and
    leader-election records (annotation ``control-plane.alpha.kubernetes.io/leader``); whether
    the Service exists and has no selector is decided by the cluster. Per subset: ``addresses``
    become ready endpoints, ``notReadyAddresses`` not ready ones (ready first), at most
    :data:`MAX_MIRRORED_PER_SUBSET` of them; addresses that are not IPv4 are skipped (with a
    notice). Subsets with the same ports share slices.
    """
    meta = f.mapping(obj, "", "metadata")
    labels = f.labels(meta, "metadata", "labels")
    annotations = f.mapping(meta, "metadata", "annotations")
    if labels.get(SKIP_MIRROR_LABEL) == "true":
        return f"labelled {SKIP_MIRROR_LABEL}: \"true\": not mirrored"
    if LEADER_ANNOTATION in annotations:
        return "a leader-election record: not mirrored"
    f.known(obj, "", ("apiVersion", "kind", "metadata", "subsets"))
    groups: dict[tuple[tuple[int, str, str], ...], list[Endpoint]] = {}
    for spath, sub in f.mappings(obj, "", "subsets"):
        f.known(sub, spath, ("addresses", "notReadyAddresses", "ports"))
        ports: list[tuple[int, str, str]] = []
        for ppath, p in f.mappings(sub, spath, "ports"):
            f.known(p, ppath, ("name", "port", "protocol", "appProtocol"))
            number = f.integer(p, ppath, "port", required=True, lo=1, hi=65535)
            if number:
                ports.append((number, f.protocol(p, ppath), f.string(p, ppath, "name")))
        members: list[Endpoint] = []
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for apath, a in f.mappings(sub, spath, key):
                f.known(a, apath, ("ip", "hostname", "nodeName", "targetRef"))
                text = a.get("ip")
                if isinstance(text, str) and ":" in text:
                    notices.append(Notice(f.source, f.obj, join(apath, "ip"), "IPv6 addresses "
                                          "are not modelled: not mirrored"))
                    continue
                ip = f.ip(text, join(apath, "ip"))
                if ip is None:
                    continue
                ref = f.mapping(a, apath, "targetRef")
                pod = ""
                if ref.get("kind") == "Pod" and isinstance(ref.get("name"), str):
                    pod = f"{ref.get('namespace') or namespace}/{ref['name']}"
                members.append(Endpoint(ip=ip, ready=ready, serving=ready, pod=pod,
                                        node_name=f.string(a, apath, "nodeName"),
                                        hostname=f.string(a, apath, "hostname")))
        if len(members) > MAX_MIRRORED_PER_SUBSET:
            notices.append(Notice(f.source, f.obj, spath, f"{len(members)} addresses: the "
                                  f"mirroring controller mirrors only the first "
                                  f"{MAX_MIRRORED_PER_SUBSET} (ready ones first)"))
            members = members[:MAX_MIRRORED_PER_SUBSET]
        groups.setdefault(tuple(sorted(ports)), []).extend(members)
    out = []
    for port_set, members in sorted(groups.items()):
        members.sort(key=lambda e: (not e.ready, e.ip))
        for chunk in range(0, len(members), MAX_MIRRORED_PER_SUBSET):
            seed = f"{namespace}/Endpoints/{name}/{port_set}/{chunk}"
            s = EndpointSlice(namespace=namespace, name=f"{name}-{workloads.encode(seed, 5)}",
                              service=name, managed=False,
                              endpoints=members[chunk:chunk + MAX_MIRRORED_PER_SUBSET],
                              ports=[EndpointPort(port=n, protocol=p, name=pn)  # type: ignore[arg-type]
                                     for n, p, pn in port_set])
            out.append(SliceDraft(s, f.source, f.obj, False, mirrored=True,
                                  from_endpoints=True))
    return out


ROUTE_FIELDS = ("node", "prefix", "via", "dev", "type", "onlink", "delete")
ROUTE_TYPES = ("unicast", "blackhole", "unreachable", "prohibit")


def _route_change(f: Fields, path: str, r: dict[str, Any], where: str) -> RouteChange | None:
    """One ``spec.routes`` item (R-6): ``{node, prefix, via, dev, type, onlink}`` is
    ``ip route replace``, ``{node, prefix, delete: true}`` is ``ip route del``; whether the
    node, the device and the next hop exist is checked when the tables are built."""
    f.known(r, path, ROUTE_FIELDS)
    node = f.string(r, path, "node", required=True)
    prefix = None
    if r.get("prefix") == "default":  # as ip route writes 0.0.0.0/0
        prefix = IPv4Network("0.0.0.0/0")
    elif "prefix" in r:
        prefix = f.cidr(r.get("prefix"), f"{path}.prefix")
    if "prefix" not in r:
        f.problem(f"{path}.prefix", "required")
    via = f.ip(r["via"], f"{path}.via") if "via" in r else None
    dev = f.string(r, path, "dev")
    rtype = f.choice(r, path, "type", ROUTE_TYPES, "unicast")
    onlink = f.boolean(r, path, "onlink")
    delete = f.boolean(r, path, "delete")
    if delete and ({"via", "dev", "type", "onlink"} & set(r)):
        f.problem(path, "delete: true takes only node and prefix (ip route del PREFIX)")
        return None
    if rtype != "unicast" and ({"via", "dev", "onlink"} & set(r)):
        f.problem(f"{path}.type", f"a {rtype} route has no via, dev or onlink")
        return None
    if not node or prefix is None:
        return None
    return RouteChange(node=node, prefix=prefix, delete=delete, via=via, dev=dev,
                       type=rtype, onlink=onlink, where=where)  # type: ignore[arg-type]
