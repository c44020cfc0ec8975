"""``cilium.io/v2 CiliumNetworkPolicy`` (L3/L4 and L7 HTTP) read into kemu's NetworkPolicy
model.

A CiliumNetworkPolicy (namespaced) becomes one ``NetworkPolicy`` (``kind``
``CiliumNetworkPolicy``) that the policy compiler and both datapaths enforce like any other:

- ``endpointSelector`` selects pods of the policy's namespace (``podSelector``);
- **default deny** (Cilium's default enforcement mode): a pod selected by a policy with a
  non-empty ``ingress`` (``egress``) section is isolated that way; an empty or absent section
  does not isolate, and the empty rule ``{}`` isolates and allows nothing.
  ``enableDefaultDeny: {ingress/egress: true}`` isolates even without rules;
  ``enableDefaultDeny`` ``false`` (rules that add allows without isolating) is refused: kemu's
  model isolates every pod a policy with that direction selects;
- a rule's L3 part (Cilium refuses combining two of them in one rule, and so does kemu):
  ``fromEndpoints``/``toEndpoints`` (label selectors on the policy's namespace unless they
  name ``k8s:io.kubernetes.pod.namespace``, which selects namespaces by name, or
  ``io.cilium.k8s.namespace.labels.KEY``, namespaces by label; ``k8s:``/``any:`` prefixes are
  stripped), ``fromCIDR``/``fromCIDRSet`` (with ``except``; as in Cilium they never match
  addresses inside the cluster: pods and nodes), ``fromEntities``/``toEntities`` (``world``:
  outside the cluster, ``cluster``: pods and nodes, ``host``, ``remote-node``, ``all``).
  A rule without an L3 part but with ``toPorts`` allows every peer on those ports;
- ``toPorts[].ports[]``: ``port`` (a string: number, ``0`` = every port, or a port name),
  ``protocol`` TCP/UDP/SCTP/ANY (default ANY = TCP, UDP and SCTP), ``endPort``;
- ``toPorts[].rules.http[]`` (L7, ingress): the entry becomes a rule of its own (the same
  peers, its ports: TCP, single ports, a number or a name) carrying ``PolicyRule.http``
  (``HttpRule``: ``method``, ``path``, ``host`` regular expressions, ``headers`` and
  ``headerMatches`` name/value pairs, ``_http_rules``); the compiler and the datapath
  redirect what only such rules allow to the node's HTTP proxy (``kemu.dataplane.l7``).

Entities and where kemu models less (a notice names the field):

- ``fromEntities: host``: the local node reaches its pods anyway (P-9, Cilium's
  ``allow-localhost``), so it adds nothing; ``remote-node`` (ingress) matches every node's
  address, the local one included, which P-9 already admits: exact.
- ``toEntities: host`` and ``remote-node`` match every node's address: kemu compiles rules per
  identity, not per node, so it cannot tell the local node from the others on egress.

Refused with an error naming the field: ``ingressDeny``/``egressDeny`` (deny rules: kemu's
policy model only allows), ``enableDefaultDeny`` false, L7 rules other than HTTP
(``rules.kafka``, ``.dns``, ``.l7proto``, ``.l7``), HTTP rules on egress, on UDP/SCTP, on
port ranges or every port, ``headerMatches[].mismatch``/``.secret``, ``icmps``,
``fromRequires``/``toRequires``, ``fromNodes``/``toNodes``, ``fromGroups``/``toGroups``,
``toFQDNs``, ``toServices``, ``authentication``, ``nodeSelector`` (host policies), ``specs``,
``reserved:`` labels (use the entities), and entities kemu does not model.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from kemu.control.manifests import Fields, join, port_name_error, type_name
from kemu.control.model import (
    HttpRule,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)
from kemu.control.selectors import matches, parse_selector

API_VERSION = "cilium.io/v2"
NS_KEY = "io.kubernetes.pod.namespace"
NS_LABEL_PREFIX = "io.cilium.k8s.namespace.labels."
NS_NAME_LABEL = "kubernetes.io/metadata.name"
ENTITIES = ("world", "world-ipv4", "cluster", "host", "remote-node", "all")
UNMODELLED_ENTITIES = ("world-ipv6", "health", "init", "ingress", "unmanaged", "kube-apiserver")
_SPEC_KNOWN = ("endpointSelector", "ingress", "egress", "ingressDeny", "egressDeny",
               "enableDefaultDeny", "description", "labels", "nodeSelector")
_REFUSED_SPEC = {
    "ingressDeny": "deny rules are not modelled (kemu's policy model only allows; refusing "
                   "rather than ignoring them)",
    "egressDeny": "deny rules are not modelled (kemu's policy model only allows; refusing "
                  "rather than ignoring them)",
    "nodeSelector": "host policies (nodeSelector) are not modelled",
}
_RULE_UNMODELLED = ("Requires", "Nodes", "Groups")
_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP", "ANY")


def parse_cilium_policy(f: Fields, obj: dict[str, Any], namespace: str,
                        name: str) -> NetworkPolicy | None:
    """One CiliumNetworkPolicy -> a ``NetworkPolicy`` (module docstring); problems go to
    ``f``; None when it cannot be read at all."""
    api = obj.get("apiVersion")
    if api != API_VERSION:
        f.problem("apiVersion", f"'{api}' is not supported for CiliumNetworkPolicy "
                  f"(use {API_VERSION})")
        return None
    if "specs" in obj:
        f.problem("specs", "a list of rules is not modelled: give one rule as spec")
        return None
    spec = f.mapping(obj, "", "spec", required=True)
    f.known(spec, "spec", _SPEC_KNOWN)
    for key, why in _REFUSED_SPEC.items():
        if key in spec:
            f.problem(join("spec", key), why)
    if "endpointSelector" not in spec and spec:
        f.problem("spec.endpointSelector", "required field is missing (use {} to select all "
                  "pods of the namespace)")
    pod_sel, ns_sel = _split_selector(f, spec, "spec", "endpointSelector")
    if ns_sel is not None and not matches(ns_sel, {NS_NAME_LABEL: namespace}):
        f.problem("spec.endpointSelector", f"names another namespace than the policy's "
                  f"'{namespace}': a CiliumNetworkPolicy selects pods of its own namespace")
    pol = NetworkPolicy(namespace=namespace, name=name, source=f.source, pod_selector=pod_sel,
                        policy_types=[], kind="CiliumNetworkPolicy",
                        labels=f.labels(f.mapping(obj, "", "metadata"), "metadata", "labels"))
    deny = f.mapping(spec, "spec", "enableDefaultDeny")
    f.known(deny, "spec.enableDefaultDeny", ("ingress", "egress"))
    for direction, ptype, peer_word in (("ingress", "Ingress", "from"),
                                        ("egress", "Egress", "to")):
        rules = f.mappings(spec, "spec", direction)
        explicit = deny.get(direction)
        if explicit is not None and not isinstance(explicit, bool):
            f.problem(join("spec.enableDefaultDeny", direction),
                      f"expected true or false, got {type_name(explicit)}")
        elif explicit is False:
            f.problem(join("spec.enableDefaultDeny", direction),
                      "false is not modelled: kemu isolates every pod a policy with "
                      f"{direction} rules selects (Cilium's default)")
        if rules or explicit is True:
            pol.policy_types.append(ptype)
        for rpath, r in rules:
            getattr(pol, direction).extend(_rule(f, r, rpath, peer_word, direction))
    return pol


def _rule(f: Fields, r: dict[str, Any], path: str, word: str,
          direction: str) -> list[PolicyRule]:
    """One ingress/egress rule as kemu's rules: its L3/L4 part, and one rule more per
    ``toPorts`` entry with L7 ``rules`` (same peers, those ports, ``PolicyRule.http``);
    none when it allows nothing (the empty rule ``{}``)."""
    return _rule_l4(f, r, path, word, direction) or []


def _rule_l4(f: Fields, r: dict[str, Any], path: str, word: str,
             direction: str) -> list[PolicyRule] | None:
    l3 = {k: f"{word}{k}" for k in ("Endpoints", "CIDR", "CIDRSet", "Entities")}
    refused = [f"{word}{k}" for k in _RULE_UNMODELLED]
    refused += ["toFQDNs", "toServices"] if word == "to" else []
    f.known(r, path, (*l3.values(), "toPorts", "icmps", "authentication", *refused))
    for key in (*refused, "icmps", "authentication"):
        if key in r:
            f.problem(join(path, key), "is not modelled")
    given = [k for k in l3.values() if k in r]
    if len(given) > 1:
        f.problem(path, f"combining {given[0]} and {given[1]} is not supported (Cilium "
                  "refuses it too: use two rules)")
        return None
    rule = PolicyRule()
    l7: list[PolicyRule] = []
    for ppath, p in f.mappings(r, path, "toPorts"):
        ports, http = _port_rule(f, p, ppath, direction)
        if http is None:
            rule.ports.extend(ports)
        elif ports:
            l7.append(PolicyRule(ports=ports, http=http))
    if "toPorts" in r and not rule.ports and not l7:
        return None  # every toPorts entry refused: allow nothing rather than everything

    def done() -> list[PolicyRule] | None:
        """The L3/L4 rule (unless every toPorts entry had L7 rules) and the L7 ones, with
        its peers."""
        for x in l7:
            x.peers = list(rule.peers)
        return ([rule] if rule.ports or "toPorts" not in r else []) + l7

    if not given:
        return done() if "toPorts" in r else None
    key = given[0]
    where = join(path, key)
    if key == l3["Endpoints"]:
        for i, sel in enumerate(f.seq(r, path, key)):
            if not isinstance(sel, dict):
                f.problem(f"{where}[{i}]", f"expected a mapping, got {type_name(sel)}")
                continue
            pod_sel, ns_sel = _split_selector(f, {f"{key}[{i}]": sel}, path, f"{key}[{i}]")
            rule.peers.append(PolicyPeer(pod_selector=pod_sel, namespace_selector=ns_sel))
    elif key == l3["CIDR"]:
        for i, v in enumerate(f.seq(r, path, key)):
            cidr = f.cidr(v, f"{where}[{i}]")
            if cidr is not None:
                rule.peers.append(PolicyPeer(ip_block=IPBlock(cidr=cidr), entity="world"))
    elif key == l3["CIDRSet"]:
        for spath, s in f.mappings(r, path, key):
            f.known(s, spath, ("cidr", "except", "cidrGroupRef", "cidrGroupSelector"))
            for k in ("cidrGroupRef", "cidrGroupSelector"):
                if k in s:
                    f.problem(join(spath, k), "CiliumCIDRGroup references are not modelled")
            if "cidr" not in s:
                f.problem(join(spath, "cidr"), "required field is missing")
                continue
            cidr = f.cidr(s["cidr"], join(spath, "cidr"))
            if cidr is None:
                continue
            block = IPBlock(cidr=cidr)
            for i, v in enumerate(f.seq(s, spath, "except")):
                ex = f.cidr(v, f"{spath}.except[{i}]")
                if ex is not None and not ex.subnet_of(cidr):
                    f.problem(f"{spath}.except[{i}]", f"{ex} is not inside cidr {cidr}")
                elif ex is not None:
                    block.except_.append(ex)
            rule.peers.append(PolicyPeer(ip_block=block, entity="world"))
    else:
        for i, v in enumerate(f.seq(r, path, key)):
            epath = f"{where}[{i}]"
            if v in UNMODELLED_ENTITIES:
                f.problem(epath, f"entity '{v}' is not modelled (kemu models "
                          f"{', '.join(ENTITIES)})")
            elif v not in ENTITIES:
                hint = difflib.get_close_matches(str(v), ENTITIES, n=1)
                also = f" (did you mean '{hint[0]}'?)" if hint else ""
                f.problem(epath, f"{v!r} is not an entity{also}")
            elif v == "host" and direction == "ingress":
                continue  # the local node reaches its pods anyway (P-9)
            else:
                if direction == "egress" and v in ("host", "remote-node"):
                    f.notice(epath, f"'{v}' matches every node's address (kemu compiles "
                             "rules per identity and cannot tell the local node on egress)")
                entity = {"world-ipv4": "world", "host": "nodes",
                          "remote-node": "nodes"}.get(v, v)
                rule.peers.append(PolicyPeer(entity=entity))
    if not rule.peers:
        return None  # an L3 part that matches nothing kemu needs to add
    return done()


def _http_rules(f: Fields, p: dict[str, Any], path: str,
                direction: str) -> list[HttpRule] | None:
    """``toPorts[].rules``: its ``http`` list (None when refused: the problem names the
    field). Cilium's ``PortRuleHTTP`` (https://docs.cilium.io/en/stable/security/policy/
    layer7/, ``pkg/policy/api/http.go``): ``method``, ``path``, ``host`` are extended regular
    expressions matched against the whole method, path (``:path``, the query included) and
    ``Host``; ``headers`` entries ``Name`` (present) or ``Name: value`` (exactly that
    value); ``headerMatches`` ``{name, value}`` the same (``mismatch`` actions and
    ``secret`` values are refused). Other L7 protocols are refused."""
    rpath = join(path, "rules")
    rules = f.mapping(p, path, "rules")
    f.known(rules, rpath, ("http", "kafka", "dns", "l7proto", "l7"))
    refused = False
    for k in ("kafka", "dns", "l7proto", "l7"):
        if k in rules:
            f.problem(join(rpath, k), "is not modelled (kemu's L7 proxy takes HTTP rules "
                      "only; refusing rather than allowing every request)")
            refused = True
    if "http" not in rules:
        if not refused:
            f.problem(join(rpath, "http"), "required field is missing (kemu models HTTP "
                      "rules)")
        return None
    if direction == "egress":
        f.problem(join(rpath, "http"), "L7 rules on egress are not modelled (kemu's HTTP "
                  "proxy judges ingress only; refusing rather than allowing every request)")
        return None
    out: list[HttpRule] = []
    ok = not refused
    for hpath, h in f.mappings(rules, rpath, "http"):
        f.known(h, hpath, ("method", "path", "host", "headers", "headerMatches"))
        regex: dict[str, str | None] = {}
        for key in ("method", "path", "host"):
            v = h.get(key)
            if v is None or v == "":
                regex[key] = None
                continue
            if not isinstance(v, str):
                f.problem(join(hpath, key), f"expected a string, got {type_name(v)}")
                ok = False
                continue
            try:
                re.compile(v)
            except re.error as e:
                f.problem(join(hpath, key), f"{v!r} is not a regular expression: {e}")
                ok = False
                continue
            regex[key] = v
        headers: list[tuple[str, str | None]] = []
        for i, v in enumerate(f.seq(h, hpath, "headers")):
            if not isinstance(v, str) or not v.strip():
                f.problem(f"{hpath}.headers[{i}]", "expected 'Name' or 'Name: value'")
                ok = False
                continue
            name, sep, value = v.partition(":")
            headers.append((name.strip().lower(), value.strip() if sep else None))
        for mpath, m in f.mappings(h, hpath, "headerMatches"):
            f.known(m, mpath, ("name", "value", "mismatch", "secret"))
            for k in ("mismatch", "secret"):
                if k in m:
                    f.problem(join(mpath, k), "is not modelled (kemu matches name and value)")
                    ok = False
            name = f.string(m, mpath, "name", required=True)
            if name:
                value = m.get("value")
                headers.append((name.lower(), None if value is None else str(value)))
        out.append(HttpRule(regex.get("method"), regex.get("path"), regex.get("host"),
                            tuple(headers)))
    if ok and not out:  # ``http: []``: redirected, every request allowed (Cilium's docs)
        out.append(HttpRule())
    return out if ok else None


def _port_rule(f: Fields, p: dict[str, Any], path: str,
               direction: str) -> tuple[list[PolicyPort], list[HttpRule] | None]:
    """A ``toPorts`` entry: its ports and its HTTP rules (None: an L4 entry)."""
    f.known(p, path, ("ports", "rules", "listener", "originatingTLS", "terminatingTLS",
                      "serverNames"))
    for k in ("listener", "originatingTLS", "terminatingTLS", "serverNames"):
        if k in p:
            f.problem(join(path, k), "is not modelled")
    http: list[HttpRule] | None = None
    if "rules" in p:
        http = _http_rules(f, p, path, direction)
        if http is None:
            return [], []  # refused: allow nothing rather than every request
        if not p.get("ports"):
            f.problem(join(path, "ports"), "L7 rules need ports (Cilium redirects the "
                      "listed TCP ports to its proxy)")
            return [], []
    ports = _ports(f, p, path, http is not None)
    return ports, http


def _ports(f: Fields, p: dict[str, Any], path: str, l7: bool) -> list[PolicyPort]:
    out: list[PolicyPort] = []
    for ppath, q in f.mappings(p, path, "ports"):
        f.known(q, ppath, ("port", "protocol", "endPort"))
        proto = f.string(q, ppath, "protocol", default="ANY")
        if proto not in _PORT_PROTOCOLS:
            f.problem(join(ppath, "protocol"), f"'{proto}' is not one of "
                      f"{', '.join(_PORT_PROTOCOLS)}")
            continue
        if l7 and proto not in ("TCP", "ANY"):
            f.problem(join(ppath, "protocol"), f"'{proto}': HTTP rules apply to TCP ports")
            continue
        if l7:
            proto = "TCP"  # HTTP rides TCP: ANY redirects the TCP port
            if "endPort" in q or q.get("port") in (None, "0"):
                f.problem(join(ppath, "endPort" if "endPort" in q else "port"),
                          "L7 rules need single ports (not a range or every port)")
                continue
        raw = q.get("port")
        port: int | str | None = None
        if raw is not None and not isinstance(raw, str):
            f.problem(join(ppath, "port"), f"expected a string, got {type_name(raw)} "
                      f"({raw!r}); quote it")
            continue
        if raw is not None and raw.isdigit():
            n = int(raw)
            if n > 65535:
                f.problem(join(ppath, "port"), f"{n} is out of range 0-65535")
                continue
            port = n or None
        elif raw is not None:
            if err := port_name_error(raw):
                f.problem(join(ppath, "port"), f"'{raw}' {err}")
                continue
            port = raw
        end = None
        if "endPort" in q:
            end = f.integer(q, ppath, "endPort", lo=0, hi=65535)
            if end is not None and not isinstance(port, int):
                f.problem(join(ppath, "endPort"), "requires a numeric port")
                continue
            if end is not None and isinstance(port, int) and end < port:
                f.problem(join(ppath, "endPort"), f"{end} is less than port {port}")
                continue
        for proto_one in (("TCP", "UDP", "SCTP") if proto == "ANY" else (proto,)):
            out.append(PolicyPort(protocol=proto_one, port=port,  # type: ignore[arg-type]
                                  end_port=end if end and end != port else None))
    if not p.get("ports"):  # toPorts without ports (absent or []): every port
        out.append(PolicyPort(protocol="TCP"))
        out.extend(PolicyPort(protocol=x) for x in ("UDP", "SCTP"))  # type: ignore[arg-type]
    return out


def _cilium_key(key: str) -> tuple[str, str]:
    """A Cilium label key -> (where: "pod", "ns", "reserved" or "sa", kemu key)."""
    source, sep, rest = key.partition(":")
    if sep and source in ("k8s", "any"):
        key = rest
    elif sep and "/" not in source:
        return "reserved" if source == "reserved" else "source", key
    if key == NS_KEY:
        return "ns", NS_NAME_LABEL
    if key.startswith(NS_LABEL_PREFIX):
        return "ns", key[len(NS_LABEL_PREFIX):]
    if key.startswith("io.cilium.k8s.policy."):
        return "sa", key
    return "pod", key


def _split_selector(f: Fields, d: dict[str, Any], path: str,
                    key: str) -> tuple[LabelSelector, LabelSelector | None]:
    """An endpoint selector -> (pod selector, namespace selector or None when it names no
    namespace label)."""
    raw = d.get(key)
    where = join(path, key)
    if not isinstance(raw, dict):
        return parse_selector(f, d, path, key), None
    parts: dict[str, dict[str, Any]] = {"pod": {}, "ns": {}}

    def place(k: Any, epath: str) -> str | None:
        if not isinstance(k, str):
            return "pod"
        kind, kemu_key = _cilium_key(k)
        if kind == "reserved":
            f.problem(epath, f"'{k}': reserved labels are not modelled in selectors (use "
                      "fromEntities/toEntities)")
            return None
        if kind in ("source", "sa"):
            f.problem(epath, f"label key '{k}' is not modelled")
            return None
        return kind

    labels = raw.get("matchLabels")
    if isinstance(labels, dict):
        for k, v in labels.items():
            kind = place(k, join(where, "matchLabels"))
            if kind is not None:
                kemu_key = _cilium_key(k)[1] if isinstance(k, str) else k
                parts[kind].setdefault("matchLabels", {})[kemu_key] = v
    elif labels is not None:
        parts["pod"]["matchLabels"] = labels
    exprs = raw.get("matchExpressions")
    if isinstance(exprs, list):
        for i, e in enumerate(exprs):
            k = e.get("key") if isinstance(e, dict) else None
            kind = place(k, f"{where}.matchExpressions[{i}].key") if k is not None else "pod"
            if kind is not None:
                e2 = dict(e)
                if isinstance(k, str):
                    e2["key"] = _cilium_key(k)[1]
                parts[kind].setdefault("matchExpressions", []).append(e2)
    elif exprs is not None:
        parts["pod"]["matchExpressions"] = exprs
    f.known(raw, where, ("matchLabels", "matchExpressions"))
    pod_sel = parse_selector(f, {key: parts["pod"]}, path, key)
    ns_sel = parse_selector(f, {key: parts["ns"]}, path, key) if parts["ns"] else None
    return pod_sel, ns_sel

