"""The ``kemu bench`` harness: kemu measured against its peers on this machine.

Owns the ``kemu bench`` command (``kemu.bench.command``, the ``BENCH`` entry of
``kemu.frontend.cli.COMMANDS``), the measurements and their report, the synthetic workloads
they drive (``kemu.bench.workloads``: clusters, the cluster mix, churn, route tables) and the
peers kemu is compared with (``kemu.bench.peers``: a Scapy-object pipeline, pytricia, the Linux
kernel in network namespaces). The pytest-benchmark suites under ``bench/`` use the same
workloads and peers.

Nothing in ``kemu`` outside this package imports it: ``replay``, ``trace`` and the Python API
run without it (and ``kemu --help`` names the command only through ``COMMANDS``).
"""
