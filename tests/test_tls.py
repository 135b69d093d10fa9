"""Production settings are TLS only: MQTT on the TLS port with the broker's certificate checked
against the IOC's CA, the plain port closed, the API over HTTPS."""

from __future__ import annotations

import ssl
import tempfile
import threading
from pathlib import Path

import httpx
import pytest

from core import broker
from core.broker import INGEST_USER
from core.settings import Settings
from core.tls import ensure_tls
from ingest.topics import subscription
from tests.api_util import ApiServer
from tests.conftest import free_port, wait_until
from tests.mqtt_util import ap_topic, connect, device_client, status_payload


@pytest.fixture
def production(migrated, site):
    var = Path(tempfile.mkdtemp(prefix="ioc-tls-"))
    var.chmod(0o755)
    s = Settings.model_validate(
        {
            **migrated.model_dump(),
            "production": True,
            "var_dir": var,
            "mqtt_port": free_port(),
            "mqtt_tls_port": free_port(),
        }
    )
    broker.start(s, site)
    yield s
    broker.stop(s)


def test_production_forces_tls_everywhere(migrated):
    s = Settings.model_validate({**migrated.model_dump(), "production": True})
    assert (s.mqtt_tls, s.mqtt_plain, s.api_tls) == (True, False, True)
    assert s.mqtt_endpoint()[1] == s.mqtt_tls_port


def test_mqtt_over_tls_only(production):
    s = production
    got: list[bytes] = []
    sub = device_client(s, INGEST_USER)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    ready = threading.Event()
    sub.on_subscribe = lambda *a: ready.set()
    connect(sub, s)
    sub.subscribe(subscription(s.topic_prefix, group=None), qos=1)
    assert ready.wait(5)
    dev = connect(device_client(s, "wifi-ap-iadal"), s)
    body = status_payload(9)
    dev.publish(ap_topic(s, "wifi-ap-iadal", "iahdrai-iadal"), body, qos=1).wait_for_publish(5)
    wait_until(lambda: body in got, timeout=5)
    assert sub._ssl  # the connection really is TLS
    dev.disconnect()
    sub.disconnect()

    # the plain port is not open in production
    assert not broker.port_open(s.mqtt_host, s.mqtt_port)
    # a client that does not trust the IOC's CA refuses the broker's certificate
    plain_ssl = device_client(s.model_copy(update={"mqtt_tls": False}), "wifi-ap-iadal")
    plain_ssl.tls_set(cert_reqs=ssl.CERT_REQUIRED)  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        plain_ssl.connect(s.mqtt_host, s.mqtt_tls_port)


def test_api_over_https(production):
    s = production
    with ApiServer(s) as api:
        assert api.url.startswith("https://")
        ca = str(ensure_tls(s.tls_dir, ["localhost"]).ca_cert)
        r = httpx.get(api.url + "/healthz", verify=ssl.create_default_context(cafile=ca))
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{api.port}/healthz", timeout=3)
        with pytest.raises(httpx.ConnectError):  # not trusted without the IOC's CA
            httpx.get(api.url + "/healthz")
