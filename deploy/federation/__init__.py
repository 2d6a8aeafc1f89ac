"""Federating provincial BridgeWatch stacks: the example configuration and how to run it.

``dong-thap/`` and ``an-giang/`` hold each province's Prometheus configuration,
``national/`` the national Prometheus that federates them, ``mosquitto/`` the optional
bridge of the ``state`` topics to a national broker. ``stack.py`` runs them on loopback
for tests/test_federation.py, ``sizing.py`` measures what federation costs. The design is
in docs/federation.md.
"""
