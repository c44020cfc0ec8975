"""Pods: Pod objects, pod templates, and the controllers that stamp pods out of templates.

A ``PodDraft`` is a pod before placement and addressing (``kemu.control.cluster`` does those).
Drafts come from Pod objects (``parse_pod``) or from workload templates (``expand``), named the
way the Kubernetes controllers name them, deterministically from the input:

- Deployment ``web`` -> ReplicaSet ``web-<hash>`` -> pods ``web-<hash>-<sfx>``; ``<hash>`` is 10
  characters from sha256 of the template (label ``pod-template-hash``), ``<sfx>`` 5 characters
  from sha256 of the ReplicaSet name and replica index;
- ReplicaSet (and v1 ReplicationController) ``rs`` -> ``rs-<sfx>``; StatefulSet ``db`` ->
  ``db-0`` .. ``db-<n-1>`` with hostname = pod name and subdomain = ``spec.serviceName``
  (D-5); DaemonSet ``ds`` -> ``ds-<sfx>`` on each node its ``nodeSelector`` allows (sfx from
  the node name); Job ``j`` -> ``j-<sfx>`` x ``min(parallelism, completions)`` (default 1).

Suffixes use Kubernetes' alphabet without vowels (``bcdfghjklmnpqrstvwxz2456789``).

Pod checks done here (M-4): containers share one network namespace, so two containers (or one
container twice) declaring the same containerPort/protocol is an error naming both; port names
are unique in the pod.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kemu.control import ipam
from kemu.control.manifests import Fields, dns_label_error, join, port_name_error
from kemu.control.model import Container, ContainerPort, DnsConfig, IPv4Address, OwnerRef, Pod
from kemu.control.resolvconf import parse_dns_config, parse_dns_policy

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MAC_ANNOTATION = "kemu.dev/mac"
UDP_ECHO_ANNOTATION = "kemu.dev/udp-echo"
LISTEN_ANNOTATION = "kemu.dev/listen"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
PROBE_HANDLERS = ("httpGet", "tcpSocket", "grpc")
UNSET_IP = IPv4Address(0)  # a Pod object given with this IP gets one allocated
CONTAINER_PORT_FIELDS = ("name", "containerPort", "protocol", "hostPort", "hostIP")
POD_SPEC_FIELDS = frozenset((
    "activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "containers",
    "dnsConfig", "dnsPolicy", "enableServiceLinks", "ephemeralContainers", "hostAliases",
    "hostIPC", "hostNetwork", "hostPID", "hostUsers", "hostname", "hostnameOverride",
    "imagePullSecrets", "initContainers", "nodeName", "nodeSelector", "os", "overhead",
    "preemptionPolicy", "priority", "priorityClassName", "readinessGates", "resourceClaims",
    "resources", "restartPolicy", "runtimeClassName", "schedulerName", "schedulingGates",
    "securityContext", "serviceAccount", "serviceAccountName", "setHostnameAsFQDN",
    "shareProcessNamespace", "subdomain", "terminationGracePeriodSeconds", "tolerations",
    "topologySpreadConstraints", "volumes"))
"""Every field of a Kubernetes PodSpec (v1.34): others are typos (the API server's strict
field validation, ``kubectl``'s default, refuses them)."""
CONTAINER_FIELDS = frozenset((
    "args", "command", "env", "envFrom", "image", "imagePullPolicy", "lifecycle",
    "livenessProbe", "name", "ports", "readinessProbe", "resizePolicy", "resources",
    "restartPolicy", "restartPolicyRules", "securityContext", "startupProbe", "stdin",
    "stdinOnce", "terminationMessagePath", "terminationMessagePolicy", "tty", "volumeDevices",
    "volumeMounts", "workingDir"))
"""Every field of a Kubernetes Container (v1.34)."""


@dataclass
class PodTemplate:
    """What a pod spec says about networking, parsed and checked once per template."""

    labels: dict[str, str] = field(default_factory=dict)
    containers: list[Container] = field(default_factory=list)
    host_network: bool = False
    node_name: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    subdomain: str = ""
    dns_policy: str = "ClusterFirst"  # spec.dnsPolicy, spec.dnsConfig (D-10)
    dns_config: DnsConfig | None = None
    mac: str = ""  # pinned with the kemu.dev/mac annotation
    listen: list[tuple[str, int]] = field(default_factory=list)  # kemu.dev/listen
    listen_all: bool = False


@dataclass
class PodDraft:
    """A pod before placement and addressing, with where to report problems about it."""

    namespace: str
    name: str
    template: PodTemplate
    labels: dict[str, str]
    node_name: str = ""
    hostname: str = ""
    subdomain: str = ""
    owner: OwnerRef | None = None
    ip: IPv4Address | None = None  # pinned status.podIP
    ready: bool = True
    terminating: bool = False
    source: str = ""
    obj: str = ""   # the object problems are reported on: the Pod, or its workload
    path: str = ""  # prefix of field paths: "" for Pods, "spec.template." for workloads

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def encode(seed: str, length: int) -> str:
    """``length`` characters of ``ALPHABET`` from sha256 of ``seed``."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:length])


def template_hash(template: Any) -> str:
    """The 10-character ``pod-template-hash`` of a raw template (stable JSON, sha256)."""
    return encode(json.dumps(template, sort_keys=True, default=str), 10)


def parse_template(f: Fields, meta: dict[str, Any], spec: dict[str, Any], mpath: str,
                   spath: str, allow_mac: bool = False) -> PodTemplate:
    """Parse a pod's metadata and spec (a Pod's own, or a workload's ``spec.template``)."""
    t = PodTemplate(labels=f.labels(meta, mpath, "labels"))
    if not POD_SPEC_FIELDS.issuperset(spec):
        f.known(spec, spath, sorted(POD_SPEC_FIELDS))
    t.host_network = f.boolean(spec, spath, "hostNetwork")
    t.node_name = f.string(spec, spath, "nodeName")
    t.node_selector = f.labels(spec, spath, "nodeSelector")
    for key in ("hostname", "subdomain"):
        value = f.string(spec, spath, key)
        if value and (err := dns_label_error(value)):
            f.problem(join(spath, key), f"'{value}' {err}")
            value = ""
        setattr(t, key, value)
    t.dns_policy = parse_dns_policy(f, spec, spath)
    t.dns_config = parse_dns_config(f, spec, spath, need_nameserver=t.dns_policy == "None")
    t.containers = _containers(f, spec, spath)
    annotations = f.mapping(meta, mpath, "annotations")
    mac = annotations.get(MAC_ANNOTATION)
    where = f"{join(mpath, 'annotations')}[{MAC_ANNOTATION}]"
    if mac is not None:
        if not allow_mac:
            f.problem(where, "only a Pod can pin its MAC (a template makes many pods)")
        elif not isinstance(mac, str):
            f.problem(where, "expected a string")
        elif (err := ipam.mac_error(mac)) is not None:
            f.problem(where, err)
        else:
            t.mac = ipam.normalize_mac(mac)
    echo = annotations.get(UDP_ECHO_ANNOTATION)
    if echo is not None:
        _udp_echo(f, t, echo, f"{join(mpath, 'annotations')}[{UDP_ECHO_ANNOTATION}]")
    listen = annotations.get(LISTEN_ANNOTATION)
    if listen is not None:
        _listen(f, t, listen, f"{join(mpath, 'annotations')}[{LISTEN_ANNOTATION}]")
    return t


_CONTAINERS: dict[str, list[Container]] = {}  # repr of a containers list -> parsed
_CONTAINERS_MAX = 4096


def _containers(f: Fields, spec: dict[str, Any], spath: str) -> list[Container]:
    """The containers of a pod spec, checked (M-4).

    Pods of a cluster repeat a few container lists: a list that parsed without a problem is
    remembered by its ``repr`` (which tells apart every type the parser tells apart: list and
    tuple, int and bool and str) and copied when met again.
    """
    raw = spec.get("containers")
    text = repr(raw) if type(raw) is list and raw else None
    if text is not None and (known := _CONTAINERS.get(text)) is not None:
        return [c.clone() for c in known]
    before = len(f.problems)
    containers = _parse_containers(f, spec, spath)
    if text is not None and len(f.problems) == before:
        if len(_CONTAINERS) >= _CONTAINERS_MAX:
            _CONTAINERS.clear()
        _CONTAINERS[text] = [c.clone() for c in containers]
    return containers


def _parse_containers(f: Fields, spec: dict[str, Any], spath: str) -> list[Container]:
    containers: list[Container] = []
    owners: dict[tuple[int, str], str] = {}   # (port, protocol) -> container name (M-4)
    names: dict[str, str] = {}                # port name -> container name
    seen: set[str] = set()                    # container names
    typo = "containers" not in spec and any(
        k not in POD_SPEC_FIELDS and difflib.get_close_matches(str(k), ["containers"], n=1)
        for k in spec)  # said as an unknown field with its suggestion (parse_template)
    items = f.mappings(spec, spath, "containers", required=not typo)
    if "containers" in spec and isinstance(spec["containers"], list) and not spec["containers"]:
        f.problem(join(spath, "containers"), "must have at least one container")
    for cpath, c in items:
        if not CONTAINER_FIELDS.issuperset(c):
            f.known(c, cpath, sorted(CONTAINER_FIELDS))
        name = f.string(c, cpath, "name", required=True)
        if name and (err := dns_label_error(name)):
            f.problem(join(cpath, "name"), f"'{name}' {err}")
        if name in seen and name:
            f.problem(join(cpath, "name"), f"duplicate container name '{name}'")
        seen.add(name)
        container = Container(name=name)
        for ppath, p in f.mappings(c, cpath, "ports"):
            f.known(p, ppath, CONTAINER_PORT_FIELDS)
            number = f.integer(p, ppath, "containerPort", required=True, lo=1, hi=65535)
            protocol = f.protocol(p, ppath)
            host_port = f.integer(p, ppath, "hostPort", lo=1, hi=65535) or 0
            if p.get("hostIP") not in (None, "", "0.0.0.0"):
                f.notice(join(ppath, "hostIP"), "hostIP is not modelled: the hostPort is "
                         "mapped on every address of the node")
            if protocol == "SCTP":
                f.notice(join(ppath, "protocol"), "SCTP is matched and NATed by port only: "
                         "its association states, its CRC32c checksum after NAT and answers "
                         "of the emulated stacks are not modelled")
            pname = f.string(p, ppath, "name")
            if pname and (err := port_name_error(pname)):
                f.problem(join(ppath, "name"), f"'{pname}' {err}")
                pname = ""
            if pname in names:
                f.problem(join(ppath, "name"), f"duplicate port name '{pname}' (also in "
                          f"container '{names[pname]}')")
            elif pname:
                names[pname] = name
            if number is None:
                continue
            if (number, protocol) in owners:
                f.problem(ppath, f"port {number}/{protocol} of container '{name}' is already "
                          f"declared by container '{owners[number, protocol]}' (containers of a "
                          "pod share one network namespace, M-4)")
                continue
            owners[number, protocol] = name
            container.ports.append(ContainerPort(port=number, protocol=protocol,  # type: ignore[arg-type]
                                                 name=pname, host_port=host_port))
        container.probe_ports = probe_ports(c, container)
        containers.append(container)
    return containers


def probe_ports(raw: dict[str, Any], container: Container) -> list[int]:
    """The TCP ports the kubelet's probes of a container connect to (``httpGet.port``,
    ``tcpSocket.port``, ``grpc.port`` of its liveness, readiness and startup probes), named
    ones resolved against the container's own ports; sorted, without repeats. Probes are not
    validated (a malformed one adds nothing): the kubelet, not the network, judges them."""
    out: set[int] = set()
    for probe_key in PROBES:
        probe = raw.get(probe_key)
        if not isinstance(probe, dict):
            continue
        for handler_key in PROBE_HANDLERS:
            handler = probe.get(handler_key)
            if not isinstance(handler, dict):
                continue
            port = handler.get("port")
            if isinstance(port, str) and not port.isdigit():
                port = next((p.port for p in container.ports
                             if p.name == port and p.protocol == "TCP"), None)
            elif isinstance(port, str):
                port = int(port)
            if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
                out.add(port)
    return sorted(out)


def _udp_echo(f: Fields, t: PodTemplate, value: Any, where: str) -> None:
    """``kemu.dev/udp-echo: "53,dns"``: the emulated stack echoes UDP on these ports."""
    if not isinstance(value, str):
        f.problem(where, "expected a string like \"5353,dns\"")
        return
    udp = [p for c in t.containers for p in c.ports if p.protocol == "UDP"]
    for item in (x.strip() for x in value.split(",") if x.strip()):
        hits = [p for p in udp if (str(p.port) == item if item.isdigit() else p.name == item)]
        if not hits:
            f.problem(where, f"'{item}' is not a UDP containerPort of this pod")
        for p in hits:
            p.udp_echo = True


def parse_listen(value: Any) -> tuple[list[tuple[str, int]], bool] | str:
    """``kemu.dev/listen``: ``"all"``, or ports ``"8080,9000/udp,53/tcp"`` (TCP unless
    ``/udp`` or ``/sctp`` follows) -> (sorted (protocol, port) list, all), or a problem."""
    if not isinstance(value, str):
        return 'expected a string like "8080,9000/udp" or "all"'
    if value.strip().lower() == "all":
        return [], True
    ports: set[tuple[str, int]] = set()
    for item in (x.strip() for x in value.split(",") if x.strip()):
        number, _, proto = item.partition("/")
        proto = (proto or "tcp").strip().upper()
        number = number.strip()
        if not number.isdigit() or not 1 <= int(number) <= 65535 or \
                proto not in ("TCP", "UDP", "SCTP"):
            return f"'{item}' is not a port like 8080, 9000/udp or 53/tcp (or say \"all\")"
        ports.add((proto, int(number)))
    return sorted(ports), False


def _listen(f: Fields, t: PodTemplate, value: Any, where: str) -> None:
    parsed = parse_listen(value)
    if isinstance(parsed, str):
        f.problem(where, parsed)
    else:
        t.listen, t.listen_all = parsed


def owner_of(f: Fields, meta: dict[str, Any]) -> OwnerRef | None:
    """The controller owner reference (or the first one) of an object's metadata."""
    refs = [r for _, r in f.mappings(meta, "metadata", "ownerReferences")]
    refs.sort(key=lambda r: not r.get("controller", False))
    for ref in refs:
        kind, name = ref.get("kind"), ref.get("name")
        if isinstance(kind, str) and isinstance(name, str):
            return OwnerRef(kind=kind, name=name)
    return None


def parse_pod(f: Fields, obj: dict[str, Any], namespace: str, name: str,
              source: str) -> tuple[PodDraft, str]:
    """A Pod object -> (draft, reason to skip it or ""). Completed pods are skipped."""
    meta = f.mapping(obj, "", "metadata")
    spec = f.mapping(obj, "", "spec", required=True)
    status = f.mapping(obj, "", "status")
    t = parse_template(f, meta, spec, "metadata", "spec", allow_mac=True)
    draft = PodDraft(namespace=namespace, name=name, template=t, labels=dict(t.labels),
                     node_name=t.node_name, hostname=t.hostname, subdomain=t.subdomain,
                     owner=owner_of(f, meta), source=source, obj=f.obj)
    draft.terminating = meta.get("deletionTimestamp") is not None
    ips = f.mappings(status, "status", "podIPs")
    if any(":" in str(p.get("ip", "")) for _, p in ips):
        f.notice("status.podIPs", "IPv6 pod addresses are not modelled (IPv4 only)")
    if "podIP" in status:
        draft.ip = f.ip(status["podIP"], "status.podIP")
    elif ips and "ip" in ips[0][1]:
        draft.ip = f.ip(ips[0][1]["ip"], "status.podIPs[0].ip")
    phase = f.string(status, "status", "phase")
    for _, cond in f.mappings(status, "status", "conditions"):
        if cond.get("type") == "Ready":
            draft.ready = cond.get("status") == "True"
            break
    else:
        draft.ready = phase not in ("Pending", "Unknown")
    if phase in ("Succeeded", "Failed"):
        return draft, f"phase {phase}: not running"
    return draft, ""


@dataclass
class Instance:
    """One pod a controller makes: its name and what the controller adds to the template."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    owner: OwnerRef | None = None
    node_name: str = ""
    hostname: str = ""
    subdomain: str = ""


def _unique(prefix: str, seed: str, n: int) -> list[str]:
    names: list[str] = []
    taken: set[str] = set()  # (a set: 100,000 replicas must not take n**2 steps)
    for i in range(n):
        salt = 0
        while (candidate := f"{prefix}-{encode(f'{seed}/{i}/{salt}', 5)}") in taken:
            salt += 1
        names.append(candidate)
        taken.add(candidate)
    return names


def expand(kind: str, namespace: str, name: str, replicas: int, raw_template: Any,
           service_name: str = "", node_names: list[str] | None = None) -> list[Instance]:
    """The pods controller ``kind`` makes for ``namespace/name`` (see the module docstring)."""
    thash = template_hash(raw_template)
    seed = f"{namespace}/{kind}/{name}"
    if kind == "Deployment":
        rs = f"{name}-{thash}"
        owner = OwnerRef("ReplicaSet", rs)
        return [Instance(n, {"pod-template-hash": thash}, owner)
                for n in _unique(rs, f"{namespace}/ReplicaSet/{rs}", replicas)]
    if kind in ("ReplicaSet", "ReplicationController"):
        return [Instance(n, {}, OwnerRef(kind, name)) for n in _unique(name, seed, replicas)]
    if kind == "StatefulSet":
        owner = OwnerRef(kind, name)
        return [Instance(f"{name}-{i}", {"statefulset.kubernetes.io/pod-name": f"{name}-{i}",
                                         "apps.kubernetes.io/pod-index": str(i),
                                         "controller-revision-hash": f"{name}-{thash}"},
                         owner, hostname=f"{name}-{i}", subdomain=service_name)
                for i in range(replicas)]
    if kind == "DaemonSet":
        owner = OwnerRef(kind, name)
        out = []
        for node in node_names or []:
            (pod_name,) = _unique(name, f"{seed}/{node}", 1)
            out.append(Instance(pod_name, {"controller-revision-hash": thash,
                                           "pod-template-generation": "1"}, owner,
                                node_name=node))
        return out
    if kind == "Job":
        labels = {"batch.kubernetes.io/job-name": name, "job-name": name}
        return [Instance(n, dict(labels), OwnerRef(kind, name))
                for n in _unique(name, seed, replicas)]
    raise ValueError(f"not a workload kind: {kind}")


def draft_from(template: PodTemplate, inst: Instance, namespace: str, source: str,
               obj: str) -> PodDraft:
    """Combine a parsed template and a controller's instance into a pod draft."""
    return PodDraft(namespace=namespace, name=inst.name, template=template,
                    labels={**template.labels, **inst.labels},
                    node_name=inst.node_name or template.node_name,
                    hostname=inst.hostname or template.hostname,
                    subdomain=inst.subdomain or template.subdomain,
                    owner=inst.owner, source=source, obj=obj, path="spec.template.")


def pod_annotations(pod: Pod) -> dict[str, str]:
    """kemu's annotations that load back into ``pod``: its MAC, UDP echo ports, listen."""
    annotations = {}
    if pod.mac:
        annotations[MAC_ANNOTATION] = pod.mac
    echo = [str(p.port) for p in pod.container_ports() if p.udp_echo]
    if echo:
        annotations[UDP_ECHO_ANNOTATION] = ",".join(echo)
    if pod.listen_all or pod.listen:
        annotations[LISTEN_ANNOTATION] = "all" if pod.listen_all else ",".join(
            f"{port}/{proto.lower()}" for proto, port in pod.listen)
    return annotations


def pod_to_dict(pod: Pod) -> dict[str, Any]:
    """A ``Pod`` as the manifest that would load into it (``add_pod`` takes either)."""
    annotations = pod_annotations(pod)
    spec: dict[str, Any] = {"containers": [
        {"name": c.name, "ports": [{"containerPort": p.port, "protocol": p.protocol,
                                    **({"name": p.name} if p.name else {})} for p in c.ports],
         # probe ports as tcpSocket probes (one port per probe: at most three)
         **{probe: {"tcpSocket": {"port": port}}
            for probe, port in zip(PROBES, c.probe_ports, strict=False)}}
        for c in pod.containers]}
    for key, value in (("nodeName", pod.node_name), ("hostNetwork", pod.host_network),
                       ("hostname", pod.hostname), ("subdomain", pod.subdomain)):
        if value:
            spec[key] = value
    meta: dict[str, Any] = {"name": pod.name, "namespace": pod.namespace,
                            "labels": dict(pod.labels), "annotations": annotations}
    if pod.terminating:
        meta["deletionTimestamp"] = "1970-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready",
                                              "status": "True" if pod.ready else "False"}]}
    if pod.ip != UNSET_IP:
        status["podIP"] = str(pod.ip)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}
