"""One way to make an MQTT client for any IOC process: MQTT 5, its own account, TLS when on."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.broker import account_password
from core.settings import Settings
from core.tls import ensure_tls


def new_client(
    settings: Settings,
    username: str,
    client_id: str = "",
    *,
    password: str | None = None,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho 2.x client with credentials set and, where IOC_MQTT_TLS is on, TLS that checks
    the broker's certificate against the IOC's CA. Connect to `settings.mqtt_endpoint()`."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    c.username_pw_set(
        username, account_password(settings, username) if password is None else password
    )
    if settings.mqtt_tls:
        tls = ensure_tls(settings.tls_dir, settings.tls_hostnames.split(","))
        c.tls_set(
            ca_certs=str(tls.ca_cert),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return c
