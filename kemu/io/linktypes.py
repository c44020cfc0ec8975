"""Link types: their numbers and names, and conversion of captured frames to Ethernet frames.

Owns: which link types kemu replays (:data:`SUPPORTED_LINKTYPES`), the wording used to refuse
the others, and :func:`to_ethernet`, which gives every frame of a capture a 14-byte Ethernet
header in place of its own link-layer header:

- Ethernet (1): kept byte for byte.
- Raw IP (101, and 12/14 as some systems write DLT_RAW), IPV4 (228), IPV6 (229): EtherType
  from the link type, for raw IP from the IP version nibble.
- BSD loopback NULL (0, family in the capturing host's byte order) and LOOP (108, network
  order): EtherType from the address family (2 -> IPv4; 24, 28, 30 -> IPv6).
- Linux cooked LINUX_SLL (113) and LINUX_SLL2 (276): EtherType from the protocol field (802.2
  and Novell 802.3 payloads become 802.3 length frames); source MAC from the link-layer address
  when it is 6 bytes long; destination MAC ff:ff:ff:ff:ff:ff for broadcast, the IPv4/IPv6
  multicast MAC of the destination address for multicast, else 00:00:00:00:00:00.

Invariants: the output holds only link type 1; frames that cannot be converted (too short for
their link header, not IP, unknown family or protocol) are left out and appended to
``damaged`` (after the input's own entries, in frame order) with a short stable reason, whose
``offset`` is the file offset of the frame's bytes; no per-frame Python work for any frame:
Ethernet frames are copied as they are and the others converted per link type with numpy.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kemu.io.frames import Capture, Damage, copy_segments

__all__ = [
    "ETHERNET",
    "LINKTYPE_NAMES",
    "SUPPORTED_DESCRIPTION",
    "SUPPORTED_LINKTYPES",
    "linktype_name",
    "to_ethernet",
    "unsupported_message",
]

NULL, ETHERNET, RAW, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2 = 0, 1, 101, 108, 113, 228, 229, 276
RAW_BSD = (12, 14)  # DLT_RAW as some BSDs number it, found in old pcap files

SUPPORTED_LINKTYPES: frozenset[int] = frozenset(
    {NULL, ETHERNET, RAW, *RAW_BSD, LOOP, LINUX_SLL, IPV4, IPV6, LINUX_SLL2})
"""Link types :func:`to_ethernet` converts; frames of any other link type are not replayed."""

SUPPORTED_DESCRIPTION = ("kemu replays Ethernet, Linux cooked (SLL/SLL2), raw IP and BSD loopback "
                         "captures")

LINKTYPE_NAMES: dict[int, str] = {
    0: "NULL", 1: "ETHERNET", 3: "AX25", 6: "IEEE802_5", 7: "ARCNET_BSD", 8: "SLIP", 9: "PPP",
    10: "FDDI", 12: "RAW", 14: "RAW", 50: "PPP_HDLC", 51: "PPP_ETHER", 100: "ATM_RFC1483",
    101: "RAW", 104: "C_HDLC", 105: "IEEE802_11", 107: "FRELAY", 108: "LOOP", 113: "LINUX_SLL",
    114: "LTALK", 117: "PFLOG", 119: "IEEE802_11_PRISM", 122: "IP_OVER_FC", 123: "SUNATM",
    127: "IEEE802_11_RADIOTAP", 129: "ARCNET_LINUX", 138: "APPLE_IP_OVER_IEEE1394",
    139: "MTP2_WITH_PHDR", 140: "MTP2", 141: "MTP3", 142: "SCCP", 143: "DOCSIS",
    144: "LINUX_IRDA", 163: "IEEE802_11_AVS", 165: "BACNET_MS_TP", 166: "PPP_PPPD",
    169: "GPRS_LLC", 177: "LINUX_LAPD", 187: "BLUETOOTH_HCI_H4", 189: "USB_LINUX", 192: "PPI",
    195: "IEEE802_15_4_WITHFCS", 196: "SITA", 197: "ERF", 201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    202: "AX25_KISS", 204: "PPP_WITH_DIR", 215: "IEEE802_15_4_NONASK_PHY", 220: "USB_LINUX_MMAPPED",
    227: "CAN_SOCKETCAN", 228: "IPV4", 229: "IPV6", 230: "IEEE802_15_4_NOFCS", 231: "DBUS",
    235: "DVB_CI", 239: "NFLOG", 240: "NETANALYZER", 241: "NETANALYZER_TRANSPARENT",
    242: "IPOIB", 247: "MPEG_2_TS", 249: "USBPCAP", 251: "BLUETOOTH_LE_LL", 253: "NETLINK",
    254: "BLUETOOTH_LINUX_MONITOR", 256: "BLUETOOTH_LE_LL_WITH_PHDR", 263: "PROFIBUS_DL",
    264: "PKTAP", 265: "EPON", 266: "IPMI_HPM_2", 270: "ZWAVE_R3", 276: "LINUX_SLL2",
    279: "NORDIC_BLE", 283: "IEEE802_15_4_TAP", 285: "DSA_TAG_BRCM", 288: "DSA_TAG_DSA",
    289: "DSA_TAG_EDSA", 292: "VSOCK", 293: "NORDIC_BLE", 297: "ETW",
}


def linktype_name(linktype: int) -> str:
    """The LINKTYPE_ name of ``linktype`` without its prefix, or "" when kemu does not know it."""
    return LINKTYPE_NAMES.get(linktype, "")


def unsupported_message(linktype: int) -> str:
    """The sentence kemu uses to refuse a capture of ``linktype``."""
    name = linktype_name(linktype)
    return (f"unsupported link type {linktype}{f' ({name})' if name else ''}; "
            f"{SUPPORTED_DESCRIPTION}")


_ETH_IPV4, _ETH_IPV6 = 0x0800, 0x86DD
_INET6_FAMILIES = (24, 28, 30)  # BSD AF_INET6 on NetBSD/OpenBSD, FreeBSD, Darwin
_SLL_BROADCAST, _SLL_MULTICAST = 1, 2


def _take(buf: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """``width`` bytes at each of ``starts`` as an (n, width) uint8 array."""
    if not len(starts):
        return np.zeros((0, width), dtype=np.uint8)
    return buf[starts[:, None] + np.arange(width, dtype=np.int64)]


def _be16(block: np.ndarray, at: int) -> np.ndarray:
    return block[:, at].astype(np.int64) << 8 | block[:, at + 1]


def to_ethernet(cap: Capture) -> Capture:
    """``cap`` with every frame as an Ethernet frame (``cap`` itself when all already are)."""
    lt = cap.linktypes
    if not len(lt) or bool(np.all(lt == ETHERNET)):
        return cap
    n = len(lt)
    buf = cap.buf
    off = cap.offsets.astype(np.int64)
    ln = cap.lengths.astype(np.int64)
    strip = np.zeros(n, dtype=np.int64)  # bytes of link header to remove
    etype = np.full(n, -1, dtype=np.int64)  # -1: an Ethernet frame, kept as it is
    dst = np.zeros((n, 6), dtype=np.uint8)
    src = np.zeros((n, 6), dtype=np.uint8)
    problem = np.zeros(n, dtype=np.int64)  # index into `reasons`, 0 = none
    reasons = [""]

    def fail(idx: np.ndarray, why: str) -> None:
        if len(idx):
            reasons.append(why)
            problem[idx] = len(reasons) - 1

    def too_short(idx: np.ndarray, need: int) -> np.ndarray:
        short = ln[idx] < need
        fail(idx[short], "frame too short for link header")
        return idx[~short]

    # Raw IP: the version nibble says which.
    idx = np.flatnonzero(np.isin(lt, (RAW, *RAW_BSD)))
    if len(idx):
        version = buf[off[idx]] >> 4
        etype[idx[version == 4]] = _ETH_IPV4
        etype[idx[version == 6]] = _ETH_IPV6
        fail(idx[(version != 4) & (version != 6)], "not an IP packet")
    etype[lt == IPV4] = _ETH_IPV4
    etype[lt == IPV6] = _ETH_IPV6

    # BSD loopback: a 4-byte address family, in the writer's byte order for NULL.
    idx = too_short(np.flatnonzero((lt == NULL) | (lt == LOOP)), 4)
    if len(idx):
        head = _take(buf, off[idx], 4)
        family = head.view("<u4")[:, 0].astype(np.int64)
        swapped = family > 0xFFFF
        family[swapped] = head[swapped].view(">u4")[:, 0]
        strip[idx] = 4
        v4, v6 = family == 2, np.isin(family, _INET6_FAMILIES)
        etype[idx[v4]] = _ETH_IPV4
        etype[idx[v6]] = _ETH_IPV6
        for fam in np.unique(family[~(v4 | v6)]).tolist():
            fail(idx[family == fam], f"unsupported address family {fam}")

    # Linux cooked captures, v1 and v2: where their fields sit.
    for linktype, hlen, at_proto, at_type, at_alen, at_addr, wide in (
        (LINUX_SLL, 16, 14, 0, 4, 6, True),
        (LINUX_SLL2, 20, 0, 10, 11, 12, False),
    ):
        idx = too_short(np.flatnonzero(lt == linktype), hlen)
        if not len(idx):
            continue
        head = _take(buf, off[idx], hlen)
        proto = _be16(head, at_proto)
        pkttype = _be16(head, at_type) if wide else head[:, at_type].astype(np.int64)
        alen = _be16(head, at_alen) if wide else head[:, at_alen].astype(np.int64)
        strip[idx] = hlen
        payload = ln[idx] - hlen
        llc = (proto == 0x0001) | (proto == 0x0004)  # Novell 802.3, 802.2 LLC: length field
        etype[idx] = np.where(llc, np.minimum(payload, 1500), proto)
        for value in np.unique(proto[(proto < 0x0600) & ~llc]).tolist():
            fail(idx[proto == value], f"unsupported SLL protocol 0x{value:04x}")
        mac6 = alen == 6
        src[idx[mac6]] = head[mac6, at_addr : at_addr + 6]
        dst[idx[pkttype == _SLL_BROADCAST]] = 0xFF
        multi = pkttype == _SLL_MULTICAST
        dst[idx[multi]] = (0x01, 0x00, 0x5E, 0, 0, 0)
        start = off[idx] + hlen
        v4 = multi & (proto == _ETH_IPV4) & (payload >= 20)
        if v4.any():
            group = _take(buf, start[v4] + 17, 3)
            group[:, 0] &= 0x7F
            dst[idx[v4], 3:] = group
        v6 = multi & (proto == _ETH_IPV6) & (payload >= 40)
        if v6.any():
            dst[idx[v6], :2] = 0x33
            dst[idx[v6], 2:] = _take(buf, start[v6] + 36, 4)

    good = problem == 0
    eth = etype < 0
    new_len = np.where(eth, ln, ln - strip + 14)[good]
    ends = np.cumsum(new_len)
    starts = ends - new_len
    out = np.zeros(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    g_eth = eth[good]
    copy_segments(out, starts + np.where(g_eth, 0, 14), buf, (off + strip)[good],
                  (ln - strip)[good])
    made = np.flatnonzero(~g_eth)
    if len(made):
        keep_idx = np.flatnonzero(good)[made]
        header = np.empty((len(made), 14), dtype=np.uint8)
        header[:, :6] = dst[keep_idx]
        header[:, 6:12] = src[keep_idx]
        header[:, 12] = etype[keep_idx] >> 8
        header[:, 13] = etype[keep_idx] & 0xFF
        out[starts[made][:, None] + np.arange(14, dtype=np.int64)] = header
    orig = cap.orig_lengths.astype(np.int64) + np.where(eth, 0, 14 - strip)
    damaged = list(cap.damaged)  # the reader's damage first, then this conversion's
    base = cap.file_offset or 0
    for i in np.flatnonzero(~good).tolist():
        damaged.append(Damage(int(cap.frame_numbers[i]), base + int(off[i]),
                              reasons[int(problem[i])]))
    return replace(
        cap,
        buf=out,
        offsets=starts,
        lengths=new_len.astype(np.int32),
        orig_lengths=np.clip(orig[good], 0, 2**31 - 1).astype(np.int32),
        ts_ns=cap.ts_ns[good],
        linktypes=np.full(len(starts), ETHERNET, dtype=np.int32),
        frame_numbers=cap.frame_numbers[good],
        damaged=damaged,
        file_offset=None,
    )
