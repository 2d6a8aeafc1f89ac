"""The AV device probe on fixture trees (Linux sysfs/procfs) and captured PowerShell output.

The Linux trees under ``tests/fixtures/devices/linux-*`` mimic sysfs with relative
symlinks (class entries point into ``/sys/devices``, ``device`` links point to the USB
interface), so each test copies a tree and changes what the case needs: unplugging,
disconnecting, breaking a file. The Windows files are Get-PnpDevice output as Windows
PowerShell 5.1 prints it (see ``tests/fixtures/devices/README.md``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import wire
from agent.config import AgentConfig, DeviceExpectation, SpoolConfig, parse_config
from agent.devices import Device, Inventory, ReadFailure
from agent.devices.expect import evaluate, match_names, unique_labels
from agent.devices.linux import (
    edid_monitor_name,
    parse_cards,
    parse_eld,
    parse_pcm,
    read_linux,
)
from agent.devices.windows import ARGV, parse_pnp_json, read_windows
from agent.probes import REGISTRY, ProbeContext, run_probe
from agent.probes import devices as devices_probe

FIXTURES = Path(__file__).parent / "fixtures" / "devices"
WINDOWS = FIXTURES / "windows"
# Git on Windows checks symlinks out as text files: the sysfs trees need a POSIX checkout.
posix_trees = pytest.mark.skipif(os.name == "nt", reason="fixture trees use symlinks")

def expectations(**kinds: int | list[str]) -> tuple[DeviceExpectation, ...]:
    """DeviceExpectation tuples the way config.py builds them from YAML."""
    out = []
    for kind, value in kinds.items():
        if isinstance(value, list):
            out.append(DeviceExpectation(kind, len(value), tuple(value)))
        else:
            out.append(DeviceExpectation(kind, value))
    return tuple(out)


ROOM = expectations(camera=1, microphone=1, speaker=1, display=2)


def make_ctx(tmp_path: Path, *, root: Path | None = None, platform: str = "linux",
             runner: Callable[[list[str], float], str] | None = None,
             devices: tuple[DeviceExpectation, ...] = ()) -> ProbeContext:
    config = AgentConfig(site="hn-01", province="ha-noi",
                         spool=SpoolConfig(path=tmp_path / "spool.db"), devices=devices)
    ctx = ProbeContext(config, fs_root=str(root or tmp_path), platform=platform)
    if runner is not None:
        ctx.run_command = runner
    return ctx


def tree(tmp_path: Path, name: str) -> Path:
    """A private copy of a fixture tree, symlinks kept as symlinks."""
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest, symlinks=True)
    return dest


def captured(name: str) -> Callable[[list[str], float], str]:
    """A run_command that prints a captured file, decoded the way run_command decodes."""
    text = (WINDOWS / name).read_bytes().decode("utf-8", "replace")

    def run(argv: list[str], timeout: float) -> str:
        return text

    return run


def run(ctx: ProbeContext) -> wire.ProbeReport:
    return run_probe(REGISTRY["devices"], ctx, 10.0)


def rows(report: wire.ProbeReport, metric: str) -> dict[tuple[str, ...], float]:
    return dict(report.metrics.get(metric, []))


def names(inventory: Inventory, kind: str) -> list[str]:
    return [d.name for d in inventory.devices if d.kind == kind]


# ---------------------------------------------------------------------------------------
# Linux


@posix_trees
def test_linux_healthy_room_reads_each_device_once(tmp_path: Path) -> None:
    """The bridge room: a UVC camera with a metadata node, a USB microphone, the TV's HDMI
    audio as the speaker, two monitors and a disconnected DP port."""
    inventory = read_linux(str(tree(tmp_path, "linux-healthy")))
    assert inventory.failures == []
    assert names(inventory, "camera") == ["AVer CAM520 Pro"]  # video1 (index 1) skipped
    assert names(inventory, "microphone") == ["BOYA BY-PM500: USB Audio"]
    # HDMI 0..2 PCMs are not speakers; the one sink whose ELD announces audio is.
    assert names(inventory, "speaker") == ["HDA Intel PCH: HDMI SAMSUNG"]
    assert names(inventory, "display") == ["HDMI-A-1 (SAMSUNG)", "HDMI-A-2 (DELL P2419H)"]


@posix_trees
def test_linux_healthy_room_meets_the_site_expectations(tmp_path: Path) -> None:
    """1 camera, 1 microphone, 1 speaker, 2 displays configured and found: ok, all rows."""
    report = run(make_ctx(tmp_path, root=tree(tmp_path, "linux-healthy"), devices=ROOM))
    assert report.ok, report.error
    assert rows(report, "device_count") == {("camera",): 1, ("microphone",): 1,
                                            ("speaker",): 1, ("display",): 2}
    assert rows(report, "device_expected") == {("camera",): 1, ("microphone",): 1,
                                               ("speaker",): 1, ("display",): 2}
    assert rows(report, "device_present") == {
        ("camera", "AVer CAM520 Pro"): 1, ("microphone", "BOYA BY-PM500: USB Audio"): 1,
        ("speaker", "HDA Intel PCH: HDMI SAMSUNG"): 1, ("display", "HDMI-A-1 (SAMSUNG)"): 1,
        ("display", "HDMI-A-2 (DELL P2419H)"): 1}


@posix_trees
def test_linux_camera_unplugged_fails_with_the_other_rows(tmp_path: Path) -> None:
    """The camera's nodes vanish from sysfs as on unplug: ok=False, the shortfall in words,
    camera count 0 and every other kind still reported."""
    root = tree(tmp_path, "linux-healthy")
    shutil.rmtree(root / "sys/devices/pci0000_00/0000_00_14.0/usb1/1-3")
    for node in ("video0", "video1"):
        (root / "sys/class/video4linux" / node).unlink()
    report = run(make_ctx(tmp_path, root=root, devices=ROOM))
    assert not report.ok
    assert report.error == "camera: 0 of 1 found"
    assert rows(report, "device_count")[("camera",)] == 0
    assert rows(report, "device_count")[("display",)] == 2
    assert ("microphone", "BOYA BY-PM500: USB Audio") in rows(report, "device_present")


@posix_trees
def test_linux_display_disconnected(tmp_path: Path) -> None:
    """HDMI-A-2's status turns "disconnected" (cable pulled): "display: 1 of 2 connected"."""
    root = tree(tmp_path, "linux-healthy")
    status = root / "sys/devices/pci0000_00/0000_00_02.0/drm/card0/card0-HDMI-A-2/status"
    status.write_text("disconnected\n")
    report = run(make_ctx(tmp_path, root=root, devices=ROOM))
    assert not report.ok
    assert report.error == "display: 1 of 2 connected"
    assert rows(report, "device_count")[("display",)] == 1
    assert ("display", "HDMI-A-2 (DELL P2419H)") not in rows(report, "device_present")


@posix_trees
def test_linux_named_expectations_met_and_missing(tmp_path: Path) -> None:
    """Names are case-insensitive substrings, one device each: a third "hdmi" has no
    device left and a "C920" none at all; both get a value-0 row named by the pattern."""
    root = tree(tmp_path, "linux-healthy")
    ok = run(make_ctx(tmp_path, root=root, devices=expectations(
        camera=["cam520"], display=["hdmi", "HDMI"], speaker=["samsung"])))
    assert ok.ok, ok.error
    report = run(make_ctx(tmp_path, root=root, devices=expectations(
        camera=["C920"], display=["hdmi", "HDMI", "hdmi"])))
    assert not report.ok
    assert report.error == "camera: missing 'C920'; display: missing 'hdmi'"
    present = rows(report, "device_present")
    assert present[("camera", "C920")] == 0
    assert present[("camera", "AVer CAM520 Pro")] == 1
    assert present[("display", "hdmi")] == 0
    assert rows(report, "device_expected") == {("camera",): 1, ("display",): 3}


@posix_trees
def test_linux_matching_is_not_greedy(tmp_path: Path) -> None:
    """["HDMI", "SAMSUNG"]: greedy would give "HDMI" the Samsung (first by name) and leave
    "SAMSUNG" unmatched; the matching gives "HDMI" the Dell instead."""
    root = tree(tmp_path, "linux-healthy")
    report = run(make_ctx(tmp_path, root=root,
                          devices=expectations(display=["HDMI", "SAMSUNG"])))
    assert report.ok, report.error


@posix_trees
def test_linux_duplicates_get_unique_labels(tmp_path: Path) -> None:
    """Two C920 webcams (four nodes), two identical USB speakers, two identical monitors
    and a v4l2loopback "OBS Virtual Camera": repeats get " #2", the virtual camera is not
    counted, the onboard codec's PCMs are, the NVidia HDMI PCMs (no audio sink) are not,
    and the report round-trips the wire."""
    report = run(make_ctx(tmp_path, root=tree(tmp_path, "linux-desktop"),
                          devices=expectations(camera=["C920", "c920"])))
    assert report.ok, report.error
    present = rows(report, "device_present")
    assert {n for k, n in present if k == "camera"} == {"HD Pro Webcam C920",
                                                        "HD Pro Webcam C920 #2"}
    assert {n for k, n in present if k == "speaker"} == {
        "HDA Intel PCH: ALC892 Analog", "HDA Intel PCH: ALC892 Digital",
        "USB Audio Device: USB Audio", "USB Audio Device: USB Audio #2"}
    assert {n for k, n in present if k == "microphone"} == {
        "HDA Intel PCH: ALC892 Analog", "HDA Intel PCH: ALC892 Alt Analog",
        "HD Pro Webcam C920: USB Audio", "HD Pro Webcam C920: USB Audio #2"}
    # Connectors differ even when the monitors do not.
    assert {n for k, n in present if k == "display"} == {"DP-1 (DELL P2419H)",
                                                         "DP-2 (DELL P2419H)"}
    assert rows(report, "device_count") == {("camera",): 2, ("microphone",): 4,
                                            ("speaker",): 4, ("display",): 2}


@posix_trees
def test_linux_suffix_follows_the_stable_key(tmp_path: Path) -> None:
    """The " #2" goes to the camera on the later USB port (1-5) both times it is read."""
    root = tree(tmp_path, "linux-desktop")
    inventory = read_linux(str(root))
    cams = sorted((d for d in inventory.devices if d.kind == "camera"), key=lambda d: d.key)
    assert [d.key.rsplit("/", 1)[-1] for d in cams] == ["1-2_1.0", "1-5_1.0"]
    labels = unique_labels(d.name for d in cams)
    assert labels == ["HD Pro Webcam C920", "HD Pro Webcam C920 #2"]


@posix_trees
def test_linux_unreadable_cards_fails_audio_only(tmp_path: Path) -> None:
    """chmod 000 does not stop root (CI runs as root), so /proc/asound/cards is replaced by
    a directory: the error names the file, microphone and speaker get no count (unknown,
    not zero), cameras and displays are still reported."""
    root = tree(tmp_path, "linux-healthy")
    cards = root / "proc/asound/cards"
    cards.unlink()
    cards.mkdir()
    report = run(make_ctx(tmp_path, root=root, devices=ROOM))
    assert not report.ok
    assert report.error == ("microphone, speaker: cannot read /proc/asound/cards: "
                            "not a regular file")
    assert rows(report, "device_count") == {("camera",): 1, ("display",): 2}
    assert rows(report, "device_expected")[("microphone",)] == 1
    assert not any(k in ("microphone", "speaker") for k, _ in rows(report, "device_present"))


@posix_trees
def test_linux_fifo_in_place_of_a_file_does_not_hang(tmp_path: Path) -> None:
    """A FIFO where /proc/asound/pcm belongs: opening it would block for ever, so the
    reader refuses non-regular files first and reports the file."""
    root = tree(tmp_path, "linux-healthy")
    pcm = root / "proc/asound/pcm"
    pcm.unlink()
    os.mkfifo(pcm)
    inventory = read_linux(str(root))
    assert inventory.failures == [ReadFailure(("microphone", "speaker"),
                                              "cannot read /proc/asound/pcm: "
                                              "not a regular file")]
    assert names(inventory, "camera") == ["AVer CAM520 Pro"]


@posix_trees
def test_linux_unreadable_camera_name_fails_cameras_only(tmp_path: Path) -> None:
    """A directory in place of video0/name: the camera source fails and names the path."""
    root = tree(tmp_path, "linux-healthy")
    name = root / "sys/class/video4linux/video0/name"
    name.unlink()
    name.mkdir()
    report = run(make_ctx(tmp_path, root=root))
    assert not report.ok
    assert report.error == ("camera: cannot read /sys/class/video4linux/video0/name: "
                            "not a regular file")
    assert ("camera",) not in rows(report, "device_count")
    assert rows(report, "device_count")[("speaker",)] == 1


def test_linux_unreadable_directory_listing(tmp_path: Path) -> None:
    """A file where /sys/class/drm should be a directory: listing fails with the path."""
    (tmp_path / "sys/class").mkdir(parents=True)
    (tmp_path / "sys/class/drm").write_text("not a directory\n")
    inventory = read_linux(str(tmp_path))
    assert inventory.failures == [ReadFailure(("display",), "cannot list /sys/class/drm: "
                                                            "Not a directory")]


def test_linux_empty_root_finds_nothing_and_is_ok(tmp_path: Path) -> None:
    """No video4linux, no DRM, no ALSA (a headless server): zero of each, not a failure."""
    report = run(make_ctx(tmp_path))
    assert report.ok, report.error
    assert rows(report, "device_count") == dict.fromkeys(
        [(k,) for k in wire.DEVICE_KINDS], 0.0)
    assert "device_present" not in report.metrics


def test_linux_flat_tree_without_symlinks(tmp_path: Path) -> None:
    """A tree of plain directories (no device links): index 0 alone picks the capture
    node of a UVC camera's two."""
    v4l = tmp_path / "sys/class/video4linux"
    for node, index in (("video0", "0"), ("video1", "1")):
        (v4l / node).mkdir(parents=True)
        (v4l / node / "name").write_text("Integrated Camera\n")
        (v4l / node / "index").write_text(index + "\n")
    assert names(read_linux(str(tmp_path)), "camera") == ["Integrated Camera"]


@posix_trees
def test_linux_nodes_without_index_count_once_per_device(tmp_path: Path) -> None:
    """No index files (an old kernel): the two nodes share a parent device, one camera;
    a second parent is a second camera."""
    v4l = tmp_path / "sys/class/video4linux"
    for node, port in (("video0", "1-1"), ("video1", "1-1"), ("video2", "1-4")):
        parent = tmp_path / f"sys/devices/usb1/{port}/{port}_1.0"
        parent.mkdir(parents=True, exist_ok=True)
        (v4l / node).mkdir(parents=True)
        (v4l / node / "name").write_text("Integrated Camera\n")
        (v4l / node / "device").symlink_to(parent)
    assert names(read_linux(str(tmp_path)), "camera") == ["Integrated Camera"] * 2


def _edid(name: bytes | None) -> bytes:
    block = bytearray(128)
    block[:8] = b"\x00\xff\xff\xff\xff\xff\xff\x00"
    block[54:56] = b"\x02\x3a"  # a detailed timing first, as monitors have
    if name is not None:
        block[72:77] = b"\x00\x00\x00\xfc\x00"
        block[77:90] = (name + b"\n").ljust(13, b" ")[:13]
    return bytes(block)


def test_edid_monitor_name() -> None:
    """Descriptor 0xFC holds the name, ended by 0x0A and padded; anything else is None."""
    assert edid_monitor_name(_edid(b"DELL P2419H")) == "DELL P2419H"
    assert edid_monitor_name(_edid(b"LG TV SSCR2")) == "LG TV SSCR2"
    assert edid_monitor_name(_edid(None)) is None
    assert edid_monitor_name(_edid(b"DELL")[:100]) is None  # short read
    assert edid_monitor_name(b"\xff" * 128) is None  # no EDID header
    assert edid_monitor_name(b"") is None  # a disconnected connector's empty edid


def test_alsa_parsers() -> None:
    """/proc/asound text as the kernel prints it, including the no-card case."""
    assert parse_cards("--- no soundcards ---\n") == {}
    assert parse_cards(" 0 [PCH            ]: HDA-Intel - HDA Intel PCH\n"
                       "                      HDA Intel PCH at 0xf7f10000 irq 32\n"
                       "10 [Speaker        ]: USB-Audio - Jabra SPEAK 510 USB\n") == {
        0: "HDA Intel PCH", 10: "Jabra SPEAK 510 USB"}
    assert parse_pcm("00-00: ALC892 Analog : ALC892 Analog : playback 1 : capture 1\n"
                     "00-02: ALC892 Alt Analog : ALC892 Alt Analog : capture 1\n"
                     "garbage\n") == [
        (0, 0, "ALC892 Analog", "ALC892 Analog", {"playback", "capture"}),
        (0, 2, "ALC892 Alt Analog", "ALC892 Alt Analog", {"capture"})]
    eld = parse_eld("monitor_present\t\t1\neld_valid\t\t1\nmonitor_name\t\tLG TV\n")
    assert eld == {"monitor_present": "1", "eld_valid": "1", "monitor_name": "LG TV"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this Linux box")
def test_linux_reader_on_this_machine() -> None:
    """The real / of this machine (a server: maybe no AV device at all) reads without a
    crash, and the probe's report is valid on the wire."""
    inventory = read_linux("/")
    assert all(d.kind in wire.DEVICE_KINDS for d in inventory.devices)
    ctx = ProbeContext(AgentConfig(site="hn-01", province="ha-noi",
                                   spool=SpoolConfig(path=Path("/nonexistent/spool.db"))))
    report = run(ctx)
    assert report.ok == (inventory.failures == []), report.error
    if report.ok:
        counts = rows(report, "device_count")
        assert set(counts) == {(k,) for k in wire.DEVICE_KINDS}


# ---------------------------------------------------------------------------------------
# Windows


def test_windows_healthy_room(tmp_path: Path) -> None:
    """UTF-8 BOM, CRLF, \\u0026 escapes, two "Generic PnP Monitor": the room as expected,
    endpoints split by their InstanceId, the second monitor labelled " #2"."""
    report = run(make_ctx(tmp_path, platform="win32", runner=captured("healthy.out"),
                          devices=ROOM))
    assert report.ok, report.error
    assert rows(report, "device_present") == {
        ("camera", "AVer CAM520 Pro"): 1,
        ("microphone", "Microphone (Jabra SPEAK 510 USB)"): 1,
        ("speaker", "Speakers (Jabra SPEAK 510 USB)"): 1,
        ("display", "Generic PnP Monitor"): 1, ("display", "Generic PnP Monitor #2"): 1}
    devices = parse_pnp_json(captured("healthy.out")([], 1.0))
    assert devices[0].key == r"USB\VID_2574&PID_0910&MI_00\7&2B4D1F3E&0&0000"


def test_windows_runs_get_pnpdevice(tmp_path: Path) -> None:
    """The command run: non-interactive PowerShell, Get-PnpDevice of the four classes."""
    seen: list[tuple[list[str], float]] = []

    def runner(argv: list[str], timeout: float) -> str:
        seen.append((argv, timeout))
        return ""

    run(make_ctx(tmp_path, platform="win32", runner=runner))
    assert seen == [(ARGV, seen[0][1])]
    assert ARGV[:3] == ["powershell.exe", "-NoProfile", "-NonInteractive"]
    assert "Get-PnpDevice -PresentOnly -Class Camera,Image,AudioEndpoint,Monitor" in ARGV[-1]
    assert 0 < seen[0][1] <= 60


def test_windows_vietnamese_locale(tmp_path: Path) -> None:
    """Vietnamese endpoint names ("Micrô", "Loa") carry no English hint: the direction
    comes from the InstanceId; the Image-class webcam is a camera; the TV's HDMI endpoint
    is a second speaker; the names reach the wire unchanged."""
    inventory = read_windows(captured("vi-locale.out"))
    assert inventory.failures == []
    assert names(inventory, "camera") == ["USB2.0 HD UVC WebCam"]
    assert names(inventory, "microphone") == ["Micrô (Realtek(R) Audio)"]
    assert names(inventory, "speaker") == ["Loa (Realtek(R) Audio)",
                                           "SAMSUNG (Intel(R) Display Audio)"]
    assert names(inventory, "display") == ["SAMSUNG", "Màn hình PnP Chung"]
    report = run(make_ctx(tmp_path, platform="win32", runner=captured("vi-locale.out"),
                          devices=expectations(microphone=["micrô"], speaker=["loa"])))
    assert report.ok, report.error
    assert rows(report, "device_present")[("display", "Màn hình PnP Chung")] == 1


def test_windows_single_object(tmp_path: Path) -> None:
    """One device prints as a bare object, not a one-element array; the rest are 0."""
    report = run(make_ctx(tmp_path, platform="win32", runner=captured("single-object.out"),
                          devices=ROOM))
    assert not report.ok
    assert report.error == ("camera: 0 of 1 found; microphone: 0 of 1 found; "
                            "speaker: 0 of 1 found; display: 1 of 2 connected")
    assert rows(report, "device_present") == {("display", "Generic PnP Monitor"): 1}
    assert rows(report, "device_count") == {("camera",): 0, ("microphone",): 0,
                                            ("speaker",): 0, ("display",): 1}


def test_windows_camera_unplugged(tmp_path: Path) -> None:
    """The camera gone from the PnP list: the camera shortfall, the other rows kept."""
    report = run(make_ctx(tmp_path, platform="win32",
                          runner=captured("camera-unplugged.out"), devices=ROOM))
    assert not report.ok
    assert report.error == "camera: 0 of 1 found"
    assert rows(report, "device_count")[("display",)] == 2


def test_windows_status_error_is_not_working(tmp_path: Path) -> None:
    """A camera listed with Status "Error" (a driver fault): present row 0, not counted,
    and named in the error with its status."""
    report = run(make_ctx(tmp_path, platform="win32", runner=captured("status-error.out"),
                          devices=ROOM))
    assert not report.ok
    assert report.error == ("camera: 0 of 1 found; "
                            "camera 'AVer CAM520 Pro' not working (Error)")
    assert rows(report, "device_present")[("camera", "AVer CAM520 Pro")] == 0
    assert rows(report, "device_count")[("camera",)] == 0


@pytest.mark.parametrize("capture", ["garbled-truncated.out", "garbled-utf16.out"])
def test_windows_garbled_output(tmp_path: Path, capture: str) -> None:
    """Output cut off mid-write, or UTF-16 read as UTF-8 (NULs and all): ok=False with
    "not JSON" and an excerpt, no counts (unknown), the expectations still sent."""
    report = run(make_ctx(tmp_path, platform="win32", runner=captured(capture),
                          devices=ROOM))
    assert not report.ok
    assert report.error is not None
    assert report.error.startswith("Get-PnpDevice output is not JSON")
    assert "device_count" not in report.metrics
    assert rows(report, "device_expected")[("display",)] == 2


@pytest.mark.parametrize("error", [
    RuntimeError("powershell.exe exited 1: Get-PnpDevice : The term 'Get-PnpDevice' is not "
                 "recognized"),
    subprocess.TimeoutExpired(["powershell.exe"], 20.0),
    FileNotFoundError(2, "No such file or directory"),
])
def test_windows_run_command_raising(tmp_path: Path, error: Exception) -> None:
    """PowerShell failing, hanging or missing: ok=False with the reason, no crash."""
    def runner(argv: list[str], timeout: float) -> str:
        raise error

    report = run(make_ctx(tmp_path, platform="win32", runner=runner))
    assert not report.ok
    assert report.error is not None
    assert report.error.startswith(f"Get-PnpDevice failed: {type(error).__name__}")
    assert "device_count" not in report.metrics


def test_windows_nothing_matched(tmp_path: Path) -> None:
    """Empty output (SilentlyContinue, no device of the four classes): zero of each."""
    report = run(make_ctx(tmp_path, platform="win32", runner=captured("nothing.out")))
    assert report.ok, report.error
    assert rows(report, "device_count") == dict.fromkeys(
        [(k,) for k in wire.DEVICE_KINDS], 0.0)


def test_windows_json_shapes() -> None:
    """The {"value": [...]} wrapper, a null FriendlyName, an endpoint of unknown
    direction and classes outside the four; non-objects are refused."""
    out = parse_pnp_json('{"value":[{"Class":"Monitor","FriendlyName":null,"Status":"OK",'
                         '"InstanceId":"DISPLAY\\\\GSM5B08\\\\1"},'
                         '{"Class":"AudioEndpoint","FriendlyName":"X","Status":"OK",'
                         '"InstanceId":"ROOT\\\\X"},'
                         '{"Class":"USB","FriendlyName":"Hub","Status":"OK",'
                         '"InstanceId":"USB\\\\ROOT_HUB30"}],"Count":3}')
    assert out == [Device("display", r"DISPLAY\GSM5B08\1", key=r"DISPLAY\GSM5B08\1")]
    with pytest.raises(Exception, match="not a list of devices"):
        parse_pnp_json('["OK"]')
    with pytest.raises(Exception, match="not a list of devices"):
        parse_pnp_json("42")


# ---------------------------------------------------------------------------------------
# Matching, labels, the probe as configured


def test_match_names_each_device_once() -> None:
    """Distinct devices per pattern, case-insensitive, maximum matching."""
    assert match_names(["hdmi", "HDMI"], ["HDMI-A-1", "HDMI-A-2"]) == [0, 1]
    assert match_names(["HDMI", "HDMI"], ["HDMI-A-1", "DP-1"]) == [0, None]
    assert match_names(["Logitech", "C920"], ["Logitech C920", "Logitech BRIO"]) == [1, 0]
    assert match_names(["x"], []) == [None]


def test_unique_labels_within_the_length_limit() -> None:
    """Names longer than a label value collide after truncation: the suffix still fits."""
    long = "M" * 200
    labels = unique_labels([long, long + "2", "a\tb", "a?b"])
    assert labels[0] == "M" * wire.MAX_LABEL_VALUE_CHARS
    assert labels[1] == "M" * (wire.MAX_LABEL_VALUE_CHARS - 3) + " #2"
    assert labels[2:] == ["a?b", "a?b #2"]  # a control character sanitised into a repeat


def test_missing_pattern_label_does_not_clash_with_a_device() -> None:
    """["HDMI-A-1", "HDMI-A-1"] with one HDMI-A-1: the missing row is "HDMI-A-1 #2"."""
    result = evaluate(Inventory([Device("display", "HDMI-A-1")]),
                      expectations(display=["HDMI-A-1", "HDMI-A-1"]))
    assert result.metrics["device_present"] == [(("display", "HDMI-A-1"), 1.0),
                                                (("display", "HDMI-A-1 #2"), 0.0)]
    assert result.problems == ["display: missing 'HDMI-A-1'"]


def test_unknown_platform_is_a_clear_failure(tmp_path: Path) -> None:
    """No reader for macOS: ok=False saying so, not a crash."""
    report = run(make_ctx(tmp_path, platform="darwin", devices=ROOM))
    assert not report.ok
    assert report.error == "no device reader for platform 'darwin'"


def test_probe_is_registered_and_on_by_default() -> None:
    """The probe is in the registry under "devices", enabled without configuration."""
    assert REGISTRY["devices"].collect is devices_probe.collect
    assert REGISTRY["devices"].default_enabled


def test_run_probe_with_parsed_config_names_the_missing_device(tmp_path: Path) -> None:
    """Through parse_config and run_probe as the agent does: the site expects a C920 and
    two displays, the Windows PC has no camera: ok=False naming 'C920', rows present."""
    config = parse_config({"site": "hn-01", "province": "ha-noi",
                           "spool": {"path": "spool.db"},
                           "devices": {"camera": ["C920"], "microphone": 1,
                                       "display": 2}}, tmp_path)
    ctx = ProbeContext(config, fs_root=str(tmp_path), platform="win32",
                       run_command=captured("camera-unplugged.out"))
    report = run(ctx)
    assert not report.ok
    assert report.error == "camera: missing 'C920'"
    assert rows(report, "device_present")[("camera", "C920")] == 0
    assert rows(report, "device_present")[("microphone",
                                           "Microphone (Jabra SPEAK 510 USB)")] == 1
    assert rows(report, "device_expected") == {("camera",): 1, ("microphone",): 1,
                                               ("display",): 2}
    assert rows(report, "device_count")[("camera",)] == 0


def test_fixture_trees_have_no_symlink_loops() -> None:
    """Real sysfs links a node's ``device`` back to an ancestor; the fixtures must not, or
    every tool that walks the repository following links (setuptools, pytest, copytree)
    never ends. No directory, reached through links, is one of its own ancestors."""
    for walked, (top, _, _) in enumerate(os.walk(FIXTURES, followlinks=True)):
        path = Path(top)
        ancestors = {os.path.realpath(p) for p in path.parents if FIXTURES in p.parents}
        assert os.path.realpath(path) not in ancestors, f"{top} loops back"
        assert walked < 10_000, "the walk does not end"
