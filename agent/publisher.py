"""Moves spooled messages to the broker (QoS 1) and keeps the site's retained state honest.

- State: each connection gets a number ``conn`` from the spool. The Last Will (offline,
  retained) and the online state both carry it, so the collector can order them whatever
  way the broker delivers. ``conn`` is renewed after every lost connection: paho reconnects
  with the same client object, and an online state that reused the previous ``conn``
  would be overridden by that connection's Will.
- Data: a sender thread hands spool rows to paho in seq order, at most ``window``
  unacknowledged. Acknowledgements are queued by paho's thread and settled by the sender,
  which alone owns the mid -> seq map (so an ack racing ``publish()`` is never lost). A
  successful PUBACK marks a row acknowledged; the row leaves the spool ("purge") only once
  it has been acknowledged for ``spool.keep_acked_seconds`` on a connection still up,
  because Mosquitto acknowledges before its disk snapshot and a broker killed meanwhile
  forgets it (``agent.spool``). On each (re)connect every row still in the spool,
  acknowledged or not, is sent again in seq order: duplicates are dropped by the
  collector, losses never happen. ``stop()`` waits only for unacknowledged rows; the kept
  ones go again after the next start.
- Live lane (``agent.live_lane``): while a backlog drains, fresh rows are also sent at once
  as early copies in a few reserved slots of the window, so live data is not starved.
- A refused publish (reason code >= 0x80) is logged once per episode, counted, left in the
  spool, and retried after an exponential back-off.
"""

from __future__ import annotations

import collections
import logging
import platform
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__, wire
from agent.broker import connect_async, make_client
from agent.config import AgentConfig
from agent.live_lane import LiveLane, reserve_for
from agent.spool import Spool

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 64
REFUSAL_BACKOFF_MIN_SECONDS = 1.0
REFUSAL_BACKOFF_MAX_SECONDS = 60.0

CommandHandler = Callable[[wire.Command], None]


_paho = logging.getLogger("agent.paho")


def _paho_log(client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
    """paho's log, minus its ERROR for the normal "no socket yet" state while reconnecting."""
    if level == mqtt.MQTT_LOG_ERR and not buf.startswith("Client is not connected"):
        _paho.error("%s", buf)
    elif level == mqtt.MQTT_LOG_WARNING:
        _paho.warning("%s", buf)
    else:
        _paho.debug("%s", buf)


def _text(value: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in value)[:limit]


class Publisher:
    """Spool -> broker, plus state and commands. ``start()``, ``wake()``, ``stop()``."""

    def __init__(self, config: AgentConfig, spool: Spool, window: int = DEFAULT_WINDOW,
                 drain_seconds: float = 5.0,
                 handlers: Mapping[str, CommandHandler] | None = None) -> None:
        self.config = config
        # Command name -> hook, called on paho's thread: it must return at once (hand the
        # work to a thread of its own) and raise ValueError for bad args.
        self.handlers = dict(handlers or {})
        self.spool = spool
        self.window = window
        self.drain_seconds = drain_seconds
        self.keep_acked = config.spool.keep_acked_seconds
        # Kept rows are purged this often: G/8 late at most, a transaction every 15 s at G=120.
        self._purge_every = max(0.5, self.keep_acked / 8)
        self.counters: collections.Counter[str] = collections.Counter()
        self.state_topic = wire.topic(config.prefix, config.province, config.site,
                                      wire.Kind.STATE)
        self.cmd_topic = wire.topic(config.prefix, config.province, config.site, wire.Kind.CMD)
        self._hostname = _text(socket.gethostname(), 128)
        self._os = _text(platform.platform(), 128)
        self._cond = threading.Condition()
        # Shared with paho's thread, guarded by _cond:
        self._connected = False
        self._stopping = False
        self._reset = False
        self._dirty = True
        self._acks: list[tuple[int, ReasonCode]] = []
        self._limit = window
        # Owned by the sender thread:
        self._inflight: dict[int, int] = {}
        self._cursor = 0
        self._paused_until = 0.0
        self._purge_at = 0.0
        self._backoff = 0.0
        self._refusals_logged: set[int] = set()
        self._conn = 0
        self._lane = LiveLane(spool, reserve_for(window))
        self._client = make_client(config.broker, client_id=config.site)
        self._client.max_inflight_messages_set(window)
        self._client.on_log = _paho_log
        self._client.suppress_exceptions = True
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._sender = threading.Thread(target=self._send_loop, name="spool-sender", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._new_conn()
        connect_async(self._client, self.config.broker)
        self._client.loop_start()
        self._sender.start()

    def wake(self) -> None:
        """New rows are in the spool."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    def stop(self) -> None:
        """Let unacknowledged rows drain briefly, publish offline (retained), then
        disconnect. Acknowledged rows still kept are not waited for: they stay in the
        spool and are sent again after the next start."""
        with self._cond:
            # Asks the spool's table, not its cached count: another process (a technician's
            # ``check``) may have appended rows this one never counted.
            self._cond.wait_for(lambda: not self._connected or not self.spool.pending(0, 1),
                                self.drain_seconds)
            self._stopping = True
            connected = self._connected
            self._cond.notify_all()
        self._sender.join()
        if connected:
            info = self._client.publish(self.state_topic, self._state("offline"), qos=1,
                                        retain=True)
            try:
                info.wait_for_publish(self.drain_seconds)
            except (RuntimeError, ValueError) as err:
                log.warning("offline state not confirmed: %s", err)
        self._client.disconnect()
        self._client.loop_stop()
        if self._lane.sent_total:
            self.counters["live_early_copies"] = self._lane.sent_total
        log.info("stopped; counters: %s", dict(self.counters) or "none")

    # -- state -----------------------------------------------------------------------------

    def _state(self, state: str) -> bytes:
        # State is not spooled: it describes the live connection, so it has no seq stream.
        return wire.encode(wire.State(
            self.config.province, self.config.site, seq=0, conn=self._conn, ts=time.time(),
            state=state, agent_version=__version__, hostname=self._hostname, os=self._os))

    def _new_conn(self) -> None:
        """Number the next connection and arm its Last Will (sent in the next CONNECT)."""
        self._conn = self.spool.next_conn()
        self._client.will_set(self.state_topic, self._state("offline"), qos=1, retain=True)

    # -- paho callbacks (paho's thread) ----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason_code: ReasonCode, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        # Never have more in flight than the broker said it will take (MQTT v5 Receive Maximum).
        limit = min(self.window, getattr(properties, "ReceiveMaximum", None) or self.window)
        client.publish(self.state_topic, self._state("online"), qos=1, retain=True)
        client.subscribe(self.cmd_topic, qos=1)
        log.info("connected to %s:%d as conn %d", self.config.broker.host,
                 self.config.broker.port, self._conn)
        with self._cond:
            self._connected = True
            self._reset = True
            self._limit = limit
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: ReasonCode, properties: Any) -> None:
        with self._cond:
            was_connected, self._connected = self._connected, False
            stopping = self._stopping
        if stopping:
            return
        if was_connected:
            log.warning("disconnected from broker: %s; spooling until it is back", reason_code)
        self._new_conn()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Any) -> None:
        with self._cond:
            self._acks.append((mid, reason_code))
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            command = wire.decode(message.payload, wire.Kind.CMD, now=time.time())
        except wire.WireError as err:
            self._reject_command(str(err))
            return
        command = cast(wire.Command, command)
        if (command.province, command.site) != (self.config.province, self.config.site):
            self._reject_command(f"addressed to {command.province}/{command.site}")
        elif command.command == "ping":
            self.counters["commands_ping"] += 1
            log.info("ping command (seq %d) received", command.seq)
        elif command.command in self.handlers:
            self._dispatch(command)
        else:
            self.counters["commands_unknown"] += 1
            log.warning("unknown command %r ignored", command.command)

    def _dispatch(self, command: wire.Command) -> None:
        """Hand a command to its hook; bad args are counted and logged, never fatal."""
        try:
            self.handlers[command.command](command)
        except ValueError as err:
            self.counters["commands_bad_args"] += 1
            log.warning("command %s (seq %d) refused: %s", command.command, command.seq, err)
        except Exception:
            self.counters["commands_failed"] += 1
            log.exception("command %s (seq %d) failed", command.command, command.seq)
        else:
            self.counters[f"commands_{command.command.replace('-', '_')}"] += 1

    def _reject_command(self, why: str) -> None:
        self.counters["commands_rejected"] += 1
        log.warning("rejected a command on %s: %s", self.cmd_topic, why)

    # -- sender thread ---------------------------------------------------------------------

    def _ready(self) -> bool:
        now = time.monotonic()
        return (self._stopping or bool(self._acks) or self._reset
                or (self._connected and self._dirty
                    and len(self._inflight) + len(self._lane.inflight) < self._limit
                    and now >= self._paused_until)
                or (self._connected and self.keep_acked > 0 and now >= self._purge_at))

    def _wait(self) -> None:
        """Until something is ready, or the next back-off end or purge is due."""
        now = time.monotonic()
        due = [t for t in (self._paused_until, self._purge_at if self._connected else 0.0)
               if t > now]
        self._cond.wait(min(due) - now if due else None)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready():
                    self._wait()
                if self._stopping:
                    return
                acks, self._acks = self._acks, []
                reset, self._reset = self._reset, False
                connected, limit = self._connected, self._limit
            try:
                self._settle(acks)
                if reset:
                    self._restart_round()
                    reset = False
                if connected:
                    self._send(limit)
                    self._purge()
            except Exception:
                # A spool error must not kill the sender: log, back off, retry.
                self.counters["sender_errors"] += 1
                log.exception("sender failed; retrying")
                self._paused_until = time.monotonic() + REFUSAL_BACKOFF_MIN_SECONDS
                if reset:  # the new round did not start: start it on the next try
                    with self._cond:
                        self._reset = True
            with self._cond:
                self._cond.notify_all()  # stop() may be waiting for the spool to drain

    def _restart_round(self) -> None:
        """A connection came up: send everything again from the oldest row, the rows the
        previous connection acknowledged included (the broker may have lost them). A
        refusal back-off outlives reconnects, or they would defeat it."""
        resent = self.spool.unack()
        if resent:
            self.counters["acked_resent"] += resent
            log.info("resending %d message(s) acknowledged before the reconnect", resent)
        self._inflight.clear()
        self._cursor = 0
        self._lane.reset()
        self._dirty = True
        self._purge_at = time.monotonic() + self._purge_every

    def _purge(self) -> None:
        """Forget rows acknowledged at least ``keep_acked`` ago. Called only while
        connected, after this connection's ``_restart_round``: every kept row was then
        acknowledged on this connection, which has stayed up since (a drop is seen by
        paho's thread; the next round unacknowledges them all)."""
        if self.keep_acked <= 0 or time.monotonic() < self._purge_at:
            return
        self._purge_at = time.monotonic() + self._purge_every
        with self._cond:
            if not self._connected or self._reset:
                return
        self.spool.purge(self.keep_acked)

    def _settle(self, acks: list[tuple[int, ReasonCode]]) -> None:
        done: list[int] = []
        for mid, reason in acks:
            seq = self._inflight.pop(mid, None)
            if seq is None and self._lane.settle(mid):
                continue  # an early copy: only its in-order copy's PUBACK marks the row
            if seq is None:
                continue  # a resend from before the last reconnect; the row was re-sent too
            if reason.is_failure:
                self._refused(seq, reason)
            else:
                done.append(seq)
        if done:
            self.spool.ack(*done, keep=self.keep_acked > 0)
            self._backoff = 0.0
            self._refusals_logged.clear()

    def _refused(self, seq: int, reason: ReasonCode) -> None:
        self.counters["publish_refused"] += 1
        if reason.value not in self._refusals_logged:
            self._refusals_logged.add(reason.value)
            log.error("broker refused message seq %d: %s (0x%02x); kept in the spool, retrying "
                      "with back-off", seq, reason, reason.value)
        self._cursor = min(self._cursor, seq - 1)
        now = time.monotonic()
        if now >= self._paused_until:  # the first refusal of a round doubles the back-off
            self._backoff = min(max(self._backoff * 2, REFUSAL_BACKOFF_MIN_SECONDS),
                                REFUSAL_BACKOFF_MAX_SECONDS)
            self._paused_until = now + self._backoff
        with self._cond:
            self._dirty = True

    def _send(self, limit: int) -> None:
        room = limit - len(self._inflight) - len(self._lane.inflight)
        if room <= 0 or time.monotonic() < self._paused_until:
            return
        with self._cond:
            self._dirty = False  # cleared before reading, so a wake() meanwhile is not lost
        ordered = self.spool.pending(self._cursor, room)
        rows, early = self._lane.plan(ordered, room, len(self._inflight), limit)
        if len(rows) == room:  # (rows held back for the reserve wait for an ack instead)
            with self._cond:
                self._dirty = True  # the window is full; there may be more behind it
        for seq, topic, payload in early:
            info = self._client.publish(topic, payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                return
            self._lane.sent(info.mid, seq)
        for seq, topic, payload in rows:
            info = self._client.publish(topic, payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                return  # paho keeps it queued; on_connect will trigger a full resend anyway
            self._inflight[info.mid] = seq
            self._cursor = seq
