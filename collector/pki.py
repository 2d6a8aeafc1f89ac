"""``bridgewatch-collector pki``: a province's broker credentials, for a deployment by hand.

    pki init-ca     --out CA_DIR [--key ec|rsa] [--days N] [--cn NAME]
    pki server-cert --ca CA_DIR --name mqtt.example [--dns NAME ...] [--ip ADDR ...]
                    --out DIR/broker [--days N] [--rotate]
    pki sites       --inventory inventory.yaml --out DIR [--ca CA_DIR [--client-certs]]
                    [--collector-user NAME] [--rotate [USER ...]]

``init-ca`` makes the CA the agents trust (``ca.key`` 0600, ``ca.crt``); it never overwrites
one, since a new CA means a new ``ca.crt`` on every bridge PC. ``server-cert`` signs the
broker's certificate (SAN: every ``--name``/``--dns`` and ``--ip``) into ``server.crt``,
``server.key`` and a copy of ``ca.crt``. ``sites`` gives every site of the inventory and the
collector a random password, kept on later runs (``--rotate`` makes new ones: all, or the
users named), and writes:

    DIR/broker/passwords           Mosquitto's password_file ($7$, PBKDF2-SHA512), 0600
    DIR/broker/acl                 the ACL (deploy/mosquitto/acl)
    DIR/sites/<site>/mqtt-password the agent's broker.password_file, 0600
    DIR/collector/mqtt-password    the collector's
    (with --ca) ca.crt beside each; with --client-certs also client.crt, client.key (0600)

``DIR/broker`` is what ``deploy/mosquitto/bridgewatch.conf`` expects in
``/etc/mosquitto/bridgewatch/``. Files whose content would not change are not rewritten.
Exit status: 0 done, 1 refused (a CA is already there), 2 bad usage or unreadable input.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import secrets
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.wire import DEFAULT_PREFIX, WIRE_VERSION, Kind, is_slug

from .inventory import InventoryError, load_inventory

PROG = "bridgewatch-collector pki"
COLLECTOR_USER = "bridgewatch-collector"
PASSWORD_FILE = "mqtt-password"
MIN_PASSWORD_CHARS = 16  # as the Ansible role's preflight demands
CA_DAYS, CERT_DAYS = 3650, 730

# As mosquitto_passwd writes them: 12 bytes of salt, 64 bytes of SHA-512, 101 rounds.
# The Ansible filter plugin (ansible/roles/bridgewatch_central/filter_plugins) keeps its
# own copy of this hash: it runs on the controller, where bridgewatch is not installed.
# tests/test_pki.py keeps the two equal, and tests/test_broker_security.py logs in with it.
SALT_BYTES = 12
ITERATIONS = 101
_SALT_CONTEXT = b"bridgewatch mosquitto salt v1\x00"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class PkiError(Exception):
    """What the technician must fix; ``code`` is the exit status."""

    def __init__(self, vi: str, en: str, code: int = 2):
        super().__init__(f"{vi} / {en}")
        self.code = code


def mosquitto_hash(password: str, username: str, iterations: int = ITERATIONS) -> str:
    """One ``$7$<rounds>$<salt>$<hash>`` value Mosquitto 2 verifies (PBKDF2-HMAC-SHA512).

    The salt is derived from user and password (HMAC), so an unchanged password gives the
    same line on every run and the broker's file does not change for nothing. That lets a
    reader of the file test a guess with one HMAC: harmless against the 32 random
    characters this command generates.
    """
    secret = password.encode()
    salt = hmac.new(secret, _SALT_CONTEXT + username.encode(), hashlib.sha512).digest()
    salt = salt[:SALT_BYTES]
    digest = hashlib.pbkdf2_hmac("sha512", secret, salt, iterations, 64)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def acl_text(collector_user: str = COLLECTOR_USER, prefix: str = DEFAULT_PREFIX) -> str:
    """The ACL of ``deploy/mosquitto/acl``: a site publishes and reads only as itself."""
    tree = f"{prefix}/v{WIRE_VERSION}"
    sent = [k.value for k in Kind if k is not Kind.CMD]
    return "".join([
        "# BridgeWatch broker ACL (bridgewatch-collector pki sites): each bridge logs in with\n"
        "# its site id as username, publishes only under its own site and reads only its\n"
        "# own commands.\n",
        *(f"pattern write {tree}/+/%u/{kind}\n" for kind in sent),
        f"pattern read {tree}/+/%u/{Kind.CMD.value}\n\n",
        "# The collector reads what sites send and writes commands; nothing else.\n",
        f"user {collector_user}\n",
        *(f"topic read {tree}/+/+/{kind}\n" for kind in sent),
        f"topic write {tree}/+/+/{Kind.CMD.value}\n",
    ])


# ---- files ---------------------------------------------------------------------------


def write_file(path: Path, data: bytes, mode: int) -> bool:
    """Write atomically with ``mode`` from the start; False when the content is unchanged.

    A secret never exists with wider permissions, not even for a moment, and a reader
    (Mosquitto reloading) never sees half a file.
    """
    try:
        if path.read_bytes() == data:
            os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, mode)  # whatever the umask took away
    os.replace(tmp, path)
    return True


def _key_bytes(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


# ---- certificates --------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "BridgeWatch"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: x509.Name, issuer: x509.Name, key: PrivateKey,
             days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False))


def make_ca(cn: str, kind: str = "ec", days: int = CA_DAYS) -> tuple[PrivateKey, x509.Certificate]:
    key = _new_key(kind)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False)
    cert = (_builder(_name(cn), _name(cn), key, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca: tuple[PrivateKey, x509.Certificate], cn: str, key: PrivateKey, days: int,
          usage: x509.ObjectIdentifier,
          names: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
    """A leaf certificate for ``cn`` signed by the CA: server or client by ``usage``."""
    ca_key, ca_cert = ca
    key_usage = x509.KeyUsage(digital_signature=True,
                              key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                              content_commitment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False)
    builder = (_builder(_name(cn), ca_cert.subject, key, days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(key_usage, critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)),
                                        critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def load_ca(folder: Path) -> tuple[PrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    except (OSError, ValueError, TypeError) as err:  # TypeError: an encrypted key
        raise PkiError(f"không đọc được CA trong {folder}", f"cannot read the CA in {folder}: "
                       f"{err}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise PkiError(f"{folder}/ca.key: loại khóa không hỗ trợ", "unsupported key type")
    return key, cert


def _signed_by(cert_path: Path, ca_cert: x509.Certificate) -> x509.Certificate | None:
    """The certificate at ``cert_path`` if the CA signed it, else None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return None
    return cert


def _fresh(cert: x509.Certificate) -> bool:
    """Still valid for a month: worth keeping rather than reissuing."""
    left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    return left > dt.timedelta(days=30)


# ---- the commands --------------------------------------------------------------------


def init_ca(out: Path, kind: str, days: int, cn: str) -> list[str]:
    existing = [p.name for p in (out / "ca.key", out / "ca.crt") if p.exists()]
    if existing:
        raise PkiError(f"{out} đã có CA ({', '.join(existing)}): không ghi đè. Mọi điểm cầu "
                       "tin CA này; muốn thay thì tự chuyển thư mục đi",
                       f"{out} already holds a CA ({', '.join(existing)}): not overwritten. "
                       "Every bridge trusts it; to replace it, move the folder away yourself",
                       code=1)
    key, cert = make_ca(cn, kind, days)
    write_file(out / "ca.key", _key_bytes(key), 0o600)
    write_file(out / "ca.crt", _cert_bytes(cert), 0o644)
    return [f"tạo / created {out / 'ca.key'}", f"tạo / created {out / 'ca.crt'}"]


def server_cert(ca_dir: Path, out: Path, dns: Sequence[str], ips: Sequence[str], days: int,
                rotate: bool) -> list[str]:
    ca = load_ca(ca_dir)
    try:
        names = [x509.DNSName(n) for n in dns] + [
            x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError as err:
        raise PkiError("tên hoặc địa chỉ IP không hợp lệ", f"bad name or IP: {err}") from None
    done = []
    if write_file(out / "ca.crt", _cert_bytes(ca[1]), 0o644):
        done.append(f"ghi / wrote {out / 'ca.crt'}")
    current = _signed_by(out / "server.crt", ca[1])
    if current is not None and not rotate and _fresh(current) and (out / "server.key").exists():
        try:
            have = set(current.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            have = set()
        if have == set(names):
            return [*done, f"giữ nguyên / kept {out / 'server.crt'}"]
    key = _new_key("rsa" if isinstance(ca[0], rsa.RSAPrivateKey) else "ec")
    cert = issue(ca, dns[0], key, days, ExtendedKeyUsageOID.SERVER_AUTH, names)
    write_file(out / "server.key", _key_bytes(key), 0o600)
    write_file(out / "server.crt", _cert_bytes(cert), 0o644)
    san = ", ".join([*dns, *ips])
    return [*done, f"cấp / issued {out / 'server.crt'} ({san})"]


def _read_password(path: Path) -> str | None:
    """A usable stored password, or None when there is none (or it is unusable)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if len(text) < MIN_PASSWORD_CHARS or any(c.isspace() for c in text):
        return None
    return text


def _client_files(folder: Path, user: str, ca: tuple[PrivateKey, x509.Certificate],
                  renew: bool) -> list[str]:
    """``client.crt``/``client.key`` for ``user``, kept while valid and not rotated."""
    current = _signed_by(folder / "client.crt", ca[1])
    if (current is not None and not renew and _fresh(current)
            and current.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
            and (folder / "client.key").exists()):
        return []
    key = _new_key("rsa" if isinstance(ca[0], rsa.RSAPrivateKey) else "ec")
    cert = issue(ca, user, key, CERT_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH)
    write_file(folder / "client.key", _key_bytes(key), 0o600)
    write_file(folder / "client.crt", _cert_bytes(cert), 0o644)
    return [f"cấp / issued {folder / 'client.crt'}"]


def _users(inventory_path: Path, out: Path, collector_user: str,
           rotate: Iterable[str] | None) -> tuple[dict[str, Path], set[str]]:
    """Every MQTT user and its folder (collector first), and those to rotate."""
    try:
        inventory = load_inventory(inventory_path)
    except (OSError, InventoryError) as err:
        raise PkiError(f"không đọc được danh mục {inventory_path}",
                       f"cannot read the inventory {inventory_path}: {err}") from None
    if not is_slug(collector_user):
        raise PkiError(f"tên người dùng {collector_user!r} không hợp lệ (a-z, 0-9, -)",
                       f"user name {collector_user!r} is not a slug (a-z, 0-9, -)")
    users = {collector_user: out / "collector", **{
        site: out / "sites" / site for site in sorted(inventory.sites)}}
    if len(users) <= len(inventory.sites):
        raise PkiError(f"tên người dùng của bộ thu thập {collector_user!r} trùng một điểm cầu",
                       f"the collector's user name {collector_user!r} is also a site id")
    renew = set() if rotate is None else set(rotate) or set(users)
    unknown = sorted(renew - set(users))
    if unknown:
        raise PkiError(f"không có trong danh mục: {', '.join(unknown)}",
                       f"not in the inventory: {', '.join(unknown)}")
    return users, renew


def sites(inventory_path: Path, out: Path, collector_user: str, rotate: Iterable[str] | None,
          ca_dir: Path | None, client_certs: bool) -> list[str]:
    users, rotate_users = _users(inventory_path, out, collector_user, rotate)
    ca = load_ca(ca_dir) if ca_dir is not None else None
    if client_certs and ca is None:
        raise PkiError("--client-certs cần --ca", "--client-certs needs --ca")
    done: list[str] = []
    lines = []
    for user, folder in users.items():
        renew = user in rotate_users
        password = None if renew else _read_password(folder / PASSWORD_FILE)
        if password is None:
            password = secrets.token_urlsafe(24)  # 32 characters, 192 bits
            write_file(folder / PASSWORD_FILE, f"{password}\n".encode(), 0o600)
            done.append(f"{'đổi / rotated' if renew else 'tạo / created'} {user}")
        if ca is not None:
            write_file(folder / "ca.crt", _cert_bytes(ca[1]), 0o644)
            if client_certs:
                done += _client_files(folder, user, ca, renew)
        lines.append(f"{user}:{mosquitto_hash(password, user)}\n")
    broker = out / "broker"
    wrote = [name for name, data, mode in (
        ("passwords", "".join(lines), 0o600), ("acl", acl_text(collector_user), 0o644))
        if write_file(broker / name, data.encode(), mode)]
    if wrote:
        done.append(f"ghi / wrote {', '.join(str(broker / n) for n in wrote)}: chép vào "
                    "/etc/mosquitto/bridgewatch/ rồi systemctl reload mosquitto / copy to "
                    "/etc/mosquitto/bridgewatch/, then systemctl reload mosquitto")
    stale = sorted(p.name for p in (out / "sites").glob("*")
                   if p.is_dir() and p.name not in users)
    if stale:
        done.append(f"không còn trong danh mục, không đăng nhập được nữa / no longer in the "
                    f"inventory, can no longer log in: {', '.join(stale)}")
    return done or ["không có gì thay đổi / nothing changed"]


# ---- command line --------------------------------------------------------------------


def _days(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 36500:
        raise argparse.ArgumentTypeError(f"{text!r}: số ngày 1-36500 / days, 1 to 36500")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    ca = commands.add_parser("init-ca", help="a new CA (never overwrites one)")
    ca.add_argument("--out", type=Path, required=True)
    ca.add_argument("--key", choices=("ec", "rsa"), default="ec",
                    help="ECDSA P-256 (default) or RSA-3072")
    ca.add_argument("--days", type=_days, default=CA_DAYS)
    ca.add_argument("--cn", default="BridgeWatch MQTT CA")
    server = commands.add_parser("server-cert", help="the broker's certificate")
    server.add_argument("--ca", type=Path, required=True, help="folder of ca.key and ca.crt")
    server.add_argument("--name", required=True, help="the name agents connect to")
    server.add_argument("--dns", action="append", default=[], help="another DNS name")
    server.add_argument("--ip", action="append", default=[], help="an IP address agents use")
    server.add_argument("--out", type=Path, required=True)
    server.add_argument("--days", type=_days, default=CERT_DAYS)
    server.add_argument("--rotate", action="store_true", help="a new key and certificate")
    users = commands.add_parser("sites", help="per-site passwords, password_file and ACL")
    users.add_argument("--inventory", type=Path, required=True)
    users.add_argument("--out", type=Path, required=True)
    users.add_argument("--collector-user", default=COLLECTOR_USER)
    users.add_argument("--ca", type=Path, help="copy ca.crt to every site (and sign certs)")
    users.add_argument("--client-certs", action="store_true",
                       help="a client certificate per site (CN = site id)")
    users.add_argument("--rotate", nargs="*", metavar="USER",
                       help="new secrets: for the users named, or for all")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "init-ca":
            done = init_ca(args.out, args.key, args.days, args.cn)
        elif args.command == "server-cert":
            done = server_cert(args.ca, args.out, [args.name, *args.dns], args.ip, args.days,
                               args.rotate)
        else:
            done = sites(args.inventory, args.out, args.collector_user, args.rotate, args.ca,
                         args.client_certs)
    except PkiError as err:
        print(f"lỗi / error: {err}", file=sys.stderr)
        return err.code
    except OSError as err:
        print(f"lỗi / error: {err}", file=sys.stderr)
        return 2
    print("\n".join(done))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
