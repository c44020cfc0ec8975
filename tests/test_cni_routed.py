"""The routed CNIs (``spec.cni: aws-vpc | azure``): routed veths, /32 routes, no bridge and no
encapsulation, proxy ARP, egress SNAT, per-node capacity (``kemu/compiler/cni_routed.py``).

Every datapath test runs on both backends. The cluster is the datapath tests' scenario (pods
a and b on node1, c on node2, d on node3, the same Services) with the pods' addresses taken
from the node network (AWS VPC CNI, Azure transparent) or kept in the per-node /24s (Azure
CNI Overlay). SEMANTICS ids: R-1 (routes), S-3/S-6/S-7 (Services, masquerade), M-5 (egress).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from helpers import DATA, checksums_valid
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

import kemu
from kemu.compiler.cni_routed import host_veth_name
from kemu.dataplane import codes as C
from kemu.errors import KemuError
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
# the scenario's pods on the node network (AWS VPC CNI, Azure transparent): a, b on node1
NODE_NET_IPS = {"10.244.0.2": "172.18.0.10", "10.244.0.3": "172.18.0.11",
                "10.244.1.2": "172.18.0.12", "10.244.2.2": "172.18.0.13"}
MODES = {"aws-vpc": "cni: aws-vpc",
         "aws-vpc-external-snat": "cni: {name: aws-vpc, externalSNAT: true}",
         "azure": "cni: azure",
         "azure-overlay": "cni: {name: azure, mode: overlay}"}


def cluster_text(mode: str, extra: str = "") -> str:
    text = (DATA / "scenario" / "cluster.yaml").read_text()
    text = text.replace("  nodes: 3\n", f"  nodes: 3\n  {MODES[mode]}\n{extra}", 1)
    if mode != "azure-overlay":
        for old, new in NODE_NET_IPS.items():
            text = text.replace(f"podIP: {old}}}", f"podIP: {new}}}")
    return text


def load(mode: str, backend: str, tmp_path: Path, extra: str = "", **options):
    path = tmp_path / f"{mode}.yaml"
    path.write_text(cluster_text(mode, extra))
    options.setdefault("respond", False)
    return kemu.load(path, backend=backend, **options)


def ip_of(mode: str, pod: str) -> str:
    ips = {"a": "10.244.0.2", "b": "10.244.0.3", "c": "10.244.1.2", "d": "10.244.2.2"}
    return ips[pod] if mode == "azure-overlay" else NODE_NET_IPS[ips[pod]]


def veth(mode: str, node: str, pod: str) -> str:
    return f"{node}/{host_veth_name('eni' if mode.startswith('aws') else 'azv', 'default', pod)}"


ROUTED = ["aws-vpc", "azure", "azure-overlay"]


@pytest.mark.parametrize("mode", ROUTED)
def test_devices_no_bridge_routed_veths(mode: str, backend: str, tmp_path: Path) -> None:
    emu = load(mode, backend, tmp_path)
    t = emu.tables
    kinds = {t.if_name[i]: int(t.if_kind[i]) for i in range(t.n_ifaces)}
    assert not [n for n, k in kinds.items() if k in (C.IF_BRIDGE, C.IF_VETH, C.IF_VTEP)]
    name = veth(mode, "node1", "a")
    assert kinds[name] == C.IF_VETH_HOST
    assert t.if_kernel_name[t.iface(name)].startswith("eni" if mode == "aws-vpc" else "azv")
    assert len(t.if_kernel_name[t.iface(name)]) == 14
    assert int(t.if_ip[t.iface(name)]) == 0  # the host veth has no address
    assert t.if_name[int(t.if_peer[t.iface(name)])] == "default/a/eth0"


@pytest.mark.parametrize("mode", ROUTED)
def test_pod_to_pod_same_node_is_routed_not_bridged(mode: str, backend: str,
                                                   tmp_path: Path) -> None:
    emu = load(mode, backend, tmp_path)
    trace = emu.send(IP(dst=ip_of(mode, "b"), ttl=10) / TCP(dport=8080, flags="S"),
                     src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    assert [n for n, _d in trace.path(0)] == [
        "default/a/eth0", veth(mode, "node1", "a"), veth(mode, "node1", "b"), "default/b/eth0"]
    got = Ether(trace.frames_at("default/b/eth0")[0])
    assert got[IP].ttl == 9  # one routed hop: the node's stack
    t = emu.tables
    assert int.from_bytes(bytes.fromhex(got.src.replace(":", "")), "big") == int(
        t.if_mac[t.iface(veth(mode, "node1", "b"))])
    assert checksums_valid(bytes(got))


@pytest.mark.parametrize("mode", ROUTED)
def test_pod_sends_everything_to_its_host_veth(mode: str, backend: str, tmp_path: Path) -> None:
    """The pod's /32 and default via 169.254.1.1: even a same-subnet destination (another
    pod of the node network) is addressed to the host veth's MAC."""
    emu = load(mode, backend, tmp_path)
    trace = emu.send(IP(dst=ip_of(mode, "c")) / UDP(dport=9) / b"x", src="default/a")
    first = Ether(trace.frames_at("default/a/eth0")[0])
    t = emu.tables
    assert int(first.dst.replace(":", ""), 16) == int(t.if_mac[t.iface(veth(mode, "node1",
                                                                          "a"))])


@pytest.mark.parametrize("mode", ROUTED)
def test_cross_node_without_encapsulation(mode: str, backend: str, tmp_path: Path) -> None:
    emu = load(mode, backend, tmp_path)
    trace = emu.send(IP(dst=ip_of(mode, "c"), ttl=10) / TCP(dport=8080, flags="S"),
                     src="default/a")
    assert trace.outcome(0) == "DELIVERED"
    path = [n for n, _d in trace.path(0)]
    want = ["default/a/eth0", veth(mode, "node1", "a"), "node1/eth0", "node2/eth0",
            veth(mode, "node2", "c"), "default/c/eth0"]
    it = iter(path)
    assert all(hop in it for hop in want), path
    wire = Ether(trace.frames_at("node1/eth0", "out")[0])
    t = emu.tables
    assert int(wire.dst.replace(":", ""), 16) == int(t.if_mac[t.iface("node2/eth0")])
    assert UDP not in wire and wire[IP].src == ip_of(mode, "a")  # no VXLAN, no NAT
    assert wire[IP].dst == ip_of(mode, "c")
    assert Ether(trace.frames_at("default/c/eth0")[0])[IP].ttl == 8
    text = trace.detailed()
    if mode == "azure-overlay":  # the VNet routes node2's pod CIDR to node2
        assert "route 10.244.1.0/24 via 172.18.0.3 dev eth0" in text
    else:  # the node network's connected route; node2's eth0 holds the address
        assert "route 172.18.0.0/24 dev eth0 (held by node2's eth0)" in text
    assert f"route {ip_of(mode, 'c')}/32 dev {veth(mode, 'node2', 'c').split('/')[1]}" in text


@pytest.mark.parametrize("mode", ROUTED)
def test_clusterip_to_another_node_golden(mode: str, backend: str,
                                          capsys: pytest.CaptureFixture,
                                          tmp_path: Path) -> None:
    """pod -> ClusterIP on another node: ``kemu trace`` (golden per mode)."""
    path = tmp_path / "cluster.yaml"
    path.write_text(cluster_text(mode))
    rc = main(["trace", "-f", str(path), "-S", "default/a", "-D", "default/svc-c",
               "--backend", backend])
    out = capsys.readouterr().out
    golden = GOLDEN / f"cni-{mode}-trace.txt"
    if os.environ.get("KEMU_UPDATE_GOLDEN"):
        golden.write_text(out)
    assert rc == 0
    assert out == golden.read_text()


@pytest.mark.parametrize("mode", ROUTED)
def test_nodeport_from_outside(mode: str, backend: str, tmp_path: Path) -> None:
    """S-3: ext/client -> node1:NodePort of svc-c (backend c on node2): DNAT and masquerade
    on node1 (S-7), forwarded to node2 unencapsulated, the answer back the same way."""
    emu = load(mode, backend, tmp_path, respond=True)
    svc = next(s for s in emu.model.services if s.type == "NodePort"
               and s.selector == {"app": "c"})
    port = svc.ports[0].node_port
    trace = emu.send(IP(dst="172.18.0.2") / TCP(sport=5555, dport=port, flags="S"),
                     src="ext/client")
    assert trace.outcome(0) == "DELIVERED"
    got = delivered(trace)
    assert got is not None and got.src == "172.18.0.2"  # masqueraded to node1
    answer = trace.answers()[0]
    assert answer.outcomes[0][0] == C.OUT_DELIVERED
    back = Ether(answer.hops[-1][2])
    assert back[IP].src == "172.18.0.2" and back[TCP].sport == port


def delivered_at(trace, packet: int = 0) -> list[str]:
    """The interfaces where packet ``packet`` of the trace was delivered."""
    t = trace.tables
    return [t.if_name[i] for k, _r, i, _a in trace.packets[packet].outcomes
            if k == C.OUT_DELIVERED]


def arp_replies(trace) -> list:
    return [p for p in trace.packets if p.origin == "arp"
            and Ether(p.hops[0][2])[ARP].op == 2]


def delivered(trace) -> IP | None:
    from helpers import delivered_frame
    return delivered_frame(trace)


@pytest.mark.parametrize("mode", ["aws-vpc", "aws-vpc-external-snat", "azure", "azure-overlay"])
def test_egress_snat(mode: str, backend: str, tmp_path: Path) -> None:
    """Traffic leaving the VPC/VNet is SNATed to the node's primary address, unless the AWS
    CNI's externalSNAT; traffic inside it keeps the pod's address."""
    emu = load(mode, backend, tmp_path)
    out = emu.send(IP(dst="8.8.8.8") / UDP(sport=4000, dport=53) / b"q", src="default/a")
    assert out.outcome(0) == "LEFT"
    wire = Ether(out.frames_at("node1/eth0", "out")[0])
    want = ip_of(mode, "a") if mode == "aws-vpc-external-snat" else "172.18.0.2"
    assert wire[IP].src == want
    inside = emu.send(IP(dst="172.18.0.200") / TCP(sport=4001, dport=80, flags="S"),
                      src="default/a")
    assert Ether(inside.frames_at("node1/eth0", "out")[0])[IP].src == ip_of(mode, "a")


@pytest.mark.parametrize("mode", ["azure", "azure-overlay"])
def test_proxy_arp_on_the_host_veth(mode: str, backend: str, tmp_path: Path) -> None:
    """Azure: the pod ARPs for its gateway (or anything routed elsewhere) and the host
    answers with the veth's MAC (proxy ARP); not for the pod's own address."""
    emu = load(mode, backend, tmp_path, respond=True)
    t = emu.tables
    hv = t.iface(veth(mode, "node1", "a"))
    req = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=ip_of(mode, "a"),
                                               pdst="169.254.1.1")
    trace = emu.send(req, src="default/a")
    assert delivered_at(trace) == [veth(mode, "node1", "a")]
    reply = Ether(arp_replies(trace)[0].hops[0][2])
    assert reply[ARP].op == 2 and reply[ARP].psrc == "169.254.1.1"
    assert int(reply[ARP].hwsrc.replace(":", ""), 16) == int(t.if_mac[hv])
    own = emu.send(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc=ip_of(mode, "a"),
                                                        pdst=ip_of(mode, "a")),
                   src="default/a")
    assert [(k, r) for k, r, _i, _a in own.packets[0].outcomes] == [
        (C.OUT_DROPPED, C.DROP_NOT_LOCAL)]
    assert not arp_replies(own)


@pytest.mark.parametrize("mode", ["aws-vpc", "azure"])
def test_owner_node_answers_arp_for_its_pods(mode: str, backend: str, tmp_path: Path) -> None:
    """Pods of the node network: an ARP request for a pod's address on the node network is
    answered by the owning node's eth0 (the ENI holding the secondary IP), by no other."""
    emu = load(mode, backend, tmp_path, respond=True)
    t = emu.tables
    req = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="172.18.0.100",
                                               pdst=ip_of(mode, "c"))
    trace = emu.send(req, src="ext/client")
    assert "node2/eth0" in delivered_at(trace)
    assert "node1/eth0" not in delivered_at(trace)
    reply = Ether(arp_replies(trace)[0].hops[0][2])
    assert int(reply[ARP].hwsrc.replace(":", ""), 16) == int(t.if_mac[t.iface("node2/eth0")])


@pytest.mark.parametrize("mode", ["aws-vpc", "azure"])
def test_cold_cluster_resolves_pods_by_arp(mode: str, backend: str, tmp_path: Path) -> None:
    """Without static neighbours node1 ARPs for c's address itself (connected) and node2's
    eth0 answers; the held packet then reaches c."""
    emu = load(mode, backend, tmp_path, respond=True, static_neighbours=False, cold=True)
    trace = emu.send(IP(dst=ip_of(mode, "c")) / ICMP(), src="default/a")
    arp = [p for p in trace.packets if p.origin == "arp"]
    assert arp and Ether(arp[0].hops[0][2])[ARP].pdst == ip_of(mode, "c")
    assert Ether(arp[0].hops[0][2])[ARP].psrc == "172.18.0.2"  # node1's eth0 asks
    assert any("default/c/eth0" in delivered_at(trace, i) for i in range(len(trace.packets)))


def test_external_host_to_pod_goes_to_the_owner_node(backend: str, tmp_path: Path) -> None:
    """A VPC host sends to a pod's address on-link: its frame goes to the owning node's eth0
    (the address's ENI), which routes it to the pod's veth."""
    emu = load("aws-vpc", backend, tmp_path)
    trace = emu.send(IP(dst=ip_of("aws-vpc", "c")) / TCP(dport=8080, flags="S"),
                     src="ext/client")
    assert trace.outcome(0) == "DELIVERED"
    assert [n for n, _d in trace.path(0)][-3:] == [
        "node2/eth0", veth("aws-vpc", "node2", "c"), "default/c/eth0"]


def test_show_routes_and_interfaces(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(cluster_text("aws-vpc"))
    assert main(["show", "routes", "-f", str(path)]) == 0
    out = capsys.readouterr().out
    hv = host_veth_name("eni", "default", "a")
    assert f"node1    172.18.0.10/32 dev {hv} scope link" in out
    assert "node1    172.18.0.0/24 dev eth0 proto kernel scope link src 172.18.0.2" in out
    assert "cbr0" not in out
    assert "gateway  172.18.0.12/32 via 172.18.0.3 dev eth0" in out
    assert main(["show", "interfaces", "-f", str(path), "-o", "wide"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(f"node1/{hv}"))
    assert "veth-host" in row and "default/a/eth0" in row and row.rstrip().endswith("off")
    eth = next(line for line in out.splitlines() if line.startswith("node1/eth0 "))
    assert eth.rstrip().endswith("on")  # proxy ARP: the node answers for its pods


def test_instance_type_capacity(tmp_path: Path) -> None:
    """t3.micro: 2 ENIs x (2 - 1) = 2 pod addresses per node; a third pod on node1 is a
    clear error naming the capacity."""
    text = cluster_text("aws-vpc").replace("cni: aws-vpc", "cni: {name: aws-vpc, "
                                           "instanceType: t3.micro}")
    text += ("---\napiVersion: v1\nkind: Pod\nmetadata: {name: e, namespace: default}\n"
             "spec: {nodeName: node1, containers: [{name: c}]}\n")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(KemuError, match="at most 2 per node"):
        kemu.load(path)
    ok = tmp_path / "ok.yaml"
    ok.write_text(cluster_text("aws-vpc").replace("cni: aws-vpc", "cni: {name: aws-vpc, "
                                                  "instanceType: m5.large}"))
    assert len(kemu.load(ok).model.pods) == 4


@pytest.mark.parametrize(("cni", "field", "words"), [
    ("{name: aws-vpc, instanceType: z9.huge}", "spec.cni.instanceType", "unknown instance"),
])
def test_refused_options(cni: str, field: str, words: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(cluster_text("aws-vpc").replace("cni: aws-vpc", f"cni: {cni}"))
    assert main(["show", "nodes", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert field in err and words in err and "Traceback" not in err


def test_pcapng_has_an_interface_per_routed_veth(tmp_path: Path) -> None:
    """The replay's pcapng: an interface per device, the routed veths by their kernel-like
    names; the frames of pod a -> c cross them."""
    from scapy.utils import PcapNgReader, wrpcap

    emu = load("aws-vpc", "python", tmp_path)
    src = tmp_path / "in.pcap"
    wrpcap(str(src), [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                      / IP(src=ip_of("aws-vpc", "a"), dst=ip_of("aws-vpc", "c"))
                      / TCP(dport=8080, flags="S")])
    out = tmp_path / "out.pcapng"
    emu.replay(src, out)
    data = out.read_bytes()
    for name in (veth("aws-vpc", "node1", "a"), veth("aws-vpc", "node2", "c")):
        assert name.encode() in data
    with PcapNgReader(str(out)) as r:
        assert len(list(r)) >= 6


def test_route_changes_are_refused(tmp_path: Path) -> None:
    """``spec.routes`` names flannel's devices: refused in a routed mode, naming the change."""
    text = cluster_text("aws-vpc").replace(
        "  cni: aws-vpc\n", "  cni: aws-vpc\n  routes:\n"
        "    - {node: node1, prefix: 10.9.0.0/16, type: blackhole}\n")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(KemuError, match=r"spec.routes\[0\].*not modelled with spec.cni aws-vpc"):
        kemu.load(path)


@pytest.mark.parametrize("mode", ["aws-vpc", "azure", "azure-overlay"])
def test_bench_mix_in_a_routed_mode(mode: str, backend: str) -> None:
    """``kemu bench --cni MODE``'s workload: the synthetic cluster in that mode, its mix
    frames addressed as the pods' stacks would (to their host veths), every one delivered."""
    from kemu._backend import IMPLEMENTATIONS
    from kemu.bench import workloads as W
    from kemu.compiler.compile import compile_cluster
    from kemu.control.cluster import load_cluster

    t = compile_cluster(load_cluster(W.synthetic_cluster(3, 30, 6, cni=mode)))
    assert not (t.if_kind == C.IF_BRIDGE).any()
    mix = W.cluster_mix(t, 200, 400)
    dp = IMPLEMENTATIONS[backend].Datapath(t, 0, True)
    res = W.results_for(t, 64, False, 1514)
    delivered = 0

    def count(r, lo: int, hi: int) -> None:  # noqa: ANN001
        nonlocal delivered
        delivered += int((r.oc_kind[: r.n_outcomes] == C.OUT_DELIVERED).sum())

    W.drive(dp, mix, res, 64, count)
    assert delivered == len(mix)


def test_bench_cni_report() -> None:
    """``kemu bench --cni MODE`` judges the mode's mix against flannel's (>= 0.8)."""
    from kemu.bench.runner import Bench

    b = Bench(quick=True, cnis=("azure",))
    b.info["cni"] = {"azure": {"mix_ratio": 0.75}}
    target = next(t for t in b.targets() if "spec.cni azure" in t["target"])
    assert target["met"] is False and target["goal"] == ">= 0.8"
    b.info["cni"] = {"azure": {"mix_ratio": 1.08}}
    target = next(t for t in b.targets() if "spec.cni azure" in t["target"])
    assert target["met"] is True


@pytest.mark.parametrize("mode", ["aws-vpc", "azure", "azure-overlay"])
@pytest.mark.parametrize("static", [True, False])
def test_twins_equivalent_in_routed_modes(mode: str, static: bool, tmp_path: Path) -> None:
    """Both datapaths give the same hops, bytes, events, outcomes and state (the seeded
    neighbours of routed pods included) over the bench mix, ARP to the routed veths and
    eth0s, egress and a table reload (the flow cache on)."""
    from kemu._backend import IMPLEMENTATIONS
    if "cython" not in IMPLEMENTATIONS:
        pytest.skip("one backend built")
    from test_fastpath_equivalence import Batch, Pair

    from kemu.bench import workloads as W
    from kemu.compiler.compile import compile_cluster
    from kemu.control.cluster import load_cluster

    t = compile_cluster(load_cluster(W.synthetic_cluster(3, 24, 4, cni=mode)))
    mix = W.cluster_mix(t, 60, 300)
    rows = [(mix.frame(i), int(mix.in_if[i]), int(mix.in_mode[i]), int(mix.ts_ns[i]))
            for i in range(len(mix))]
    now = int(mix.ts_ns[-1])
    pods = [i for i in range(t.n_ifaces) if int(t.if_kind[i]) == C.IF_POD_ETH]
    for k, i in enumerate(pods[:6]):  # ARP from pods (proxy ARP on their veths) and hosts
        arp = bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
                    / ARP(op=1, psrc=str(ipaddress.IPv4Address(int(t.if_ip[i]))),
                          pdst=str(ipaddress.IPv4Address(int(t.if_ip[pods[-1 - k]])))))
        rows.append((arp, i, C.INJ_TX_FIXL2, now + 1000 * k))
        rows.append((arp, int(t.ext_if[0]) if len(t.ext_if) else i, C.INJ_TX_FIXL2,
                     now + 1000 * k + 500))
        out = bytes(Ether() / IP(src=str(ipaddress.IPv4Address(int(t.if_ip[i]))), dst="8.8.8.8")
                    / UDP(sport=3000 + k, dport=53) / b"q")
        rows.append((out, i, C.INJ_TX_FIXL2, now + 1000 * k + 700))
    pair = Pair(t, 5, static, 32, 4096, True)
    for k in range(0, len(rows), 61):
        pair.batch(Batch.of(rows[k: k + 61]))
    pair.both("load", compile_cluster(load_cluster(W.synthetic_cluster(3, 24, 4, cni=mode))))
    pair.batch(Batch.of(rows[:120]))



@pytest.mark.parametrize("example", ["aws-vpc", "azure"])
def test_examples_with_the_example_workloads(example: str,
                                             capsys: pytest.CaptureFixture) -> None:
    """examples/cni/<mode>/cluster.yaml with examples/cluster's workloads: the client reaches
    the frontend Service (endpoints on other nodes) and the node lists its routed veths."""
    files = ["-f", str(ROOT / "examples" / "cni" / example / "cluster.yaml")]
    for name in ("backend", "frontend", "client"):
        files += ["-f", str(ROOT / "examples" / "cluster" / f"{name}.yaml")]
    assert main(["trace", *files, "-S", "default/client", "-D", "shop/frontend"]) == 0
    out = capsys.readouterr().out
    assert "connection established" in out and "eth0 (held by node" in out
    assert main(["show", "interfaces", *files]) == 0
    prefix = "node1/eni" if example == "aws-vpc" else "node1/azv"
    assert prefix in capsys.readouterr().out


def test_pinned_pod_address_outside_the_node_network(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A pod's pinned address must lie in the VPC subnet: a clear error naming it."""
    text = cluster_text("aws-vpc").replace("podIP: 172.18.0.12}", "podIP: 10.244.1.2}")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["show", "pods", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert "status.podIP" in err and "10.244.1.2 is outside the pod addresses of node2" in err
    assert "secondary IPs of the ENIs in 172.18.0.0/24" in err
