"""AV devices on Windows, from the JSON that ``Get-PnpDevice`` prints through PowerShell.

PnP classes: Camera and Image are cameras (older webcam drivers register as Image, and so
would a scanner: a bridge PC has none, and names in the configuration can tell them
apart), Monitor is a display, AudioEndpoint is a microphone or a speaker. The endpoint's
direction comes from its InstanceId, ``SWD\\MMDEVAPI\\{0.0.1.00000000}.{guid}`` for
capture and ``{0.0.0.00000000}`` for render, not from its friendly name, which Windows
localises ("Microphone"/"Micrô", "Speakers"/"Loa"). Class, Status and InstanceId are
not localised.

``-PresentOnly`` lists what is attached; a device whose Status is not "OK" ("Error",
"Degraded", "Unknown") is reported as not working and does not count.

PowerShell quirks the parser takes in its stride: one device is printed as an object, not
a one-element array; Windows PowerShell 5.1 escapes ``&``, ``'``, ``<`` and ``>`` as
``\\u0026``...; a UTF-8 byte order mark may lead the output; lines end in CRLF; no
matching device at all prints nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from agent.devices import KINDS, Device, Inventory, ReadFailure, SourceError

# UTF-8 without a BOM (the console's OEM code page would mangle Vietnamese names), no
# progress records on the output, and no error text for "nothing matched".
SCRIPT = ("$ProgressPreference = 'SilentlyContinue'; "
          "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false; "
          "Get-PnpDevice -PresentOnly -Class Camera,Image,AudioEndpoint,Monitor "
          "-ErrorAction SilentlyContinue "
          "| Select-Object Class,FriendlyName,Status,InstanceId | ConvertTo-Json -Compress")
ARGV = ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", SCRIPT]
# PowerShell starts in about a second; Get-PnpDevice takes a few more on a busy PC.
TIMEOUT_SECONDS = 20.0

_CLASS_KINDS = {"camera": "camera", "image": "camera", "monitor": "display"}
_ENDPOINT = re.compile(r"MMDEVAPI\\\{0\.0\.([01])\.", re.IGNORECASE)
_EXCERPT_CHARS = 40


def _kind(pnp_class: str, instance_id: str) -> str | None:
    """The device kind of a PnP entry, or None for an entry that is none of them."""
    if pnp_class.lower() == "audioendpoint":
        match = _ENDPOINT.search(instance_id)
        if match is None:
            return None  # not an MMDevice endpoint we can tell the direction of
        return "microphone" if match.group(1) == "1" else "speaker"
    return _CLASS_KINDS.get(pnp_class.lower())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_pnp_json(output: str) -> list[Device]:
    """Devices from ``Get-PnpDevice ... | ConvertTo-Json`` output; ``SourceError`` if garbled."""
    text = output.lstrip("\ufeff").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError as err:
        raise SourceError(f"Get-PnpDevice output is not JSON ({err}): "
                          f"{text[:_EXCERPT_CHARS]!r}") from None
    # ConvertTo-Json -InputObject on an array can wrap it as {"value": [...], "Count": n}.
    if isinstance(data, dict) and isinstance(data.get("value"), list):
        data = data["value"]
    if isinstance(data, dict):
        data = [data]  # one device: PowerShell prints the object itself
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise SourceError(f"Get-PnpDevice output is not a list of devices: "
                          f"{text[:_EXCERPT_CHARS]!r}")
    devices = []
    for item in data:
        instance_id = _text(item.get("InstanceId"))
        kind = _kind(_text(item.get("Class")), instance_id)
        if kind is None:
            continue
        name = _text(item.get("FriendlyName")).strip() or instance_id or "?"
        status = _text(item.get("Status")).strip() or "Unknown"
        devices.append(Device(kind, name, key=instance_id, working=status.upper() == "OK",
                              status=status))
    return devices


def read_windows(run_command: Callable[[list[str], float], str]) -> Inventory:
    """Run Get-PnpDevice; a failing or garbled run is a ``ReadFailure`` of every kind."""
    try:
        output = run_command(list(ARGV), TIMEOUT_SECONDS)
    except Exception as err:  # an injected runner: any failure is the source failing
        return Inventory(failures=[ReadFailure(KINDS, f"Get-PnpDevice failed: "
                                                      f"{type(err).__name__}: {err}")])
    try:
        return Inventory(devices=parse_pnp_json(output))
    except SourceError as err:
        return Inventory(failures=[ReadFailure(KINDS, str(err))])
