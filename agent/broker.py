"""How to reach the broker: one place for MQTT v5 client setup, used by agent and collector.

TLS and per-site credentials are plain settings here; the broker's ACL (not this code)
is what makes an agent unable to publish as another site.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DEFAULT_SESSION_EXPIRY_SECONDS = 7 * 86400


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive: int = 30
    session_expiry_seconds: int = DEFAULT_SESSION_EXPIRY_SECONDS
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    reconnect_min_seconds: float = 1.0
    reconnect_max_seconds: float = 60.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> BrokerSettings:
        raw = dict(raw or {})
        tls = raw.pop("tls", None) or {}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown broker settings: {', '.join(sorted(unknown))}")
        for key in ("ca_file", "cert_file", "key_file"):
            if key in tls:
                raw[key] = tls[key]
        settings = cls(**raw)
        if not 0 < settings.port < 65536:
            raise ValueError(f"broker port {settings.port} out of range")
        return settings

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        return Path(self.password_file).read_text(encoding="utf-8").strip()


def connect_properties(settings: BrokerSettings) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = settings.session_expiry_seconds
    return props


def make_client(settings: BrokerSettings, client_id: str) -> mqtt.Client:
    """An MQTT v5 client with VERSION2 callbacks, TLS, credentials and reconnect backoff."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password())
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file,
                       keyfile=settings.key_file, cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.reconnect_delay_set(int(settings.reconnect_min_seconds),
                               int(settings.reconnect_max_seconds))
    return client


def connect_async(client: mqtt.Client, settings: BrokerSettings) -> None:
    """Start connecting; paho's loop retries with backoff while the broker is away."""
    client.connect_async(settings.host, settings.port, keepalive=settings.keepalive,
                         clean_start=False, properties=connect_properties(settings))
