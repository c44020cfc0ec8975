"""Flow-sharded replay (#21, docs/SHARDING.md): ``kemu replay --workers N`` and
``--scheduler`` give the same bytes as one process, on both backends.

- the shard key: both twins equal (``placement`` room and ``kemu.frontend.placement``), and
  the frames of one connection share it: both directions, DNAT'd replies (S-4), masqueraded
  replies (S-7), ICMP errors by the header they quote, fragments by their first fragment;
- byte-identical pcapng and flow log for N = 1, 2, 4, 8 on examples/capture.pcap, a
  cluster-mix and a churn capture (``kemu.bench.workloads``), with a process pool, with
  ``distributed.LocalCluster`` and with a ``dask scheduler`` and two ``dask worker``
  processes started here;
- one index pass (the coordinator's): every frame in exactly one shard, by its key; a
  worker's frames are read by byte offset (the bytes the capture has), a capture of another
  link type (raw IP) converted in the worker as in one process;
- the merge streams (windows smaller than a part), parts are always removed, options a
  sharded replay does not take are refused in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kemu._backend import IMPLEMENTATIONS
from kemu.control.cluster import load_cluster
from kemu.frontend import placement
from kemu.frontend.api import EmulatedCluster
from kemu.frontend.replay import ReplayOptions, replay
from kemu.frontend.shard import BUCKETS, Index, replay_sharded, shard_buckets, shard_frames
from kemu.io import merge
from kemu.io.capture import read_capture

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples"
FAST = "cython" in IMPLEMENTATIONS
MIX_FRAMES = 6000 if FAST else 1500
CHURN_FLOWS = 1500 if FAST else 400


# -- captures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (manifests, capture): the example, a cluster mix and a churn capture."""
    from kemu.bench import workloads as W
    from kemu.compiler.compile import compile_cluster

    d = tmp_path_factory.mktemp("shard")
    docs = W.synthetic_cluster(3, 60, 12)
    manifests = d / "cluster.json"
    manifests.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    t = compile_cluster(load_cluster(docs))
    W.write_pcap(d / "mix.pcap", W.repeat_workload(W.cluster_mix(t, 400, MIX_FRAMES),
                                                   MIX_FRAMES))
    churn = W.churn(t, CHURN_FLOWS, warm_flows=100)
    W.write_pcap(d / "churn.pcap", W.repeat_workload(churn, len(churn) + 200))
    return {"example": (EXAMPLE / "cluster", EXAMPLE / "capture.pcap"),
            "mix": (manifests, d / "mix.pcap"), "churn": (manifests, d / "churn.pcap")}


def _one(manifests: Path, cap: Path, out: Path, backend: str, **kw: Any) -> dict:
    """A single-process replay (today's path): its summary without times."""
    emu = EmulatedCluster(load_cluster(str(manifests)), backend=backend, respond=False,
                          icmp_errors=False)
    s = replay(emu, cap, out / "one.pcapng", out / "one.jsonl", ReplayOptions(**kw))
    return _plain(s.to_dict())


def _plain(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("seconds", "pps", "sharded")}


def _same(out: Path, name: str) -> None:
    for ext in ("pcapng", "jsonl"):
        one = (out / f"one.{ext}").read_bytes()
        got = (out / f"{name}.{ext}").read_bytes()
        assert got == one, f"{name}.{ext} differs from the single-process {ext}"
    assert not [p for p in os.listdir(out) if p.startswith(".kemu-parts-") or ".part-" in p]


# -- the shard key ----------------------------------------------------------------------------

def _tables(manifests: Path) -> placement.ShardTables:
    return placement.shard_tables(EmulatedCluster(load_cluster(str(manifests))).tables)


def _keys(backend: str, cap: Any, tb: placement.ShardTables) -> tuple[np.ndarray, np.ndarray]:
    impl = placement.implementations()[backend]
    return impl.shard_keys(cap.buf, cap.offsets, cap.lengths, tb, {})


@pytest.mark.parametrize("name", ["example", "mix", "churn"])
def test_shard_keys_twins_equal(captures: dict, name: str) -> None:
    manifests, path = captures[name]
    cap = read_capture(path)
    tb = _tables(manifests)
    results = {b: _keys(b, cap, tb) for b in IMPLEMENTATIONS}
    ref_k, ref_u = results["python"]
    for k, u in results.values():
        assert np.array_equal(k, ref_k) and np.array_equal(u, ref_u)
    # the compiled memo by 5-tuple (a small one: slots are overwritten) changes nothing,
    # on a first pass (filling it) and a second (hits)
    for b in IMPLEMENTATIONS:
        impl = placement.implementations()[b]
        memo = np.zeros(3 << 6, np.uint64)
        for _ in range(2):
            k, u = impl.shard_keys(cap.buf, cap.offsets, cap.lengths, tb, {}, memo)
            assert np.array_equal(k, ref_k) and np.array_equal(u, ref_u)
    # the keys spread: the shards of 4 each get frames
    assert len(np.unique(ref_k % 4)) == 4 or name == "example"


def test_example_connections_share_a_key(backend: str) -> None:
    """examples/capture.pcap (frame numbers): DNS to a ClusterIP and the CoreDNS pod's reply
    (1, 2: DNAT, S-4), a TCP connection through a ClientIP-affinity Service (3-9, S-8), a
    ping and its reply (10, 11), a NodePort connection and the pod's reply to the
    masquerade address (12, 13: S-7)."""
    cap = read_capture(EXAMPLE / "capture.pcap")
    k, unc = _keys(backend, cap, _tables(EXAMPLE / "cluster"))
    assert k[0] == k[1]
    assert len(set(k[2:9].tolist())) == 1
    assert k[9] == k[10]
    assert k[11] == k[12]
    assert not unc.any()


def _eth(ip: bytes) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip


def _ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 7, frag: int = 0
          ) -> bytes:
    a = socket.inet_aton
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto,
                       0, a(src), a(dst)) + payload


def _frames(*frames: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    buf = np.frombuffer(b"".join(frames), np.uint8).copy()
    lengths = np.array([len(f) for f in frames], np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return buf, offsets, lengths


def test_icmp_errors_and_fragments_follow_their_flow(backend: str) -> None:
    """An ICMP error keys by the header it quotes; fragments after the first by their
    datagram's first fragment, across chunks (the table of open datagrams); a fragment
    whose first one was not seen is uncertain. Pod addresses of examples/cluster."""
    tb = _tables(EXAMPLE / "cluster")
    impl = placement.implementations()[backend]
    udp = struct.pack("!HHHH", 40000, 9999, 8, 0)
    flow = _eth(_ipv4("10.244.0.4", "10.244.2.4", 17, udp))
    back = _eth(_ipv4("10.244.2.4", "10.244.0.4", 17, struct.pack("!HHHH", 9999, 40000, 8, 0)))
    quoted = _ipv4("10.244.0.4", "10.244.2.4", 17, udp)
    err = _eth(_ipv4("10.244.2.4", "10.244.0.4", 1, struct.pack("!BBHI", 3, 3, 0, 0) + quoted))
    first = _eth(_ipv4("10.244.0.4", "10.244.2.4", 17, udp + b"x" * 16, ident=99,
                       frag=0x2000))
    middle = _eth(_ipv4("10.244.0.4", "10.244.2.4", 17, b"y" * 24, ident=99, frag=0x2003))
    last = _eth(_ipv4("10.244.0.4", "10.244.2.4", 17, b"z" * 8, ident=99, frag=6))
    orphan = _eth(_ipv4("10.244.0.4", "10.244.2.4", 17, b"z" * 8, ident=5, frag=6))
    frags: dict = {}
    k1, u1 = impl.shard_keys(*_frames(flow, back, err, first, middle), tb, frags)
    k2, u2 = impl.shard_keys(*_frames(last, orphan), tb, frags)  # the next chunk
    assert len(set(k1.tolist()) | {int(k2[0])}) == 1
    assert not u1.any() and u2.tolist() == [0, 1]
    assert frags == {}  # the datagram is complete: forgotten
    twin_k, twin_u = placement.shard_keys(*_frames(flow, back, err, first, middle), tb, {})
    assert np.array_equal(twin_k, k1) and np.array_equal(twin_u, u1)


def test_uncertain_frames(backend: str) -> None:
    """A pod's connection to a NodePort may be masqueraded (its reply then comes to the
    node's address and keys by port): uncertain; the same from an external host keys by
    the port its reply keeps (S-7): certain, and equal to the reply's key."""
    tb = _tables(EXAMPLE / "cluster")
    impl = placement.implementations()[backend]
    tcp = struct.pack("!HHIIHHHH", 45000, 30080, 0, 0, 0x5002, 0, 0, 0)
    from_pod = _eth(_ipv4("10.244.0.2", "172.18.0.2", 6, tcp))
    from_ext = _eth(_ipv4("172.18.0.100", "172.18.0.2", 6, tcp))
    reply = _eth(_ipv4("10.244.0.4", "10.244.0.1", 6,
                       struct.pack("!HHIIHHHH", 8080, 45000, 0, 0, 0x5012, 0, 0, 0)))
    k, u = impl.shard_keys(*_frames(from_pod, from_ext, reply), tb, {})
    assert u.tolist() == [1, 0, 0]
    assert k[1] == k[2]


# -- byte identity ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["example", "mix", "churn"])
def test_process_pool_identical(captures: dict, name: str, backend: str,
                                tmp_path: Path) -> None:
    manifests, cap = captures[name]
    one = _one(manifests, cap, tmp_path, backend)
    model = load_cluster(str(manifests))
    for n in (1, 2, 4, 8):
        seen: list[dict[int, int]] = []
        s = replay_sharded(model, cap, tmp_path / f"w{n}.pcapng", tmp_path / f"w{n}.jsonl",
                           ReplayOptions(), workers=n, backend=backend, progress=seen.append)
        _same(tmp_path, f"w{n}")
        assert _plain(s.to_dict()) == one
        assert s.workers == n and s.cross_shard == 0
        # every worker's frames shown (the last report of each is its shard's count)
        assert seen and sum(seen[-1].values()) == s.packets and len(seen[-1]) == n


def test_one_index_pass(captures: dict, tmp_path: Path, backend: str) -> None:
    """The coordinator's index: each frame in exactly one shard (its key's), with ``limit``;
    each worker's frames are the capture's bytes at their offsets, in capture order."""
    manifests, cap = captures["mix"]
    emu = EmulatedCluster(load_cluster(str(manifests)), backend=backend)
    whole = read_capture(cap)
    limit = len(whole) - 5
    keys, _ = _keys(backend, whole, placement.shard_tables(emu.tables))
    index = Index(emu.tables, str(tmp_path), 3, limit, emu.backend)
    index.run(str(cap))
    seen = []
    for k in range(3):
        got = list(shard_frames(str(cap), str(tmp_path), k))
        numbers = np.concatenate([c.frame_numbers for c in got])
        assert len(numbers) == index.frames[k] > 0
        assert np.all(np.diff(numbers) > 0)
        assert np.all(shard_buckets(3)[keys[numbers - 1] % BUCKETS] == k)
        for c in got:
            for i in range(0, len(c), 97):
                assert c.frame(i) == whole.frame(int(c.frame_numbers[i]) - 1)
        seen.append(numbers)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(1, limit + 1))
    # segments are removed as they are read, the ends stay
    assert sorted(os.listdir(tmp_path)) == ["end-0", "end-1", "end-2"]


def test_worker_maps_windows_not_the_capture(captures: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """#21 memory: a worker maps only the part of the capture each segment spans (a map of
    the whole file kept every page it touched resident: 7.6 GB of a 100M-frame capture),
    and the frames read through those windows are the capture's."""
    manifests, cap = captures["mix"]
    emu = EmulatedCluster(load_cluster(str(manifests)))
    monkeypatch.setattr(Index, "WINDOW", 1)
    index = Index(emu.tables, str(tmp_path), 2, 0, emu.backend)
    index.run(str(cap))
    whole = read_capture(cap)
    size = os.path.getsize(cap)
    got = list(shard_frames(str(cap), str(tmp_path), 1))
    assert len(got) >= 2  # (a window is at least 64 KiB: replay's reader's floor)
    for c in got:
        assert len(c.buf) <= (64 << 10) + 2 * 4096 < size
        for i in range(0, len(c), 31):
            assert c.frame(i) == whole.frame(int(c.frame_numbers[i]) - 1)
    assert sum(len(c) for c in got) == index.frames[1]


def test_raw_ip_capture_identical(tmp_path: Path, backend: str) -> None:
    """A capture of raw IP frames (link type 101): the workers convert their frames as one
    process does; the same bytes for N = 1 and 3."""
    whole = read_capture(EXAMPLE / "capture.pcap")
    ip = [whole.frame(i)[14:] for i in range(len(whole))
          if whole.frame(i)[12:14] == b"\x08\x00"]
    raw = tmp_path / "raw.pcap"
    with open(raw, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        for i, b in enumerate(ip):
            f.write(struct.pack("<IIII", 1_700_000_000 + i, 0, len(b), len(b)) + b)
    one = _one(EXAMPLE / "cluster", raw, tmp_path, backend)
    for n in (1, 3):
        s = replay_sharded(load_cluster(str(EXAMPLE / "cluster")), raw,
                           tmp_path / f"w{n}.pcapng", tmp_path / f"w{n}.jsonl",
                           ReplayOptions(), workers=n, backend=backend)
        assert _plain(s.to_dict()) == one and s.packets == len(ip)
        _same(tmp_path, f"w{n}")


def test_limit_and_cli(captures: dict, tmp_path: Path, backend: str) -> None:
    """``kemu replay --workers 3 --limit``: the same bytes and summary as one process."""
    manifests, cap = captures["churn"]
    one = _one(manifests, cap, tmp_path, backend, limit=777)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "kemu", "replay", "-f", str(manifests), "-r",
                        str(cap), "-w", str(tmp_path / "cli.pcapng"), "--flows",
                        str(tmp_path / "cli.jsonl"), "--workers", "3", "--limit", "777",
                        "--backend", backend, "--json"],
                       env=env, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["sharded"]["workers"] == 3
    assert _plain(got) == one
    _same(tmp_path, "cli")


def test_refused_options(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "kemu", "replay", "-f", str(EXAMPLE / "cluster"), "-r",
            str(EXAMPLE / "capture.pcap"), "-w", str(tmp_path / "o.pcapng"), "--workers", "2"]
    for extra, word in ((["--respond"], "--respond"), (["--loop", "2"], "--loop"),
                        (["--map", "10.0.0.5=default/client"], "--map")):
        p = subprocess.run(base + extra, env=env, capture_output=True, text=True,
                           timeout=120, check=False)
        assert p.returncode == 2, p.stderr
        assert word in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_merge_streams_in_windows(captures: dict, tmp_path: Path, monkeypatch:
                                  pytest.MonkeyPatch) -> None:
    """Windows of a few items (far fewer than a part holds): the same bytes."""
    manifests, cap = captures["mix"]
    backend = sorted(IMPLEMENTATIONS)[0]
    _one(manifests, cap, tmp_path, backend, limit=600)
    monkeypatch.setattr(merge, "WINDOW", 7)
    replay_sharded(load_cluster(str(manifests)), cap, tmp_path / "w.pcapng",
                   tmp_path / "w.jsonl", ReplayOptions(limit=600), workers=3, backend=backend)
    _same(tmp_path, "w")


# -- Dask -------------------------------------------------------------------------------------

def test_local_cluster_identical(captures: dict, tmp_path: Path, backend: str) -> None:
    distributed = pytest.importorskip("distributed")
    manifests, cap = captures["mix"]
    one = _one(manifests, cap, tmp_path, backend)
    model = load_cluster(str(manifests))
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        for n in (2, 4):
            seen: list[dict[int, int]] = []
            s = replay_sharded(model, cap, tmp_path / f"d{n}.pcapng",
                               tmp_path / f"d{n}.jsonl", ReplayOptions(), workers=n,
                               scheduler=client, backend=backend, progress=seen.append)
            _same(tmp_path, f"d{n}")
            assert _plain(s.to_dict()) == one
            assert seen and set(seen[-1]) <= set(range(n))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dask_scheduler_and_workers(captures: dict, tmp_path: Path, backend: str) -> None:
    """``kemu replay --scheduler tcp://127.0.0.1:PORT`` against a ``dask scheduler`` and
    two ``dask worker`` processes started here (killed in the end, nothing left)."""
    pytest.importorskip("distributed")
    dask = shutil.which("dask") or str(Path(sys.executable).parent / "dask")
    if not os.path.exists(dask):
        pytest.fail("the dask command is not installed (pip install 'kemu[dask]')")
    manifests, cap = captures["churn"]
    one = _one(manifests, cap, tmp_path, backend)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    work = tmp_path / "dask"
    work.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", ":0", "--no-show"], env=env, cwd=work,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        for _ in range(2):
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard", "--local-directory", str(work)], env=env, cwd=work,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_workers(address, 2)
        p = subprocess.run([sys.executable, "-m", "kemu", "replay", "-f", str(manifests), "-r",
                            str(cap), "-w", str(tmp_path / "s.pcapng"), "--flows",
                            str(tmp_path / "s.jsonl"), "--scheduler", address, "--backend",
                            backend, "--json"],
                           env=env, capture_output=True, text=True, timeout=300, check=False)
        assert p.returncode == 0, p.stderr
        got = json.loads(p.stdout)
        assert got["sharded"]["workers"] == 2  # the cluster's worker count
        assert _plain(got) == one
        shutil.rmtree(work)
        _same(tmp_path, "s")
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=20)
    assert all(proc.poll() is not None for proc in procs)


def _wait_workers(address: str, n: int, timeout: float = 60) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    with Client(address, timeout="30s") as client:
        while len(client.scheduler_info().get("workers", {})) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"{n} dask workers did not join {address} in {timeout} s")
            time.sleep(0.2)
