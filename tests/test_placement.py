"""Where replayed frames enter (``place_frames``, pure and compiled): against a brute-force
per-frame oracle on random frames and owner tables, and on the example cluster."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kemu.frontend import placement as P

IMPLS = P.implementations()


def oracle(frames: list[bytes], own: dict[int, tuple[int, int]], macs: dict[int, int],
           gateway: int) -> tuple[list[int], list[int]]:
    """One frame at a time: IPv4 source (ARP sender) owner, else source MAC owner."""
    ifaces, whys = [], []
    for f in frames:
        if len(f) < 14:
            ifaces.append(-1)
            whys.append(1)
            continue
        et = int.from_bytes(f[12:14], "big")
        ip = None
        if et == 0x0800 and len(f) >= 34:
            ip, arp = int.from_bytes(f[26:30], "big"), False
        elif et == 0x0806 and len(f) >= 42:
            ip, arp = int.from_bytes(f[28:32], "big"), True
        iface = -1
        if ip is not None and ip in own:
            iface = own[ip][1 if arp else 0]
        if iface < 0:
            iface = macs.get(int.from_bytes(f[6:12], "big"), -1)
        why = 0
        if iface < 0:
            iface, why = (gateway, 0) if gateway >= 0 else (-1, 2)
        ifaces.append(iface)
        whys.append(why)
    return ifaces, whys


IPS = [0x0A000001, 0x0A000002, 0xAC120002, 0xFFFFFFFF, 0]
MACS = [0x020000000001, 0x020000000002, 0xFFFFFFFFFFFF]


def frame_st() -> st.SearchStrategy[bytes]:
    head = st.tuples(st.sampled_from(MACS + [0x0A0B0C0D0E0F]),
                     st.sampled_from([0x0800, 0x0806, 0x86DD, 0x0801]),
                     st.sampled_from(IPS + [0x01020304]), st.integers(0, 80))

    def build(t: tuple[int, int, int, int]) -> bytes:
        mac, et, ip, size = t
        f = bytearray(max(size, 0))
        pad = bytearray(60)
        pad[6:12] = mac.to_bytes(6, "big")
        pad[12:14] = et.to_bytes(2, "big")
        pad[26:30] = ip.to_bytes(4, "big")
        pad[28:32] = ip.to_bytes(4, "big") if et == 0x0806 else pad[28:32]
        f[:] = pad[:size] + bytes(max(0, size - 60))
        return bytes(f)

    return head.map(build)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(frame_st(), max_size=40),
       owners=st.dictionaries(st.sampled_from(IPS), st.tuples(st.integers(0, 9),
                                                              st.integers(0, 9))),
       macs=st.dictionaries(st.sampled_from(MACS), st.integers(0, 9)),
       gateway=st.sampled_from([-1, 7]))
def test_placement_equals_a_per_frame_oracle(frames: list[bytes], owners: dict,
                                             macs: dict, gateway: int) -> None:
    gap = 5
    lengths = np.array([len(f) for f in frames], np.int32)
    offsets = (np.cumsum(lengths + gap) - lengths).astype(np.int64)
    buf = np.zeros(int(offsets[-1] + lengths[-1]) + 3 if frames else 3, np.uint8)
    for o, f in zip(offsets.tolist(), frames, strict=True):
        buf[o:o + len(f)] = np.frombuffer(f, np.uint8)
    own_ip = np.array(sorted(owners), np.int64)
    own_if = np.array([owners[k][0] for k in sorted(owners)], np.int32)
    own_l2 = np.array([owners[k][1] for k in sorted(owners)], np.int32)
    mac_keys = np.array(sorted(macs), np.int64)
    mac_ifs = np.array([macs[k] for k in sorted(macs)], np.int32)
    want = oracle(frames, owners, macs, gateway)
    for name, mod in IMPLS.items():
        iface, why = mod.place_frames(buf, offsets, lengths, own_ip, own_if, own_l2, mac_keys,
                                      mac_ifs, gateway)
        assert (iface.tolist(), why.tolist()) == want, name


@pytest.mark.parametrize("name", sorted(IMPLS))
def test_frames_outside_the_buffer_are_refused(name: str) -> None:
    z64, z32 = np.zeros(0, np.int64), np.zeros(0, np.int32)
    with pytest.raises(ValueError, match="frame 1 lies outside the buffer"):
        IMPLS[name].place_frames(np.zeros(100, np.uint8), np.array([0, 90], np.int64),
                                 np.array([60, 60], np.int32), z64, z32, z32, z64, z32, -1)
    with pytest.raises(ValueError, match="different lengths"):
        IMPLS[name].place_frames(np.zeros(100, np.uint8), np.array([0], np.int64),
                                 np.array([60, 60], np.int32), z64, z32, z32, z64, z32, -1)
