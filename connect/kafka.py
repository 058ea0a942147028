"""Kafka connection wiring every part shares: the broker list and the TLS context, from the connection
settings, so the worker (Faust/aiokafka), the archive (aiokafka) and the operator tools (kafka-python) reach a
cluster the same way."""

from __future__ import annotations

import re
import ssl

from connect.settings import ConnectionSettings


def bootstrap_servers(broker_url: str) -> list[str]:
    """'kafka://a:9092;kafka://b:9092' or 'a:9092,b:9092' -> ['a:9092', 'b:9092'] (Faust's URL form or Kafka's)."""
    parts = [p.strip() for p in re.split(r"[;,]", broker_url) if p.strip()]
    return [re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://", "", p).rstrip("/") for p in parts]


def kafka_ssl_context(s: ConnectionSettings) -> ssl.SSLContext | None:
    """The TLS context of an SSL / SASL_SSL connection (CA file, client certificate), None for plaintext."""
    if "SSL" not in s.kafka_security_protocol.upper():
        return None
    ctx = ssl.create_default_context(cafile=s.kafka_ssl_cafile or None)
    if s.kafka_ssl_certfile:
        ctx.load_cert_chain(s.kafka_ssl_certfile, s.kafka_ssl_keyfile or None)
    return ctx


def auth_kwargs(s: ConnectionSettings) -> dict:
    """security_protocol and, for SASL_*, mechanism, user and password: the same keyword names in kafka-python
    and aiokafka, so every client (worker preflight, archive, operator tools) authenticates alike. TLS is added
    by the caller, in its client's own form (an SSLContext for aiokafka, file paths for kafka-python)."""
    protocol = s.kafka_security_protocol.upper()
    out: dict = {"security_protocol": protocol}
    if protocol.startswith("SASL"):
        out.update(
            sasl_mechanism=s.kafka_sasl_mechanism.upper(),
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password,
        )
    return out


def aiokafka_kwargs(s: ConnectionSettings) -> dict:
    """auth_kwargs plus the TLS context in aiokafka's form: what every aiokafka client here (the worker's
    preflight and log reads, the archive) passes to reach the cluster."""
    out = auth_kwargs(s)
    if "SSL" in out["security_protocol"]:
        out["ssl_context"] = kafka_ssl_context(s)
    return out
