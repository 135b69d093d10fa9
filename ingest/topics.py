"""The MQTT topic scheme: ``<prefix>/<org unit>/<source kind>/<source id>/<stream>``.

Example: ``ioc/iahdrai-iatoi/wifi_ap/wifi-ap-ubnd-sanh/status``.
"""

from __future__ import annotations

from typing import NamedTuple


class Topic(NamedTuple):
    prefix: str
    org_unit: str
    kind: str
    source_id: str
    stream: str


def topic_for(prefix: str, org_unit: str, kind: str, source_id: str, stream: str) -> str:
    return f"{prefix}/{org_unit}/{kind}/{source_id}/{stream}"


def parse_topic(topic: str) -> Topic | None:
    parts = topic.split("/")
    if len(parts) != 5 or not all(parts):
        return None
    return Topic(*parts)


def subscription(prefix: str, group: str | None = "ioc-ingest") -> str:
    """Every source of a prefix; a shared subscription when `group` is given (MQTT 5)."""
    base = f"{prefix}/+/+/+/+"
    return f"$share/{group}/{base}" if group else base
