"""Commands from the collector to one bridge's agent (``.../<site>/cmd``), QoS 1.

The intake never publishes (see ``mqtt_intake``); commands are rare (a test order per
bridge and checkpoint), so they go through a small paho client of their own, with its
own client id, which reconnects by itself and queues while the broker is away. Commands
are never retained: an agent reconnecting next week must not run last week's order.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from agent import wire
from agent.broker import BrokerSettings, connect_async, make_client
from collector.inventory import Site

log = logging.getLogger("bridgewatch.collector.commands")


class CommandSender:
    def __init__(self, settings: BrokerSettings, client_id: str, prefix: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.prefix = prefix
        self.clock = clock
        self.client = make_client(settings, client_id)
        self.settings = settings
        # seq grows across restarts: milliseconds at start, then one by one.
        self._seq = itertools.count(int(clock() * 1000))

    def start(self) -> None:
        connect_async(self.client, self.settings)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def send(self, site: Site, command: str, args: dict[str, Any]) -> None:
        """Queue one command for a bridge; paho delivers it once the broker is there."""
        message = wire.Command(site.province, site.id, next(self._seq), self.clock(), command,
                               args)
        topic = wire.topic(self.prefix, site.province, site.id, wire.Kind.CMD)
        info = self.client.publish(topic, wire.encode(message), qos=1, retain=False)
        log.info("sent %s to %s (mid %d)", command, site.id, info.mid)
