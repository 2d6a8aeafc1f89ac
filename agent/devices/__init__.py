"""The room's AV devices as the OS sees them: one reader per platform, one shape for both.

A reader returns an ``Inventory``: the devices it found and, for each source it could not
read (an unreadable ``/proc/asound/cards``, a PowerShell that printed garbage), the kinds
that source answers for and why. A failed source makes its kinds *unknown*, not zero: the
probe then reports no count for them rather than claiming the room has no microphone.

``linux`` reads sysfs/procfs under an injectable root, ``windows`` parses Get-PnpDevice
output, and ``expect`` compares an inventory with the site's configured expectations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent import wire

KINDS = wire.DEVICE_KINDS


@dataclass(frozen=True)
class Device:
    """One device of one kind.

    ``key`` is a stable identity (a sysfs path, a PnP InstanceId) used only to order devices
    of the same name, so that a " #2" suffix sticks to the same physical device between
    rounds. ``working`` is False for a device the OS lists but reports as faulty (Windows
    Status "Error"); such a device does not count toward the expectations.
    """

    kind: str
    name: str
    key: str = ""
    working: bool = True
    status: str = "OK"


class SourceError(Exception):
    """A device source (a sysfs file, the PowerShell output) could not be read or parsed."""


@dataclass(frozen=True)
class ReadFailure:
    """A source that could not be read: the kinds it answers for, and a one-line reason."""

    kinds: tuple[str, ...]
    reason: str


@dataclass
class Inventory:
    devices: list[Device] = field(default_factory=list)
    failures: list[ReadFailure] = field(default_factory=list)

    @property
    def unknown_kinds(self) -> set[str]:
        """Kinds whose source failed: their count is unknown, not zero."""
        return {kind for failure in self.failures for kind in failure.kinds}
