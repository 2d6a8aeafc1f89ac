"""The room's cameras, microphones, speakers and displays, against the site's expectations.

The reader follows ``ctx.platform`` (sysfs/procfs under ``ctx.fs_root`` on Linux,
Get-PnpDevice through ``ctx.run_command`` on Windows; see ``agent.devices``). The report is
``ok=False`` *with* its rows (``ProbePartial``) when an expectation is not met ("camera:
missing 'C920'", "display: 1 of 2 connected"), when a device is listed but not working,
or when a source could not be read: an unreadable ``/proc/asound/cards`` names the file
and leaves microphones and speakers without a count, while cameras and displays are
still reported. A failed or garbled PowerShell run leaves every kind without a count but
still sends what the site expects.
"""

from __future__ import annotations

from agent.devices import KINDS, Inventory, ReadFailure
from agent.devices.expect import evaluate
from agent.devices.linux import read_linux
from agent.devices.windows import read_windows
from agent.probes import Metrics, ProbeContext, ProbePartial, register


def read_inventory(ctx: ProbeContext) -> Inventory:
    """The devices as this platform's reader sees them."""
    if ctx.platform.startswith("linux"):
        return read_linux(ctx.fs_root)
    if ctx.platform == "win32":
        return read_windows(ctx.run_command)
    return Inventory(failures=[ReadFailure(KINDS, f"no device reader for platform "
                                                  f"{ctx.platform!r}")])


@register("devices", default_interval=60.0)
def collect(ctx: ProbeContext) -> Metrics:
    result = evaluate(read_inventory(ctx), ctx.config.devices)
    if result.problems:
        raise ProbePartial(result.metrics, "; ".join(result.problems))
    return result.metrics
