"""Link quality against the central bridge: RTT, jitter, loss, bandwidth and MOS.

The pieces, one concern each:

- ``packet``: the reflector's UDP wire format (shared with ``collector.reflector``);
- ``stats``: pure arithmetic (quantiles, both jitter definitions, loss counting, the
  ITU-T G.107 E-model), documented with its references;
- ``kerneltime``: kernel receive timestamps (``SO_TIMESTAMPNS``) and the matching clock;
- ``tracker``: per-target bookkeeping of sequence numbers, timeouts and windows;
- ``prober``: the fixed-rate sender thread, name resolution, the receiver thread;
- transports ``udp`` (the reflector), ``icmp`` (raw echo; traceroute with scapy) and
  ``tcp`` (connect time);
- ``bandwidth``: the TCP throughput test (client and protocol);
- ``measure``: the one-shot command line; ``check``: ``bridgewatch-agent bandwidth``;
  ``results``: the last bandwidth test, handed to the probe.

``agent.probes.link`` turns the probers into telemetry rows.
"""
