"""Grafana dashboards for the NOC, generated from Python (``python -m dashboards.build``).

The JSON in ``dashboards/json/`` is committed so Grafana's file provisioning and the push CLI
can use it without Python; ``python -m dashboards.build --check`` keeps it equal to the code.
"""
