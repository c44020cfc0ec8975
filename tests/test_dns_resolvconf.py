"""A pod's resolv.conf as kubelet writes it (D-10, ``kemu.control.resolvconf``): dnsPolicy
ClusterFirst / ClusterFirstWithHostNet / Default / None, dnsConfig merged as kubelet's
``appendDNSConfig``, the limits of ``formDNSConfigFitsLimits``, the API server's checks, the
Cluster document's ``spec.nodeDNS``; glibc's search order (``res_nsearch``); ``kemu show
resolvconf``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kemu.control import load_cluster
from kemu.control.resolvconf import NOERROR, NXDOMAIN, SERVFAIL, ResolvConf, Search, resolv_conf
from kemu.errors import KemuError
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cluster"
KUBE_DNS = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53,
                                                          "protocol": "UDP"}]}}


def pod(name: str = "p", namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c"}], **spec}}


def conf_of(*docs: Any, name: str = "p", namespace: str = "default") -> ResolvConf:
    c = load_cluster(*docs)
    return resolv_conf(c, c.pod(namespace, name))


def test_cluster_first_is_the_default_d10() -> None:
    conf = conf_of(KUBE_DNS, pod(namespace="shop"), namespace="shop")
    assert conf.text() == ("search shop.svc.cluster.local svc.cluster.local cluster.local\n"
                           "nameserver 10.96.0.10\n"
                           "options ndots:5\n")
    assert conf.ndots == 5 and conf.policy == "ClusterFirst" and not conf.warnings


def test_cluster_dns_without_a_kube_dns_service_is_kubeadms_tenth_address() -> None:
    assert conf_of(pod()).nameservers == ["10.96.0.10"]
    cfg = {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster",
           "spec": {"serviceCIDR": "10.100.0.0/16", "dnsDomain": "corp.internal"}}
    conf = conf_of(cfg, pod())
    assert conf.nameservers == ["10.100.0.10"]
    assert conf.searches == ["default.svc.corp.internal", "svc.corp.internal", "corp.internal"]


def test_host_network_cluster_first_falls_back_to_default_and_with_host_net_does_not() -> None:
    conf = conf_of(KUBE_DNS, pod(hostNetwork=True))
    assert conf.policy == "Default"
    assert conf.text() == "nameserver 172.18.0.1\n"  # the node's: its gateway
    conf = conf_of(KUBE_DNS, pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"))
    assert conf.policy == "ClusterFirstWithHostNet" and conf.nameservers == ["10.96.0.10"]
    assert conf.options == ["ndots:5"]


NODE_DNS = {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster",
            "spec": {"nodeDNS": {"nameservers": ["172.18.0.53", "8.8.8.8"],
                                 "searches": ["corp.example", "example"],
                                 "options": [{"name": "timeout", "value": "2"},
                                             {"name": "rotate"}]}}}


def test_default_policy_is_the_nodes_resolv_conf() -> None:
    conf = conf_of(NODE_DNS, KUBE_DNS, pod(dnsPolicy="Default"))
    assert conf.text() == ("search corp.example example\n"
                           "nameserver 172.18.0.53\n"
                           "nameserver 8.8.8.8\n"
                           "options timeout:2 rotate\n")
    assert conf.ndots == 1  # glibc's default


def test_cluster_first_appends_the_nodes_searches_not_its_options() -> None:
    conf = conf_of(NODE_DNS, KUBE_DNS, pod())
    assert conf.searches == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local",
                             "corp.example", "example"]
    assert conf.nameservers == ["10.96.0.10"] and conf.options == ["ndots:5"]


def test_none_policy_is_only_dns_config() -> None:
    conf = conf_of(KUBE_DNS, pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["192.0.2.1"], "searches": ["ns1.svc.cluster-domain.example",
                                                   "my.dns.search.suffix"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}))
    # the example of kubernetes.io's "Pod's DNS Config", as the pod's file shows it
    assert conf.text() == ("search ns1.svc.cluster-domain.example my.dns.search.suffix\n"
                           "nameserver 192.0.2.1\n"
                           "options ndots:2 edns0\n")


def test_dns_config_merges_as_kubelet_does() -> None:
    conf = conf_of(KUBE_DNS, pod(dnsConfig={
        "nameservers": ["10.96.0.10", "1.1.1.1"],
        "searches": ["svc.cluster.local", "extra.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}]}))
    assert conf.nameservers == ["10.96.0.10", "1.1.1.1"]  # duplicates dropped, first kept
    assert conf.searches == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local",
                             "extra.example"]
    assert conf.options == ["ndots:2", "single-request"]  # overrides ndots:5
    assert conf.ndots == 2


def test_limits_cut_with_kubelets_warnings() -> None:
    conf = conf_of(KUBE_DNS, pod(dnsConfig={"nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9"]}))
    assert conf.nameservers == ["10.96.0.10", "1.1.1.1", "8.8.8.8"]
    assert conf.warnings == ["Nameserver limits were exceeded, some nameservers have been "
                             "omitted, the applied nameserver line is: 10.96.0.10 1.1.1.1 "
                             "8.8.8.8"]
    many = [f"d{i}.example" for i in range(30)]  # 3 + 30 = 33 > 32
    conf = conf_of(KUBE_DNS, pod(dnsConfig={"searches": many}))
    assert len(conf.searches) == 32 and conf.searches[-1] == "d28.example"
    assert conf.warnings[0].startswith("Search Line limits were exceeded")
    long = [f"{'a' * 62}.{i:02d}.example" for i in range(27)]  # 73 each: 27*74-1 = 1997
    conf = conf_of(KUBE_DNS, pod(dnsConfig={"searches": long}))  # the API server takes it
    # with the 3 cluster domains (25+17+13 and spaces) the line is 2053 > 2048: the last one
    # (and only it) is left out, from the end, as kubelet cuts
    assert conf.searches == ["default.svc.cluster.local", "svc.cluster.local",
                             "cluster.local", *long[:26]]
    assert conf.warnings[0].startswith("Search Line limits were exceeded")


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"dnsPolicy": "ClusterFirts"}, "spec.dnsPolicy", "ClusterFirst"),
    ({"dnsPolicy": "None"}, "spec.dnsConfig", "required when dnsPolicy is None"),
    ({"dnsPolicy": "None", "dnsConfig": {"searches": ["a.b"]}}, "spec.dnsConfig.nameservers",
     "at least one nameserver"),
    ({"dnsConfig": {"nameservers": ["1.2.3"]}}, "spec.dnsConfig.nameservers[0]",
     "valid IP address"),
    ({"dnsConfig": {"nameservers": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"]}},
     "spec.dnsConfig.nameservers", "more than 3"),
    ({"dnsConfig": {"searches": [f"s{i}.x" for i in range(33)]}}, "spec.dnsConfig.searches",
     "more than 32"),
    ({"dnsConfig": {"searches": ["Bad_Name"]}}, "spec.dnsConfig.searches[0]", "'Bad_Name'"),
    ({"dnsConfig": {"options": [{"value": "2"}]}}, "spec.dnsConfig.options[0].name",
     "required"),
    ({"dnsConfig": {"nameserver": ["1.1.1.1"]}}, "spec.dnsConfig", "nameserver"),
])
def test_invalid_dns_settings_are_errors_naming_the_field(spec: dict, field: str,
                                                          words: str) -> None:
    with pytest.raises(KemuError) as e:
        load_cluster(pod(**spec))
    assert field in str(e.value) and words in str(e.value)


def test_node_dns_setting_is_checked() -> None:
    with pytest.raises(KemuError) as e:
        load_cluster({"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster",
                      "spec": {"nodeDNS": {"nameservers": ["nope"]}}})
    assert "spec.nodeDNS.nameservers[0]" in str(e.value)


def test_workload_templates_carry_dns_settings() -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "w"}},
                    "template": {"metadata": {"labels": {"a": "w"}},
                                 "spec": {"containers": [{"name": "c"}], "dnsPolicy": "None",
                                          "dnsConfig": {"nameservers": ["192.0.2.9"]}}}}}
    c = load_cluster(dep)
    assert [resolv_conf(c, p).text() for p in c.pods] == ["nameserver 192.0.2.9\n"] * 2


def test_pods_yaml_round_trips_the_dns_settings(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.yaml"
    src.write_text(yaml.safe_dump_all([KUBE_DNS, pod(dnsPolicy="Default", dnsConfig={
        "searches": ["x.example"], "options": [{"name": "ndots", "value": "3"},
                                               {"name": "edns0"}]})]))
    assert main(["show", "-f", str(src), "pods", "-o", "yaml"]) == 0
    out = tmp_path / "out.yaml"
    out.write_text(capsys.readouterr().out)
    a, b = load_cluster(src), load_cluster(out)
    assert resolv_conf(a, a.pod("default", "p")) == resolv_conf(b, b.pod("default", "p"))


# --- glibc's search order ----------------------------------------------------------------------

CONF = ResolvConf(searches=["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                  options=["ndots:5"])


def walk(name: str, answers: dict[str, tuple[int, bool]], conf: ResolvConf = CONF
         ) -> list[str]:
    s = Search(name, conf)
    asked = []
    for q in s:
        asked.append(q)
        s.result(*answers.get(q, (NXDOMAIN, False)))
    return asked


def test_search_few_dots_tries_every_domain_then_the_name() -> None:
    assert walk("example.com", {}) == [
        "example.com.shop.svc.cluster.local.", "example.com.svc.cluster.local.",
        "example.com.cluster.local.", "example.com."]


def test_search_stops_at_the_first_answer_with_records() -> None:
    assert walk("backend", {"backend.shop.svc.cluster.local.": (NOERROR, True)}) == [
        "backend.shop.svc.cluster.local."]


def test_search_goes_on_after_nodata_and_servfail() -> None:
    asked = walk("backend", {"backend.shop.svc.cluster.local.": (NOERROR, False),
                             "backend.svc.cluster.local.": (SERVFAIL, False),
                             "backend.cluster.local.": (NOERROR, True)})
    assert asked == ["backend.shop.svc.cluster.local.", "backend.svc.cluster.local.",
                     "backend.cluster.local."]


def test_search_refused_ends_the_domains_but_the_name_is_still_tried() -> None:
    assert walk("x", {"x.shop.svc.cluster.local.": (5, False)}) == [
        "x.shop.svc.cluster.local.", "x."]


def test_search_many_dots_tries_the_name_first() -> None:
    name = "backend.shop.svc.cluster.local"  # 4 dots < 5: still searched first
    assert walk(name, {})[0] == f"{name}.shop.svc.cluster.local."
    two = ResolvConf(searches=CONF.searches, options=["ndots:2"])
    assert walk("a.b.c", {}, two) == ["a.b.c.", "a.b.c.shop.svc.cluster.local.",
                                       "a.b.c.svc.cluster.local.", "a.b.c.cluster.local."]
    assert walk("a.b.c", {"a.b.c.": (NOERROR, True)}, two) == ["a.b.c."]


def test_search_trailing_dot_is_absolute_only() -> None:
    assert walk("backend.", {}) == ["backend."]


# --- the command ---------------------------------------------------------------------------------

def test_show_resolvconf_prints_the_file(capsys) -> None:
    assert main(["show", "-f", str(EXAMPLE), "resolvconf", "shop/redis-0"]) == 0
    out, err = capsys.readouterr()
    assert out == ("search shop.svc.cluster.local svc.cluster.local cluster.local\n"
                   "nameserver 10.96.0.10\n"
                   "options ndots:5\n") and err == ""
    assert main(["show", "-f", str(EXAMPLE), "-n", "shop", "-o", "json", "resolvconf",
                 "redis-0"]) == 0
    item = yaml.safe_load(capsys.readouterr().out)["items"][0]
    assert item["pod"] == "shop/redis-0" and item["options"] == ["ndots:5"]


def test_show_resolvconf_errors(capsys) -> None:
    assert main(["show", "-f", str(EXAMPLE), "resolvconf", "shop/redis-9"]) == 2
    err = capsys.readouterr().err
    assert "no pod shop/redis-9" in err and "shop/redis-0" in err
    assert main(["show", "-f", str(EXAMPLE), "resolvconf"]) == 2
    assert "needs a pod" in capsys.readouterr().err
    assert main(["show", "-f", str(EXAMPLE), "pods", "client"]) == 2


def test_show_resolvconf_warns_on_stderr(tmp_path: Path, capsys) -> None:
    src = tmp_path / "p.yaml"
    src.write_text(yaml.safe_dump_all([KUBE_DNS, pod(dnsConfig={
        "nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9"]})]))
    assert main(["show", "-f", str(src), "resolvconf", "p"]) == 0
    out, err = capsys.readouterr()
    assert out.count("nameserver") == 3
    assert err.startswith("kemu: warning: pod default/p: Nameserver limits were exceeded")
