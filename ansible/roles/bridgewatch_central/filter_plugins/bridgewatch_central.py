"""Filters of the ``bridgewatch_central`` role: what Jinja alone cannot do safely.

- ``bridgewatch_mosquitto_passwd``: Mosquitto's password file, PBKDF2-SHA512 (``$7$``).
  The salt is derived from the user name and the password (HMAC), so an unchanged password
  gives the same line on every run: the file does not change and the broker is not
  reloaded for nothing. Such a salt lets whoever reads the file test a guess with one
  HMAC instead of 101 PBKDF2 rounds; that is why the preflight wants long random
  passwords from the vault, against which guessing is hopeless either way (and 101
  rounds would not have saved a weak one).
- ``bridgewatch_alertmanager``: ``alerts/alertmanager.yml`` with the receivers' and the
  mail relay's placeholders filled in; the routing itself is taken as it is.
- ``bridgewatch_alert_templates``: the notification templates with the collector's address.
- ``bridgewatch_grafana_provisioning``: the repository's provisioning files with this
  host's paths and Prometheus address.

Structured values are parsed and dumped with PyYAML, never assembled as text, so a value
cannot break the file it goes into.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

# As mosquitto_passwd writes them: 12 bytes of salt, 64 bytes of SHA-512, 101 rounds.
# collector/pki.py (``bridgewatch-collector pki sites``, for a deployment by hand) has the
# same hash: this plugin keeps its own copy because it runs on the Ansible controller,
# where bridgewatch is not installed. tests/test_pki.py keeps the two byte for byte equal.
SALT_BYTES = 12
DEFAULT_ITERATIONS = 101
_SALT_CONTEXT = b"bridgewatch mosquitto salt v1\x00"
_BASE_URL = re.compile(r'(\{\{ define "bridgewatch\.base_url" \}\})(.*?)(\{\{ end \}\})')
PLACEHOLDER = "PLACEHOLDER"


def _plain(value: Any) -> Any:
    """Ansible's tagged strings and lazy containers as plain JSON types PyYAML can dump."""
    return json.loads(json.dumps(value))


def _dump(data: Any, header: str) -> str:
    body = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


def mosquitto_hash(password: str, username: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """One ``$7$<rounds>$<salt>$<hash>`` value Mosquitto 2 verifies (PBKDF2-HMAC-SHA512)."""
    if not isinstance(password, str) or not password:
        raise AnsibleFilterError(f"MQTT user {username!r}: empty password")
    secret = password.encode()
    salt = hmac.new(secret, _SALT_CONTEXT + str(username).encode(),
                    hashlib.sha512).digest()[:SALT_BYTES]
    digest = hashlib.pbkdf2_hmac("sha512", secret, salt, int(iterations), 64)
    salt_b64, digest_b64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${int(iterations)}${salt_b64}${digest_b64}"


def mosquitto_passwd(users: Any, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The whole password file for ``users``, a list of ``[username, password]`` pairs."""
    lines, seen = [], set()
    for pair in _plain(users):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise AnsibleFilterError("users must be [username, password] pairs")
        username, password = pair
        if not isinstance(username, str) or not username or ":" in username or (
                any(c.isspace() for c in username)):
            raise AnsibleFilterError(f"MQTT user name {username!r} is not usable")
        if username in seen:
            raise AnsibleFilterError(f"MQTT user {username!r} appears twice")
        seen.add(username)
        lines.append(f"{username}:{mosquitto_hash(password, username, iterations)}\n")
    return "".join(lines)


def _fill(receiver: dict[str, Any], values: dict[str, Any]) -> None:
    """Put one receiver's addresses and secrets into its webhook/Telegram/mail configs."""
    name = receiver["name"]
    wanted = {"webhook_configs": ("webhook_url", "url"), "email_configs": ("email_to", "to")}
    for section, (key, field) in wanted.items():
        for item in receiver.get(section) or []:
            if key not in values:
                raise AnsibleFilterError(f"receiver {name}: {key} is required")
            item[field] = values[key]
    for item in receiver.get("telegram_configs") or []:
        for key, field in (("telegram_bot_token", "bot_token"), ("telegram_chat_id", "chat_id")):
            if key not in values:
                raise AnsibleFilterError(f"receiver {name}: {key} is required")
            item[field] = values[key]
        if not isinstance(item["chat_id"], int):
            raise AnsibleFilterError(f"receiver {name}: telegram_chat_id must be a number")
    known = {"webhook_url", "email_to", "telegram_bot_token", "telegram_chat_id"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AnsibleFilterError(f"receiver {name}: unknown keys {unknown} (known: "
                                 f"{sorted(known)})")


def alertmanager(source: str, receivers: Any, smtp: Any, smtp_password_file: str | None) -> str:
    """``alerts/alertmanager.yml`` with every receiver and the mail relay filled in.

    ``receivers`` maps each receiver's name to its ``webhook_url``, ``email_to``,
    ``telegram_bot_token`` and ``telegram_chat_id`` (those its configs need). A receiver
    left out, or one the file does not have, is an error: a page must not go to an
    example address, nor a configured pager be silently unused.
    """
    config = yaml.safe_load(source)
    receivers, smtp = _plain(receivers), _plain(smtp)
    names = [r["name"] for r in config.get("receivers", [])]
    missing = sorted(set(names) - set(receivers))
    extra = sorted(set(receivers) - set(names))
    if missing or extra:
        raise AnsibleFilterError(f"alertmanager receivers: without values {missing}, "
                                 f"not in alerts/alertmanager.yml {extra}")
    for receiver in config["receivers"]:
        _fill(receiver, receivers[receiver["name"]] or {})
    glob = config.setdefault("global", {})
    for key in ("smarthost", "from", "hello", "auth_username", "require_tls"):
        if key in smtp:
            glob[f"smtp_{key}"] = smtp[key]
    if smtp_password_file:
        glob["smtp_auth_password_file"] = str(smtp_password_file)
    else:  # no mail relay password: do not point at a file nobody wrote
        glob.pop("smtp_auth_password_file", None)
    text = json.dumps(config)
    if PLACEHOLDER in text:
        raise AnsibleFilterError("alertmanager.yml still holds a PLACEHOLDER value")
    return _dump(config, "Managed by Ansible (role bridgewatch_central), generated from\n"
                         "alerts/alertmanager.yml: the routing and its comments are there.")


def alert_templates(source: str, base_url: str) -> str:
    """The notification templates with the collector's public address for runbook links."""
    if not re.fullmatch(r"https?://[^\s{}\"<>]+", str(base_url)):
        raise AnsibleFilterError(f"collector public URL {base_url!r} is not an http(s) URL")
    text, count = _BASE_URL.subn(lambda m: m[1] + str(base_url).rstrip("/") + m[3], source)
    if count != 1:
        raise AnsibleFilterError("bridgewatch.base_url is not defined exactly once in the "
                                 "templates")
    return text


def grafana_provisioning(source: str, values: Any) -> str:
    """A provisioning file of ``dashboards/provisioning`` with this host's values.

    ``values`` may give ``dashboards_path`` (every file provider's folder),
    ``datasource_url`` (every data source's address) and ``scrape_interval`` (Prometheus's,
    from which Grafana derives ``$__rate_interval``).
    """
    config = yaml.safe_load(source)
    values = _plain(values)
    unknown = sorted(set(values) - {"dashboards_path", "datasource_url", "scrape_interval"})
    if unknown:
        raise AnsibleFilterError(f"grafana provisioning: unknown values {unknown}")
    dashboards_path, datasource_url = values.get("dashboards_path"), values.get("datasource_url")
    if values.get("scrape_interval") is not None:
        for source_ in config.get("datasources", []):
            source_.setdefault("jsonData", {})["timeInterval"] = str(values["scrape_interval"])
    if dashboards_path is not None:
        for provider in config.get("providers", []):
            provider.setdefault("options", {})["path"] = str(dashboards_path)
    if datasource_url is not None:
        for source_ in config.get("datasources", []):
            source_["url"] = str(datasource_url)
    return _dump(config, "Managed by Ansible (role bridgewatch_central), generated from\n"
                         "dashboards/provisioning/ in the repository.")


class FilterModule:
    """The role's filters, by the names the templates use."""

    def filters(self) -> dict[str, Any]:
        return {
            "bridgewatch_mosquitto_passwd": mosquitto_passwd,
            "bridgewatch_mosquitto_hash": mosquitto_hash,
            "bridgewatch_alertmanager": alertmanager,
            "bridgewatch_alert_templates": alert_templates,
            "bridgewatch_grafana_provisioning": grafana_provisioning,
        }
