"""``kemu wireshark-profile``: a Wireshark configuration profile for kemu's pcapng files.

A pcapng written by ``kemu replay -w`` holds every hop of every frame: one interface per
emulated device, a direction per packet (the EPB flags) and the decisions made there as the
packet's comment. Two things get in a reader's way with Wireshark's defaults:

- the columns: interface name, direction and comment are not among the default columns;
- TCP sequence analysis: Wireshark tracks a TCP connection by addresses and ports alone, over
  the whole file, so the copy of a segment seen at the next hop looks like a retransmission
  (and ACK copies like duplicate ACKs). Wireshark 4.0 has no preference that keeps this
  analysis per interface (``protocols.strict_conversation_tracking_heuristics`` only adds
  VLAN IDs for ICMP and IPv4 reassembly); later releases have a "Deinterlacing conversations
  key" (``protocols.conversation_deinterlacing_key``: interface, MAC, VLAN) that 4.0 rejects
  as unknown. The profile turns the analysis off (``tcp.analyze_sequence_numbers``, which
  relative sequence numbers and bytes in flight depend on) and TCP reassembly with it
  (reassembling a stream that holds each segment once per hop fails with "New fragment
  overlaps old data"), and lets DNS repeat a query ID without calling it a retransmission.

The profile's files: ``preferences`` (columns, TCP/DNS analysis, name resolution off),
``colorfilters`` (kemu's rules first, then Wireshark's global defaults when found),
``dfilter_buttons`` (filter buttons) and ``dfilters`` (saved display filters). Wireshark
reads profiles from ``$WIRESHARK_CONFIG_DIR`` (else ``$XDG_CONFIG_HOME/wireshark``, else
``~/.config/wireshark``; ``%APPDATA%\\Wireshark`` on Windows) + ``/profiles/NAME``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kemu.frontend.cli import EXIT_OK, Command

COLUMNS = (  # (title, Wireshark column format)
    ("No.", "%m"),
    ("Time", "%t"),
    ("Interface", "%Cus:frame.interface_name:0:R"),
    ("Direction", "%Cus:frame.packet_flags_direction:0:R"),
    ("Source", "%s"),
    ("Destination", "%d"),
    ("Protocol", "%p"),
    ("Length", "%L"),
    ("Comment", "%Cus:frame.comment:0:R"),
    ("Info", "%i"),
)

SETTINGS = (  # (preference, value, why)
    ("tcp.analyze_sequence_numbers", "FALSE",
     "every hop's copy of a segment would be flagged as a retransmission, dup ACK or "
     "out-of-order (Wireshark tracks a connection over the whole file, not per interface)"),
    ("tcp.desegment_tcp_streams", "FALSE",
     "reassembling a stream that holds each segment once per hop fails (\"New fragment "
     "overlaps old data\"); each hop's copy is dissected on its own instead"),
    ("dns.retransmission_timer", "0",
     "the same query seen at the next hop is not a retransmission"),
    ("nameres.mac_name", "FALSE", "emulated MACs have no vendor; show them as they are"),
    ("nameres.transport_name", "FALSE", "ports as numbers, as kemu's comments write them"),
    ("nameres.network_name", "FALSE", "addresses as numbers, as kemu's comments write them"),
)

# Comments of copies that end without being a drop: a flood's copy at a port that is not
# the destination's, an ARP or IP packet not for this host, a bridge's ingress port
_NOISE = ('frame.comment contains "DROP not our MAC" || '
          'frame.comment contains "DROP not addressed to this host" || '
          'frame.comment contains "DROP bridge: ingress port"')
DROP = f'frame.comment contains "DROP " && !({_NOISE})'
NAT = ('frame.comment contains "DNAT " || frame.comment contains "MASQUERADE" || '
       'frame.comment contains "un-DNAT" || frame.comment contains "un-SNAT"')

COLOR_RULES = (  # (name, filter, background, foreground) as Wireshark's 16-bit RGB
    ("kemu: drop", DROP, (65535, 49344, 49344), (32768, 0, 0)),
    ("kemu: copy not for this host", _NOISE, (65535, 65535, 65535), (40960, 40960, 40960)),
    ("kemu: leaves the cluster", 'frame.comment contains "leaves the cluster"',
     (65535, 61166, 49344), (4718, 10030, 11796)),
    ("kemu: address translation", NAT, (53456, 59367, 65535), (4718, 10030, 11796)),
    ("kemu: delivered", 'frame.comment contains "deliver to "', (53456, 65535, 53456),
     (4718, 10030, 11796)),
)

BUTTONS = (  # (label, filter, comment)
    ("drops", DROP, "kemu: copies that were dropped (not counting flood copies)"),
    ("NAT", NAT, "kemu: hops where addresses were translated"),
    ("left", 'frame.comment contains "leaves the cluster"',
     "kemu: packets that left the cluster through the gateway"),
    ("pods", 'frame.interface_name matches "^[^/]+/[^/]+/eth0$" && '
     '!(frame.interface_name matches "^ext/")',
     "kemu: the copies seen at pods' eth0 (where a path starts and ends)"),
)

GLOBAL_DIRS = ("/usr/share/wireshark", "/usr/local/share/wireshark",
               "/opt/homebrew/share/wireshark",
               "/Applications/Wireshark.app/Contents/Resources/share/wireshark",
               r"C:\Program Files\Wireshark")


def config_dir() -> Path:
    """Where Wireshark reads personal configuration (the variables it honours, in order)."""
    env = os.environ.get("WIRESHARK_CONFIG_DIR")
    if env:
        return Path(env)
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "Wireshark"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return Path(xdg if xdg else Path.home() / ".config") / "wireshark"


def _quote(text: str) -> str:
    """A UAT file's string field (``dfilter_buttons``): quotes and backslashes as \\xNN."""
    return '"' + "".join(f"\\x{ord(c):02x}" if c in '"\\' or ord(c) < 32 else c
                         for c in text) + '"'


def preferences() -> str:
    from kemu._version import __version__

    lines = [f"# Wireshark configuration profile for kemu {__version__}'s pcapng files, written "
             "by `kemu wireshark-profile`.",
             "# One interface per emulated device: a frame appears once per hop; the comment "
             "holds the decisions made there.",
             "", "# Columns: " + ", ".join(title for title, _fmt in COLUMNS),
             "gui.column.format:"]
    lines += [f'\t"{title}", "{fmt}"' + ("," if k < len(COLUMNS) - 1 else "")
              for k, (title, fmt) in enumerate(COLUMNS)]
    for name, value, why in SETTINGS:
        lines += ["", f"# {why}", f"{name}: {value}"]
    lines += ["", "# Wireshark releases newer than 4.0 can keep conversations apart per "
              "interface (Preferences > Protocols:", "# \"Deinterlacing conversations key\"); "
              "4.0 rejects the setting as unknown, so it is left to you:",
              "#protocols.conversation_deinterlacing_key: ...", ""]
    return "\n".join(lines)


def _rgb(c: tuple[int, int, int]) -> str:
    return "[" + ",".join(str(v) for v in c) + "]"


def colorfilters(global_dirs: tuple[str, ...] = GLOBAL_DIRS) -> tuple[str, str | None]:
    """kemu's coloring rules followed by Wireshark's global ones (a profile's colorfilters
    replaces them); returns (text, the global file used or None)."""
    lines = ["# DO NOT EDIT THIS FILE!  It was created by Wireshark",
             "# (written by `kemu wireshark-profile`: kemu's rules, then Wireshark's defaults)"]
    lines += [f"@{name}@{flt}@{_rgb(bg)}{_rgb(fg)}" for name, flt, bg, fg in COLOR_RULES]
    used = None
    for folder in global_dirs:
        path = Path(folder) / "colorfilters"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        lines += [line for line in text.splitlines() if line.startswith(("@", "!@"))]
        used = str(path)
        break
    return "\n".join(lines) + "\n", used


def dfilter_buttons() -> str:
    return "".join(f'"TRUE",{_quote(label)},{_quote(flt)},{_quote(comment)}\n'
                   for label, flt, comment in BUTTONS)


def dfilters() -> str:
    return "".join(f'"kemu {label}" {flt}\n' for label, flt, _comment in BUTTONS)


def profile_files(global_dirs: tuple[str, ...] = GLOBAL_DIRS) -> tuple[dict[str, str], str | None]:
    """File name -> text of the profile, and the global colorfilters file included."""
    colors, used = colorfilters(global_dirs)
    return {"preferences": preferences(), "colorfilters": colors,
            "dfilter_buttons": dfilter_buttons(), "dfilters": dfilters()}, used


def write_profile(folder: Path, force: bool = False,
                  global_dirs: tuple[str, ...] = GLOBAL_DIRS) -> tuple[list[Path], str | None]:
    """Write the profile's files into ``folder`` (made if missing); refuses to replace
    existing files unless ``force``. Each file is written under a temporary name first."""
    from kemu.errors import KemuError

    files, used = profile_files(global_dirs)
    if folder.exists() and not folder.is_dir():
        raise KemuError(f"{folder}: exists and is not a directory")
    existing = [name for name in files if (folder / name).exists()]
    if existing and not force:
        raise KemuError(f"{folder}: the profile exists ({', '.join(existing)}); "
                        "--force replaces its files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in files.items():
            path = folder / name
            tmp = folder / f".{name}.part-{os.getpid()}"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
            written.append(path)
    except OSError as err:
        raise KemuError(f"{folder}: cannot write the profile: {err.strerror or err}") from None
    return written, used


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="kemu",
                   help="profile name (default kemu): the folder under Wireshark's profiles")
    p.add_argument("--dir", metavar="DIR",
                   help="write the profile into DIR (default: $WIRESHARK_CONFIG_DIR, else "
                        "$XDG_CONFIG_HOME/wireshark, else ~/.config/wireshark, then "
                        "/profiles/NAME)")
    p.add_argument("--force", action="store_true", help="replace an existing profile's files")


def run(args: argparse.Namespace) -> int:
    from kemu.errors import KemuError

    if not args.name or args.name in (".", "..") or any(c in args.name for c in "/\\"):
        raise KemuError(f"--name {args.name!r}: a profile name is one folder name")
    folder = Path(args.dir) if args.dir else config_dir() / "profiles" / args.name
    written, used = write_profile(folder, args.force)
    name = folder.name
    print(f"wrote Wireshark profile {name!r} in {folder}:")
    for path in written:
        print(f"  {path.name}")
    if used is None:
        print("  (colorfilters: kemu's rules only; Wireshark's global coloring rules were not "
              "found)")
    standard = folder.parent.name == "profiles" and folder.parent.parent.resolve() == \
        config_dir().resolve()
    if standard:
        print(f"Select it in Wireshark with Edit > Configuration Profiles (or click 'Profile' "
              f"in the status bar), or start it with: wireshark -C {name} -r OUT.pcapng "
              f"(tshark -C {name} too)")
    else:
        print(f"Wireshark looks for profiles in {config_dir() / 'profiles'}: copy {folder} "
              f"there (or set WIRESHARK_CONFIG_DIR to the folder holding 'profiles'), then "
              f"select it with Edit > Configuration Profiles or wireshark -C {name}")
    sys.stdout.flush()
    return EXIT_OK


WIRESHARK_PROFILE = Command(
    "wireshark-profile", "write a Wireshark configuration profile for kemu's pcapng files "
    "(columns: interface, direction, comment; no false TCP retransmissions)", configure, run)
