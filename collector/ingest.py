"""The MQTT side of the collector: a persistent QoS 1 subscription that feeds FleetState.

The callback does nothing but hand the message to ``FleetState.apply`` (validate and
update state); rendering for scrapes happens elsewhere. The session survives collector
restarts (explicit session expiry), so the broker keeps what arrives while we are away.
"""

from __future__ import annotations

import logging
from typing import Any

import paho.mqtt.client as mqtt

from agent import broker
from agent.wire import Kind, subscription

from .state import FleetState

log = logging.getLogger("bridgewatch.collector.ingest")

SUBSCRIBED_KINDS = (Kind.TELEMETRY, Kind.STATE, Kind.TEST)


class Ingest:
    def __init__(self, state: FleetState, settings: broker.BrokerSettings,
                 client_id: str = "bridgewatch-collector", province: str = "+") -> None:
        self.state = state
        self.settings = settings
        self.filters = [subscription(state.prefix, kind, province) for kind in SUBSCRIBED_KINDS]
        self.client = broker.make_client(settings, client_id)
        # Take acknowledgements as fast as the broker offers messages.
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        broker.connect_async(self.client, self.settings)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the collector: %s", reason_code)
            return
        client.subscribe([(f, 1) for f in self.filters])
        self.state.metrics.connected.set(1)
        log.info("connected to %s:%s (session present: %s)", self.settings.host,
                 self.settings.port, flags.session_present)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self.state.metrics.connected.set(0)
        log.warning("disconnected from broker: %s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.state.apply(message.topic, message.payload)
