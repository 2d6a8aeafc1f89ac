"""The MQTT side of the collector: a persistent QoS 1 subscription that feeds FleetState.

The handler does nothing but ``FleetState.apply`` (validate and update state); the
intake thread renders what changed in its spare time (``FleetState.flush``), so a scrape
only joins bytes. The session survives collector restarts (explicit session
expiry), so the broker keeps what arrives while we are away.
"""

from __future__ import annotations

from agent import broker
from agent.wire import Kind, subscription, topic

from .mqtt_intake import MqttIntake
from .state import FleetState

SUBSCRIBED_KINDS = (Kind.TELEMETRY, Kind.STATE, Kind.TEST)


def topic_filters(state: FleetState, per_site: bool) -> list[str]:
    """What to subscribe to: every site (wildcards), or only the sites this shard owns.

    With wildcards the collector also sees sites missing from its inventory and counts
    them as ``unknown_site``; a shard leaves that gate to the broker's ACL.
    """
    if not per_site:
        return [subscription(state.prefix, kind) for kind in SUBSCRIBED_KINDS]
    return [topic(state.prefix, site.province, site.id, kind)
            for site in state.inventory.sites.values() for kind in SUBSCRIBED_KINDS]


class Ingest:
    def __init__(self, state: FleetState, settings: broker.BrokerSettings,
                 client_id: str = "bridgewatch-collector", per_site: bool = False) -> None:
        self.state = state
        self.intake = MqttIntake(
            settings, client_id, topic_filters(state, per_site),
            handler=lambda topic, payload: state.apply(topic, payload),
            on_connection=lambda up: state.metrics.connected.set(1 if up else 0),
            tick=state.flush)

    def start(self) -> None:
        self.intake.start()

    def stop(self) -> None:
        self.intake.stop()
