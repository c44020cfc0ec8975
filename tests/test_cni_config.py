"""``spec.cni`` of the Cluster document (kemu.control.cni): names, options, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from kemu.control import load_cluster
from kemu.control.cni import BUILT, NAMES, OPTIONS
from kemu.errors import ManifestError


def cluster_doc(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kemu.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "c"},
            "spec": {"nodes": [{"name": "n1"}, {"name": "n2"}], **spec}}


def problems(spec: dict[str, Any]) -> list[str]:
    with pytest.raises(ManifestError) as err:
        load_cluster(cluster_doc(spec))
    return [str(p) for p in err.value.problems]


def test_default_is_flannel_host_gw() -> None:
    c = load_cluster(cluster_doc({})).config
    assert (c.cni.name, c.mode) == ("flannel", "host-gw")


@pytest.mark.parametrize("form", ["flannel", {"name": "flannel"}])
def test_flannel_by_name_or_mapping(form: Any) -> None:
    assert load_cluster(cluster_doc({"cni": form, "mode": "vxlan"})).config.mode == "vxlan"


def test_flannel_backend_option_is_spec_mode() -> None:
    c = load_cluster(cluster_doc({"cni": {"name": "flannel", "backend": "vxlan"}})).config
    assert c.mode == "vxlan" and c.cni.get("backend") == "vxlan"
    out = problems({"cni": {"name": "flannel", "backend": "vxlan"}, "mode": "host-gw"})
    assert any("spec.cni.backend" in p and "contradicts spec.mode" in p for p in out)


def test_unknown_name_option_and_value_are_named() -> None:
    out = problems({"cni": "calico"})
    assert any("spec.cni.name" in p and "'calico' is not one of" in p for p in out)
    out = problems({"cni": {"name": "flannel", "backnd": "vxlan"}})
    assert any("spec.cni" in p and "unknown field 'backnd'" in p and "backend" in p for p in out)
    out = problems({"cni": {"name": "flannel", "backend": "udp"}})
    assert any("spec.cni.backend" in p and "'udp' is not one of" in p for p in out)
    out = problems({"cni": 3})
    assert any("spec.cni" in p and "expected a CNI name" in p for p in out)
    out = problems({"cni": {"backend": "vxlan"}})
    assert any("spec.cni.name" in p and "required" in p for p in out)


@pytest.mark.parametrize("name", NAMES[1:])
def test_modes_not_built_are_refused_not_emulated_as_flannel(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mode is built today: each in turn pretends not to be, and is refused."""
    from kemu.control import cni

    monkeypatch.setattr(cni, "BUILT", cni.BUILT - {name})
    out = problems({"cni": name})
    assert any("spec.cni" in p and "not modelled yet" in p and name in p for p in out)


def test_every_mode_has_an_option_schema() -> None:
    assert set(OPTIONS) == set(NAMES) and BUILT <= set(NAMES)
