"""BridgeWatch collector: MQTT in, per-site state, cached Prometheus exposition out."""
