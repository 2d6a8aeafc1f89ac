"""AV devices on Linux, read from sysfs and procfs under an injectable root.

Three sources, each failing on its own (an unreadable file makes *its* kinds unknown and
names the file; the other kinds are still read):

* cameras: ``/sys/class/video4linux/video*``. A UVC webcam exposes two nodes since Linux
  4.16, the second one for metadata only. sysfs does not carry the V4L2 capabilities (that
  needs a VIDIOC_QUERYCAP ioctl on ``/dev/videoN``, which wakes the camera and needs access
  to the node), so the rule is sysfs-only: a node counts when its ``index`` is 0 (the first
  node a driver registers for a device; the metadata node has index 1). A node without an
  ``index`` file counts once per parent device (the ``device`` link). Nodes under
  ``/sys/devices/virtual`` (v4l2loopback, "OBS Virtual Camera") are not cameras: a virtual
  camera must not stand in for an unplugged one.
* microphones and speakers: ALSA's ``/proc/asound/cards`` and ``/proc/asound/pcm``. One
  microphone per PCM device with a capture stream, one speaker per PCM device with a
  playback stream, named "<card name>: <pcm name>". ALSA lists an interface, not what is
  plugged into its analog jacks: an onboard codec always shows; USB devices (speakerphones,
  webcam microphones) come and go with the plug, which is what names in the configuration
  can pin down.
* HDMI/DisplayPort audio: a GPU lists a playback PCM per output whether or not anything is
  attached, so those PCMs are not speakers. Instead each sink that announced audio in its
  ELD (``/proc/asound/card*/eld#*``: monitor present, ELD valid, at least one audio format)
  is a speaker named after the sink, e.g. "HDA Intel PCH: HDMI SAMSUNG" for a TV used as
  the room's loudspeaker. A monitor without speakers does not count.
* displays: ``/sys/class/drm/card*-*/status`` == "connected", named by the connector
  ("HDMI-A-1") plus the monitor name from the EDID when it has one: "HDMI-A-1 (DELL P2419H)".
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable

from agent.devices import Device, Inventory, ReadFailure, SourceError

_VIDEO_NODE = re.compile(r"video(\d+)")
_CONNECTOR = re.compile(r"card(\d+)-(.+)")
_CARD_LINE = re.compile(r"\s*(\d+)\s+\[([^\]]*)\]:\s*(.*?)\s+-\s+(.*?)\s*")
_PCM_LINE = re.compile(r"(\d+)-(\d+):\s*(.*?)\s*")
_STREAM = re.compile(r"(playback|capture)\s+\d+")
_HDMI_PCM = re.compile(r"HDMI|\bDP\b|DisplayPort", re.IGNORECASE)
_ELD_FILE = re.compile(r"eld#\d+\.\d+")
_EDID_HEADER = b"\x00\xff\xff\xff\xff\xff\xff\x00"


def _host(root: str, logical: str) -> str:
    """Where a logical path (``/proc/asound/cards``) lives under the root."""
    return os.path.join(root, logical.lstrip("/"))


def _why(err: OSError) -> str:
    return err.strerror or type(err).__name__


def _read(root: str, logical: str) -> bytes | None:
    """A sysfs/procfs file's bytes; None when it is gone (a device unplugged mid-scan).

    Anything else (permission, a directory or FIFO where a file belongs) raises
    ``SourceError`` naming the logical path. Non-regular files are refused before opening
    them, as opening a FIFO would block the probe.
    """
    path = _host(root, logical)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise SourceError(f"cannot read {logical}: not a regular file")
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SourceError(f"cannot read {logical}: {_why(err)}") from None


def _read_text(root: str, logical: str) -> str | None:
    data = _read(root, logical)
    return None if data is None else data.decode("utf-8", "replace")


def _listdir(root: str, logical: str) -> list[str]:
    """A directory's entries; [] when it does not exist (the subsystem is not loaded)."""
    try:
        return os.listdir(_host(root, logical))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise SourceError(f"cannot list {logical}: {_why(err)}") from None


def _natural(name: str) -> tuple[str, int]:
    """Sort key putting video2 before video10."""
    match = re.search(r"(\d+)$", name)
    return (name[: match.start()], int(match.group(1))) if match else (name, -1)


def _logical(root: str, host_path: str) -> str:
    return "/" + os.path.relpath(host_path, root).replace(os.sep, "/")


def read_cameras(root: str) -> list[Device]:
    """Physical cameras: index-0 V4L2 nodes that are not virtual (see the module doc)."""
    base = "/sys/class/video4linux"
    cameras: list[Device] = []
    seen_parents: set[str] = set()
    for entry in sorted((e for e in _listdir(root, base) if _VIDEO_NODE.fullmatch(e)),
                        key=_natural):
        node = f"{base}/{entry}"
        if "/devices/virtual/" in os.path.realpath(_host(root, node)).replace(os.sep, "/"):
            continue
        name = _read_text(root, f"{node}/name")
        if name is None:  # unplugged while we looked
            continue
        index = _read_text(root, f"{node}/index")
        parent_link = _host(root, f"{node}/device")
        parent = (_logical(root, os.path.realpath(parent_link))
                  if os.path.lexists(parent_link) else node)
        if index is not None:
            if index.strip() != "0":
                continue  # a second node of the same device (UVC metadata)
        elif parent in seen_parents:
            continue
        seen_parents.add(parent)
        cameras.append(Device("camera", name.strip() or entry, key=parent))
    return cameras


def edid_monitor_name(edid: bytes) -> str | None:
    """The monitor name (display descriptor 0xFC) of an EDID base block, if it has one."""
    if len(edid) < 128 or edid[:8] != _EDID_HEADER:
        return None
    for start in (54, 72, 90, 108):  # the four 18-byte descriptors
        block = edid[start:start + 18]
        if block[0:2] == b"\x00\x00" and block[3] == 0xFC:
            text = block[5:18].split(b"\x0a", 1)[0].decode("cp437").strip()
            return text or None
    return None


def read_displays(root: str) -> list[Device]:
    """Connected DRM connectors, named by connector and EDID monitor name."""
    base = "/sys/class/drm"
    displays: list[Device] = []
    for entry in sorted(_listdir(root, base), key=_natural):
        match = _CONNECTOR.fullmatch(entry)
        if not match:
            continue  # card0, renderD128, version
        status = _read_text(root, f"{base}/{entry}/status")
        if status is None or status.strip() != "connected":
            continue
        connector = match.group(2)
        try:
            monitor = edid_monitor_name(_read(root, f"{base}/{entry}/edid") or b"")
        except SourceError:
            monitor = None  # the name is a courtesy; the connector status is the fact
        name = f"{connector} ({monitor})" if monitor else connector
        displays.append(Device("display", name, key=f"{base}/{entry}"))
    return displays


def parse_cards(text: str) -> dict[int, str]:
    """Card number -> card name, from ``/proc/asound/cards``."""
    cards: dict[int, str] = {}
    for line in text.splitlines():
        match = _CARD_LINE.fullmatch(line)
        if match:
            cards[int(match.group(1))] = match.group(4) or match.group(2).strip()
    return cards


def parse_pcm(text: str) -> list[tuple[int, int, str, str, set[str]]]:
    """(card, device, id, name, {"playback", "capture"}) per line of ``/proc/asound/pcm``.

    A line is ``CC-DD: id : name[ : playback N][ : capture N]``.
    """
    out = []
    for line in text.splitlines():
        match = _PCM_LINE.fullmatch(line)
        if not match:
            continue
        parts = [p.strip() for p in match.group(3).split(" : ")]
        streams: set[str] = set()
        while parts and _STREAM.fullmatch(parts[-1]):
            streams.add(parts.pop().split()[0])
        pcm_id = parts[0] if parts else ""
        name = " : ".join(parts[1:]) or pcm_id
        out.append((int(match.group(1)), int(match.group(2)), pcm_id, name, streams))
    return out


def parse_eld(text: str) -> dict[str, str]:
    """The ``key<tabs>value`` lines of an ELD file."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if parts:
            fields[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return fields


def _eld_has_audio(fields: dict[str, str]) -> bool:
    try:
        sads = int(fields.get("sad_count", "0"))
    except ValueError:
        sads = 0
    return fields.get("monitor_present") == "1" and fields.get("eld_valid") == "1" and sads > 0


def read_audio(root: str) -> list[Device]:
    """Microphones and speakers from ALSA (see the module doc for the HDMI rule)."""
    cards = parse_cards(_read_text(root, "/proc/asound/cards") or "")
    devices: list[Device] = []
    for card, number, pcm_id, pcm_name, streams in parse_pcm(
            _read_text(root, "/proc/asound/pcm") or ""):
        card_name = cards.get(card, f"card{card}")
        if _HDMI_PCM.search(pcm_id) or _HDMI_PCM.search(pcm_name) or "HDMI" in card_name:
            continue  # counted per announcing sink below
        name = f"{card_name}: {pcm_name}"
        key = f"/proc/asound/card{card}/pcm{number}"
        if "capture" in streams:
            devices.append(Device("microphone", name, key=key + "c"))
        if "playback" in streams:
            devices.append(Device("speaker", name, key=key + "p"))
    for card, card_name in sorted(cards.items()):
        card_dir = f"/proc/asound/card{card}"
        for entry in sorted(e for e in _listdir(root, card_dir) if _ELD_FILE.fullmatch(e)):
            fields = parse_eld(_read_text(root, f"{card_dir}/{entry}") or "")
            if _eld_has_audio(fields):
                sink = " ".join(filter(None, (fields.get("connection_type", "HDMI"),
                                              fields.get("monitor_name")))) or entry
                devices.append(Device("speaker", f"{card_name}: {sink}",
                                      key=f"{card_dir}/{entry}"))
    return devices


_SOURCES: tuple[tuple[tuple[str, ...], Callable[[str], list[Device]]], ...] = (
    (("camera",), read_cameras),
    (("microphone", "speaker"), read_audio),
    (("display",), read_displays),
)


def read_linux(root: str = "/") -> Inventory:
    """Every AV device under ``root``; a source that fails is a ``ReadFailure`` of its kinds."""
    inventory = Inventory()
    for kinds, reader in _SOURCES:
        try:
            inventory.devices.extend(reader(root))
        except SourceError as err:
            inventory.failures.append(ReadFailure(kinds, str(err)))
    return inventory
