"""The CNI a cluster runs: ``spec.cni`` of the kemu ``Cluster`` document, parsed and checked.

kemu models a CNI as a *mode* of the emulated datapath: the devices a node has, how pods are
addressed and attached, how packets cross nodes (routes, an overlay), and where Services are
translated. ``spec.cni`` is either a name (``cni: flannel``) or a mapping with the name and
that CNI's main options::

    cni:
      name: kube-router
      overlayType: subnet

Each mode's options, with their defaults, are in ``OPTIONS`` below; the pages each mode is
modelled from are cited where the mode is compiled (``kemu/compiler/``). A mode kemu does not
model yet is refused with an error naming ``spec.cni`` (``BUILT`` lists the modelled ones):
a cluster silently emulated as flannel would give confident wrong answers.

flannel's backend stays where it always was, ``spec.mode`` (``host-gw`` or ``vxlan``);
``cni: {name: flannel, backend: vxlan}`` says the same.
"""

from __future__ import annotations

from typing import Any

from kemu.control.manifests import Fields
from kemu.control.model import CniConfig

NAMES: tuple[str, ...] = ("flannel", "kube-router", "cilium", "antrea", "aws-vpc", "azure")

# the modes this build of kemu emulates (a mode is added here when its datapath is built)
BUILT: frozenset[str] = frozenset({"flannel", "kube-router", "cilium", "antrea", "aws-vpc",
                                  "azure"})

# option -> (allowed values or the type's name, default), per mode; values are the CNI's own
# configuration words where it has them
OPTIONS: dict[str, dict[str, tuple[tuple[str, ...] | str, Any]]] = {
    # flannel's backend (net-conf.json "Backend.Type"); same as spec.mode
    "flannel": {"backend": (("host-gw", "vxlan"), None)},
    # kube-router: --enable-overlay / --overlay-type (IP-in-IP between nodes: "subnet" only
    # across subnets, "full" always), IPVS scheduler (--service ... "rr" default), DSR
    "kube-router": {
        "enableOverlay": ("bool", True),
        "overlayType": (("subnet", "full"), "subnet"),
        "serviceScheduler": (("rr", "sh"), "rr"),
        "dsr": ("bool", False),
    },
    # Cilium: routingMode tunnel|native, tunnelProtocol vxlan|geneve, kubeProxyReplacement,
    # loadBalancer.mode snat|dsr
    "cilium": {
        "routingMode": (("tunnel", "native"), "tunnel"),
        "tunnelProtocol": (("vxlan", "geneve"), "vxlan"),
        "kubeProxyReplacement": ("bool", True),
        "loadBalancerMode": (("snat", "dsr"), "snat"),
    },
    # Antrea: trafficEncapMode encap|noEncap, tunnelType geneve|vxlan|gre
    "antrea": {
        "trafficEncapMode": (("encap", "noEncap"), "encap"),
        "tunnelType": (("geneve", "vxlan", "gre"), "geneve"),
    },
    # AWS VPC CNI: AWS_VPC_K8S_CNI_EXTERNALSNAT, the instance type (ENI and address limits)
    "aws-vpc": {
        "externalSNAT": ("bool", False),
        "instanceType": ("str", ""),
    },
    # Azure CNI: transparent (default since 2020) or bridge mode; "overlay" is Azure CNI
    # Overlay (--network-plugin-mode overlay, pods in spec.clusterCIDR)
    "azure": {
        "mode": (("transparent", "bridge", "overlay"), "transparent"),
    },
}


# AWS VPC CNI: (maximum ENIs, IPv4 addresses per ENI) of common instance types, from EC2's
# "IP addresses per network interface per instance type" table as the CNI's
# misc/eni-max-pods.txt uses it; pods per node = ENIs x (addresses per ENI - 1) (each ENI's
# primary address is not a pod's), the max-pods formula of the CNI's README less its + 2
# for the hostNetwork pods (https://github.com/aws/amazon-vpc-cni-k8s#setup)
ENI_LIMITS: dict[str, tuple[int, int]] = {
    "t3.micro": (2, 2), "t3.small": (3, 4), "t3.medium": (3, 6), "t3.large": (3, 12),
    "t3.xlarge": (4, 15), "m5.large": (3, 10), "m5.xlarge": (4, 15), "m5.2xlarge": (4, 15),
    "m5.4xlarge": (8, 30), "c5.large": (3, 10), "c5.xlarge": (4, 15), "r5.large": (3, 10),
}


def cni_config(name: str, options: dict[str, Any] | None = None) -> CniConfig:
    """A mode's ``CniConfig`` made in code (the API, tests): every option of the mode, the
    given ones over its defaults; an unknown mode or option is a ``ValueError``."""
    if name not in OPTIONS:
        raise ValueError(f"unknown CNI {name!r} (one of {', '.join(NAMES)})")
    schema = OPTIONS[name]
    unknown = set(options or ()) - set(schema)
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(sorted(unknown))}")
    return CniConfig(name=name,  # type: ignore[arg-type]
                     options={**{k: d for k, (_, d) in schema.items()}, **(options or {})})


def parse_cni(f: Fields, spec: dict[str, Any]) -> CniConfig:
    """``spec.cni`` -> ``CniConfig``; wrong names, options and values become problems."""
    raw = spec.get("cni")
    if raw is None:
        return CniConfig()
    if isinstance(raw, str):
        body: dict[str, Any] = {"name": raw}
    elif isinstance(raw, dict):
        body = raw
    else:
        f.problem("spec.cni", "expected a CNI name (flannel, kube-router, cilium, antrea, "
                  "aws-vpc, azure) or a mapping with 'name' and that CNI's options")
        return CniConfig()
    name = f.choice(body, "spec.cni", "name", NAMES, "flannel")
    if "name" not in body:
        f.problem("spec.cni.name", "required field is missing")
    if name not in BUILT:
        f.problem("spec.cni.name" if isinstance(raw, dict) else "spec.cni",
                  f"the {name} datapath is not modelled yet (this kemu models: "
                  f"{', '.join(n for n in NAMES if n in BUILT)}; docs/CNI.md)")
        return CniConfig()
    schema = OPTIONS[name]
    f.known(body, "spec.cni", ("name", *schema))
    cni = cni_config(name)
    for key, (allowed, default) in schema.items():
        if key not in body:
            continue
        if allowed == "bool":
            cni.options[key] = f.boolean(body, "spec.cni", key, default=default)
        elif allowed == "str":
            cni.options[key] = f.string(body, "spec.cni", key, default=default)
        else:
            assert isinstance(allowed, tuple)
            cni.options[key] = f.choice(body, "spec.cni", key, allowed, default or allowed[0])
    if name == "kube-router":
        _check_kube_router(f, cni)
    if name == "cilium":
        _check_cilium(f, body, cni)
    _check_routed(f, spec, cni)
    return cni


def _check_kube_router(f: Fields, cni: CniConfig) -> None:
    """What kemu's kube-router mode cannot emulate is refused, naming the field: DSR
    (``kube-router.io/service.dsr``: IPIP from the director to the pod, not modelled).
    (``spec.mode``, flannel's backend, is refused with any other CNI by the loader.)"""
    if cni.get("dsr"):
        f.problem("spec.cni.dsr", "kube-router's DSR mode is not modelled by this kemu "
                  "(Services are emulated by IPVS in NAT mode); leave dsr false")


def _check_cilium(f: Fields, body: dict[str, Any], cni: CniConfig) -> None:
    """What kemu's Cilium mode (``kemu/compiler/cilium.py``) cannot emulate, naming the
    field: Geneve (kemu's tunnel is VXLAN only) and DSR are refused; the kube-proxy
    replacement's translation at the node's device (NodePort, LoadBalancer) is not
    modelled: said once, kube-proxy's iptables rules translate those (the socket LB for
    pods' ClusterIP traffic is modelled)."""
    if cni.get("tunnelProtocol") == "geneve":
        f.problem("spec.cni.tunnelProtocol", "Cilium's Geneve tunnel (cilium_geneve, UDP "
                  "6081) is not modelled by this kemu; use vxlan")
    if cni.get("loadBalancerMode") == "dsr":
        f.problem("spec.cni.loadBalancerMode", "Cilium's DSR load balancing is not modelled "
                  "by this kemu; use snat")
    if cni.get("kubeProxyReplacement"):
        said = "kubeProxyReplacement" in body
        f.notice("spec.cni.kubeProxyReplacement",
                 f"{'true' if said else 'true (the default)'}: pods' ClusterIP traffic is "
                 "translated by Cilium's socket LB; its NodePort, LoadBalancer and "
                 "externalIPs translation at the node's device (cil_from_netdev) is not "
                 "modelled by this kemu: kube-proxy's iptables rules on the node translate "
                 "those")


def _check_routed(f: Fields, spec: dict[str, Any], cni: CniConfig) -> None:
    """The routed CNIs' limits (``kemu/compiler/cni_routed.py``): a known instance type (what
    kemu does not model of its ENIs said once), what Azure's bridge mode leaves out."""
    if cni.name not in ("aws-vpc", "azure"):
        return
    itype = cni.get("instanceType") if cni.name == "aws-vpc" else ""
    if itype and itype not in ENI_LIMITS:
        f.problem("spec.cni.instanceType", f"unknown instance type {itype!r} (kemu knows the "
                  f"ENI limits of: {', '.join(sorted(ENI_LIMITS))})")
    elif itype:
        enis, per = ENI_LIMITS[itype]
        f.notice("spec.cni.instanceType", f"{itype}: {enis} ENIs x {per - 1} pod addresses "
                 f"each; kemu keeps every pod on the primary ENI (eth0): the pods past its "
                 f"first {per - 1} addresses, on secondary ENIs in AWS, have no ip rule and "
                 "route table of their own here")
    if cni.name == "azure" and cni.get("mode") == "bridge":
        f.notice("spec.cni.mode", "Azure CNI bridge mode: the VNet's SDN, which answers every "
                 "ARP itself, is modelled as its effect only (a pod of another node resolves "
                 "to that node's MAC, as the NIC holding the address); the ebtables arpreply "
                 "rules are not modelled (a node's pods answer their own ARP)")
