"""The secured variant of the local broker: SASL_SSL with SCRAM-SHA-512 and ACLs enforced.

``streamer kafka up --security sasl_ssl`` (and the ``secure_kafka`` test fixture) run the
same single-node KRaft broker as :mod:`streamer.kafka.local`, with:

- one client listener, ``SASL_SSL`` (TLS, then SCRAM-SHA-512), which is also the
  inter-broker listener; the controller listener speaks ``SASL_PLAINTEXT`` with ``PLAIN``
  (KRaft controllers cannot use SCRAM, whose credentials live in the metadata they serve);
- a throw-away CA and a broker certificate for ``127.0.0.1``/``localhost``, made at every
  start with ``cryptography`` (PEM files Kafka and librdkafka read directly, no keystores);
- SCRAM users ``admin`` (a super user) and ``streamer`` (no rights until ACLs grant them),
  created when the storage is formatted; their random passwords are kept in
  ``<home>/credentials.json`` (mode 0600) so restarts keep them;
- ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: what no ACL
  allows is denied.

It writes ``<home>/client.properties`` (user ``streamer``) and ``<home>/admin.properties``
(user ``admin``), the files to pass as ``--command-config``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import ToolMissingError

MECHANISM = "SCRAM-SHA-512"
ADMIN_USER = "admin"
APP_USER = "streamer"
_CONTROLLER_USER = "controller"


@dataclass(frozen=True)
class SecureFiles:
    """Where one secured home keeps its CA, broker key+certificate and passwords."""

    home: Path

    @property
    def tls_dir(self) -> Path:
        return self.home / "tls"

    @property
    def ca(self) -> Path:
        """The CA certificate clients trust (``ssl.ca.location``)."""
        return self.tls_dir / "ca.pem"

    @property
    def broker_pem(self) -> Path:
        return self.tls_dir / "broker.pem"

    @property
    def credentials_file(self) -> Path:
        return self.home / "credentials.json"

    def passwords(self) -> dict[str, str]:
        """User -> password, chosen once per home (so restarts keep the SCRAM users valid)."""
        try:
            return dict(json.loads(self.credentials_file.read_text()))
        except FileNotFoundError:
            pass
        users = (ADMIN_USER, APP_USER, _CONTROLLER_USER)
        chosen = {user: secrets.token_urlsafe(18) for user in users}
        _write_private(self.credentials_file, json.dumps(chosen, indent=2) + "\n")
        return chosen

    def client_config(self, user: str = APP_USER) -> dict[str, str]:
        """librdkafka settings for ``user`` (SASL_SSL, SCRAM-SHA-512, this home's CA)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": user,
            "sasl.password": self.passwords()[user],
            "ssl.ca.location": str(self.ca),
        }

    def write_client_files(self) -> tuple[Path, Path]:
        """``client.properties`` (user streamer) and ``admin.properties`` (user admin)."""
        written = []
        for user, name in ((APP_USER, "client.properties"), (ADMIN_USER, "admin.properties")):
            path = self.home / name
            body = "".join(f"{k}={v}\n" for k, v in self.client_config(user).items())
            _write_private(path, f"# {user} on the local secured broker\n{body}")
            written.append(path)
        return written[0], written[1]


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a password or a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def make_certificates(files: SecureFiles, host: str) -> None:
    """A new CA and a broker certificate signed by it, valid for ``host`` and localhost.

    ``cryptography`` does in a few calls what keytool needs five JVM runs and two keystores
    for; it is an optional dependency (``pip install 'streamer[local-tls]'``).
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ToolMissingError(
            "the secured local broker makes its TLS certificates with the `cryptography` "
            "package: pip install 'streamer[local-tls]' (or pip install cryptography)"
        ) from None

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("streamer local CA"))
        .issuer_name(name("streamer local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(host))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    chain = cert.public_bytes(pem).decode() + ca_cert.public_bytes(pem).decode()
    # Kafka's PEM key store: the private key (PKCS#8) and the certificate chain in one file.
    _write_private(files.broker_pem, key_pem + chain)
    _write_private(files.ca, ca_cert.public_bytes(pem).decode())


def server_config(files: SecureFiles, host: str, port: int, controller_port: int) -> dict[str, str]:
    """The broker properties that replace the PLAINTEXT listeners (see the module docstring)."""
    pw = files.passwords()
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    ctl = pw[_CONTROLLER_USER]
    return {
        "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port}",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": MECHANISM,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            f'{scram} required username="{ADMIN_USER}" password="{pw[ADMIN_USER]}";'
        ),
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{plain} required username="{_CONTROLLER_USER}" password="{ctl}" '
            f'user_{_CONTROLLER_USER}="{ctl}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(files.broker_pem),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(files.ca),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN_USER};User:{_CONTROLLER_USER}",
    }


def format_args(files: SecureFiles) -> list[str]:
    """``StorageTool format`` arguments that create the SCRAM users with the storage."""
    pw = files.passwords()
    return [
        arg
        for user in (ADMIN_USER, APP_USER)
        for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={pw[user]}]")
    ]


__all__ = [
    "ADMIN_USER",
    "APP_USER",
    "MECHANISM",
    "SecureFiles",
    "format_args",
    "make_certificates",
    "server_config",
]
