"""``bridgewatch-collector pki``: what it writes, with which modes, and what it refuses.

Run through the collector's entry point (``main(["pki", ...])``), on files in tmp. The
broker side (Mosquitto accepting these files) is tests/test_broker_security.py.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.main import main as collector_main
from collector.pki import COLLECTOR_USER, PASSWORD_FILE, mosquitto_hash

ROOT = Path(__file__).resolve().parents[1]
FILTER_PLUGIN = (ROOT / "ansible" / "roles" / "bridgewatch_central" / "filter_plugins"
                 / "bridgewatch_central.py")
SITES = ["dt-sa-dec", "dt-cai-be", "dt-hong-ngu"]


@functools.cache
def ansible_filters() -> ModuleType:
    """The central role's filter plugin, loaded as Ansible loads it: by path."""
    spec = importlib.util.spec_from_file_location("bridgewatch_central_filters", FILTER_PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pki(*args: str | Path) -> int:
    return collector_main(["pki", *map(str, args)])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: content and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"provinces": {"dong-thap": {}}, "sites": [
        {"id": site, "province": "dong-thap"} for site in SITES]}))
    return path


def password(out: Path, user: str) -> str:
    folder = out / ("collector" if user == COLLECTOR_USER else f"sites/{user}")
    return (folder / PASSWORD_FILE).read_text().strip()


# ---- the CA and the broker's certificate ------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_init_ca_makes_a_ca_and_never_overwrites_it(tmp_path: Path, kind: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Tried: a second init-ca into the same folder (exit 1, files untouched)."""
    assert pki("init-ca", "--out", tmp_path / "ca", "--key", kind) == 0
    key, crt = tmp_path / "ca" / "ca.key", tmp_path / "ca" / "ca.crt"
    assert (mode(key), mode(crt)) == (0o600, 0o644)
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public = cert.public_key()
    if kind == "ec":
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    else:
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
    before = snapshot(tmp_path / "ca")
    capsys.readouterr()
    assert pki("init-ca", "--out", tmp_path / "ca") == 1
    err = capsys.readouterr().err
    assert "không ghi đè" in err and "not overwritten" in err
    assert snapshot(tmp_path / "ca") == before


def test_server_cert_names_the_broker_and_is_kept_until_something_changes(
        tmp_path: Path) -> None:
    """Tried: the same request again (kept), another IP (reissued), --rotate (new key)."""
    assert pki("init-ca", "--out", tmp_path / "ca") == 0
    out = tmp_path / "broker"
    args = ["server-cert", "--ca", tmp_path / "ca", "--name", "mqtt.example", "--dns",
            "mqtt.internal", "--ip", "192.0.2.7", "--out", out]
    assert pki(*args) == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example", "mqtt.internal"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert mode(out / "server.key") == 0o600
    assert (out / "ca.crt").read_bytes() == (tmp_path / "ca" / "ca.crt").read_bytes()
    first = snapshot(out)
    assert pki(*args) == 0
    assert snapshot(out) == first
    assert pki(*args[:-2], "--ip", "192.0.2.8", "--out", out) == 0
    moved = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    assert "192.0.2.8" in map(str, moved.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress))
    key = (out / "server.key").read_bytes()
    assert pki(*args, "--rotate") == 0
    assert (out / "server.key").read_bytes() != key


# ---- per-site passwords -----------------------------------------------------------------


def test_sites_writes_every_secret_once_with_private_modes(tmp_path: Path,
                                                           inventory: Path) -> None:
    """Tried: a second run (nothing rewritten), the broker's file checked hash by hash."""
    out = tmp_path / "pki"
    assert pki("sites", "--inventory", inventory, "--out", out) == 0
    users = [COLLECTOR_USER, *sorted(SITES)]
    lines = (out / "broker" / "passwords").read_text().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == users
    for line, user in zip(lines, users, strict=True):
        _, kind, rounds, salt, digest = line.split(":", 1)[1].split("$")
        assert (kind, rounds, len(base64.b64decode(salt))) == ("7", "101", 12)
        # What Mosquitto computes from the password the agent sends.
        expected = hashlib.pbkdf2_hmac("sha512", password(out, user).encode(),
                                       base64.b64decode(salt), 101, 64)
        assert base64.b64decode(digest) == expected, user
        assert len(password(out, user)) >= 32
    assert len({password(out, user) for user in users}) == len(users)
    secrets = [out / "broker" / "passwords", out / "collector" / PASSWORD_FILE,
               *(out / "sites" / site / PASSWORD_FILE for site in SITES)]
    assert {str(p): mode(p) for p in secrets} == {str(p): 0o600 for p in secrets}
    assert mode(out / "sites" / SITES[0]) == 0o700
    first = snapshot(out)
    assert pki("sites", "--inventory", inventory, "--out", out) == 0
    assert snapshot(out) == first, "lần chạy thứ hai đã đổi tệp / the second run changed files"


def test_the_acl_written_is_the_shipped_one(tmp_path: Path, inventory: Path) -> None:
    def rules(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines()
                if line.strip() and not line.startswith("#")]

    assert pki("sites", "--inventory", inventory, "--out", tmp_path) == 0
    assert rules((tmp_path / "broker" / "acl").read_text()) == rules(
        (ROOT / "deploy" / "mosquitto" / "acl").read_text())


def test_rotate_changes_only_the_secrets_named(tmp_path: Path, inventory: Path) -> None:
    """Tried: --rotate one site, then --rotate with no names (everyone)."""
    out = tmp_path / "pki"
    assert pki("sites", "--inventory", inventory, "--out", out) == 0
    users = [COLLECTOR_USER, *SITES]
    before = {user: password(out, user) for user in users}
    assert pki("sites", "--inventory", inventory, "--out", out, "--rotate", SITES[1]) == 0
    after = {user: password(out, user) for user in users}
    assert [u for u in users if after[u] != before[u]] == [SITES[1]]
    line = next(x for x in (out / "broker" / "passwords").read_text().splitlines()
                if x.startswith(f"{SITES[1]}:"))
    assert line == f"{SITES[1]}:{mosquitto_hash(after[SITES[1]], SITES[1])}"
    assert pki("sites", "--inventory", inventory, "--out", out, "--rotate") == 0
    assert all(password(out, u) != after[u] for u in users)


def test_an_unusable_stored_password_is_replaced(tmp_path: Path, inventory: Path) -> None:
    """Tried: a site's file holding a short password typed by hand."""
    out = tmp_path / "pki"
    weak = out / "sites" / SITES[0] / PASSWORD_FILE
    weak.parent.mkdir(parents=True)
    weak.write_text("123456\n")
    assert pki("sites", "--inventory", inventory, "--out", out) == 0
    assert len(password(out, SITES[0])) >= 32 and mode(weak) == 0o600


@pytest.mark.parametrize(("args", "message"), [
    (["--rotate", "dt-unknown"], "not in the inventory"),
    (["--collector-user", "dt-sa-dec"], "also a site id"),
    (["--client-certs"], "--client-certs needs --ca"),
])
def test_bad_requests_are_refused_before_anything_is_written(
        tmp_path: Path, inventory: Path, capsys: pytest.CaptureFixture[str],
        args: list[str], message: str) -> None:
    assert pki("sites", "--inventory", inventory, "--out", tmp_path / "pki", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "pki").exists()


def test_an_unreadable_inventory_is_named(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "inventory.yaml"
    bad.write_text("sites: [{id: 'Not A Slug', province: x}]\n")
    assert pki("sites", "--inventory", bad, "--out", tmp_path / "pki") == 2
    err = capsys.readouterr().err
    assert "không đọc được danh mục" in err and str(bad) in err


def test_client_certificates_per_site(tmp_path: Path, inventory: Path) -> None:
    """Tried: a second run keeps them; each names its site and is for client auth only."""
    assert pki("init-ca", "--out", tmp_path / "ca") == 0
    out = tmp_path / "pki"
    args = ["sites", "--inventory", inventory, "--out", out, "--ca", tmp_path / "ca",
            "--client-certs"]
    assert pki(*args) == 0
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.crt").read_bytes())
    for site in SITES:
        folder = out / "sites" / site
        cert = x509.load_pem_x509_certificate((folder / "client.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == site
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.CLIENT_AUTH]
        assert mode(folder / "client.key") == 0o600
        assert (folder / "ca.crt").read_bytes() == (tmp_path / "ca" / "ca.crt").read_bytes()
    first = snapshot(out)
    assert pki(*args) == 0
    assert snapshot(out) == first


# ---- one hash, two copies ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(password=st.text(min_size=1, max_size=64), user=st.from_regex(
    r"[a-z0-9][a-z0-9-]{0,30}", fullmatch=True))
def test_the_ansible_filter_hashes_exactly_as_the_cli(password: str, user: str) -> None:
    """The role's filter plugin keeps its own copy (no bridgewatch on the controller):
    byte for byte the same line for any password, so either file opens the same broker."""
    assert ansible_filters().mosquitto_hash(password, user) == mosquitto_hash(password, user)


def test_the_command_is_installed_on_the_collectors_entry_point(tmp_path: Path) -> None:
    """``python -m collector.main pki`` as a technician's shell would run it."""
    done = subprocess.run([sys.executable, "-m", "collector.main", "pki", "init-ca", "--out",
                           str(tmp_path / "ca")], capture_output=True, text=True, check=False,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tạo / created" in done.stdout and (tmp_path / "ca" / "ca.key").exists()
