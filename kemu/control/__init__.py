"""The control plane: Kubernetes manifests -> the emulated cluster's model.

``load_cluster`` reads manifests (``manifests``), parses and validates them (``loader``,
``workloads``, ``selectors``), places and addresses everything (``ipam``) and returns a
``Cluster`` (``cluster``) whose EndpointSlices (``endpoints``) and DNS records (``dns``) follow
every edit.
"""

from kemu.control.cluster import Cluster, load_cluster

__all__ = ["Cluster", "load_cluster"]
