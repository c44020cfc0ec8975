"""``kemu wireshark-profile``: the profile's files, where they go, and what tshark makes of the
demo's pcapng with it (no TCP analysis notes, kemu's columns, coloring rules, filters)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kemu.frontend import wireshark_cmd as ws
from kemu.frontend.cli import main

ROOT = Path(__file__).resolve().parents[1]
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed (scripts/setup.sh "
                                  "installs it)")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Wireshark configuration folder, the one kemu and tshark use (tshark 4.0
    honours WIRESHARK_CONFIG_DIR, else $XDG_CONFIG_HOME/wireshark)."""
    folder = tmp_path / "wireshark"
    folder.mkdir()
    monkeypatch.setenv("WIRESHARK_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo.pcapng"
    # --cold: first-packet floods too, so that every coloring rule has frames to color
    assert main(["replay", "-f", str(ROOT / "examples" / "cluster"), "-r",
                 str(ROOT / "examples" / "capture.pcap"), "-w", str(out), "--cold"]) == 0
    return out


def _tshark(config: Path, *args: str, profile: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(config))
    env.pop("XDG_CONFIG_HOME", None)
    cmd = [TSHARK, *(["-C", "kemu"] if profile else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def _problems(stderr: str) -> list[str]:
    """tshark's complaints about a profile (it says so on stderr and goes on)."""
    return [line for line in stderr.splitlines()
            if any(w in line for w in ("No such preference", "Error loading", "rror",
                                       "does not exist", "isn't a valid"))]


def test_default_folder_follows_wireshark(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.delenv("WIRESHARK_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert ws.config_dir() == tmp_path / "xdg" / "wireshark"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ws.config_dir() == tmp_path / "home" / ".config" / "wireshark"
    monkeypatch.setenv("WIRESHARK_CONFIG_DIR", str(tmp_path / "wcd"))
    assert ws.config_dir() == tmp_path / "wcd"


def test_writes_the_profile_and_says_how_to_use_it(config: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["wireshark-profile"]) == 0
    out = capsys.readouterr().out
    folder = config / "profiles" / "kemu"
    assert f"in {folder}" in out
    assert "Edit > Configuration Profiles" in out and "wireshark -C kemu" in out
    assert sorted(p.name for p in folder.iterdir()) == [
        "colorfilters", "dfilter_buttons", "dfilters", "preferences"]
    prefs = (folder / "preferences").read_text()
    assert "tcp.analyze_sequence_numbers: FALSE" in prefs
    assert '"Interface", "%Cus:frame.interface_name:0:R"' in prefs
    assert '"Comment", "%Cus:frame.comment:0:R",' in prefs
    assert prefs.index('"Comment"') < prefs.index('"Info"')
    colors = (folder / "colorfilters").read_text().splitlines()
    assert colors[2].startswith("@kemu: drop@")


def test_refuses_to_overwrite_unless_forced(config: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    folder = config / "profiles" / "kemu"
    folder.mkdir(parents=True)
    (folder / "preferences").write_text("# the user's own\n")
    assert main(["wireshark-profile"]) == 2
    err = capsys.readouterr().err
    assert "the profile exists (preferences)" in err and "--force" in err
    assert (folder / "preferences").read_text() == "# the user's own\n"
    assert main(["wireshark-profile", "--force"]) == 0
    assert "tcp.analyze_sequence_numbers" in (folder / "preferences").read_text()
    assert not list(folder.glob(".*part-*"))


def test_other_name_and_folder(config: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    assert main(["wireshark-profile", "--name", "k2"]) == 0
    assert (config / "profiles" / "k2" / "preferences").exists()
    assert "wireshark -C k2" in capsys.readouterr().out
    elsewhere = tmp_path / "somewhere" / "prof"
    assert main(["wireshark-profile", "--dir", str(elsewhere)]) == 0
    out = capsys.readouterr().out
    assert (elsewhere / "preferences").exists() and "copy" in out
    assert main(["wireshark-profile", "--name", "a/b"]) == 2


def test_colorfilters_keep_wireshark_defaults(tmp_path: Path) -> None:
    (tmp_path / "colorfilters").write_text(
        "# header\n@TCP@tcp@[1,2,3][4,5,6]\n!@Off@udp@[1,1,1][2,2,2]\n")
    text, used = ws.colorfilters((str(tmp_path / "missing"), str(tmp_path)))
    assert used == str(tmp_path / "colorfilters")
    lines = text.splitlines()
    assert lines[-2:] == ["@TCP@tcp@[1,2,3][4,5,6]", "!@Off@udp@[1,1,1][2,2,2]"]
    assert sum(line.startswith("@kemu") for line in lines) == len(ws.COLOR_RULES)
    text, used = ws.colorfilters((str(tmp_path / "missing"),))
    assert used is None and "@TCP@" not in text


def test_uat_quoting() -> None:
    assert ws._quote('a "b" \\c') == '"a \\x22b\\x22 \\x5cc"'


@needs_tshark
def test_tshark_with_the_profile(config: Path, demo: Path) -> None:
    assert main(["wireshark-profile"]) == 0
    # without the profile (an empty configuration): every hop's copy is a "retransmission"
    plain = _tshark(config, "-r", str(demo), "-Y", "tcp.analysis.flags", profile=False)
    assert plain.returncode == 0, plain.stderr
    assert len(plain.stdout.splitlines()) > 0
    notes = _tshark(config, "-r", str(demo), "-Y", "tcp.analysis.flags")
    assert notes.returncode == 0 and not _problems(notes.stderr), notes.stderr
    assert notes.stdout.splitlines() == []
    # kemu's columns are the default output's columns
    listing = _tshark(config, "-r", str(demo))
    assert listing.returncode == 0 and not _problems(listing.stderr), listing.stderr
    first = listing.stdout.splitlines()[0]
    assert "default/client/eth0" in first and "Outbound" in first
    assert any("DNAT 10.96.0.10:53 -> " in line and "Inbound" in line
               for line in listing.stdout.splitlines())
    fields = _tshark(config, "-r", str(demo), "-T", "fields", "-E", "separator=|",
                     "-e", "frame.interface_name", "-e", "frame.comment")
    rows = [line.split("|") for line in fields.stdout.splitlines()]
    assert rows[0] == ["default/client/eth0", ""]
    assert ["node1/cbr0", "bridge: to local device node1/cbr0; DROP no endpoints (REJECT)"] in rows


@needs_tshark
def test_tshark_coloring_rules_and_filters(config: Path, demo: Path) -> None:
    assert main(["wireshark-profile"]) == 0
    colored = _tshark(config, "--color", "-r", str(demo), "-T", "fields",
                      "-e", "frame.coloring_rule.name", "-e", "frame.comment")
    assert colored.returncode == 0 and not _problems(colored.stderr), colored.stderr
    rows = [line.split("\t") for line in colored.stdout.splitlines()]
    drops = [r for r in rows if r[0] == "kemu: drop"]
    assert len(drops) == 1 and "DROP no endpoints (REJECT)" in drops[0][1]
    assert any(r[0] == "kemu: copy not for this host" for r in rows)
    assert any(r[0] == "kemu: address translation" for r in rows)
    # every filter of the profile compiles (tshark refuses a bad one with exit 2)
    filters = [flt for _n, flt, _b, _f in ws.COLOR_RULES] + [flt for _l, flt, _c in ws.BUTTONS]
    for flt in filters:
        r = _tshark(config, "-r", str(demo), "-Y", flt)
        assert r.returncode == 0, (flt, r.stderr)
