"""BridgeWatch agent: measures a bridge PC and publishes over MQTT with a disk spool."""

__version__ = "0.1.0"
