"""The site file: the sample district loads; every kind of mistake names its key."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.site import parse_site
from tests.conftest import SAMPLE_SITE

MINIMAL = """
site: {id: t, name: "Huyện Thử"}
org_units:
  - {id: p, kind: province, name: "Tỉnh"}
  - {id: d, kind: district, parent: p, name: "Huyện"}
  - {id: c1, kind: commune, parent: d, name: "Xã 1"}
  - {id: c2, kind: commune, parent: d, name: "Xã 2"}
sources:
  - {id: ap1, kind: wifi_ap, org_unit: c1, name: "AP 1"}
"""


def test_sample_site_describes_ia_hdrai(site):
    assert site.site.name == "Huyện Ia H'Drai"
    kinds = {u.kind for u in site.org_units}
    assert {"province", "district", "commune", "agency"} <= kinds
    assert len(site.cameras) == 5
    assert sum(1 for s in site.sources if s.kind == "wifi_ap") >= 5
    assert any(s.kind == "service_system" and s.org_unit == "iahdrai-motcua" for s in site.sources)
    assert {k.id for k in site.kpis} >= {"wifi_clients", "online_rate"}


def test_tree_helpers():
    site = parse_site(MINIMAL)
    assert site.ancestors("c1") == ["c1", "d", "p"]
    assert site.subtree("d") == {"d", "c1", "c2"}
    assert site.subtree("c2") == {"c2"}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda s: s.replace('parent: d, name: "Xã 2"', 'parent: nowhere, name: "Xã 2"'),
            "org_units[3].parent: unknown org unit 'nowhere'",
        ),
        (lambda s: s.replace("id: c2", "id: c1"), "org_units[3].id: duplicate org unit 'c1'"),
        (
            lambda s: s.replace("org_unit: c1", "org_unit: c9"),
            "sources[0].org_unit: unknown org unit 'c9'",
        ),
        (lambda s: s.replace("kind: wifi_ap", "kind: toaster"), "sources[0].kind"),
        (lambda s: s.replace('name: "AP 1"', 'name: "AP 1", colour: red'), "sources[0].colour"),
        (
            lambda s: s.replace(
                '{id: p, kind: province, name: "Tỉnh"}',
                '{id: p, kind: province, parent: c1, name: "Tỉnh"}',
            ),
            "cycle",
        ),
        (
            lambda s: (
                s + "cameras:\n  - {id: cam, org_unit: c1, name: C, url: rtsp://x, "
                "zones: [{id: z, name: Z, points: [[0, 0], [1, 1]]}]}\n"
            ),
            "cameras[0].zones[0]: a polygon needs at least 3 points",
        ),
        (lambda s: s.replace("site: {id: t,", "site: {id: t, name: [}"), "is not valid YAML"),
    ],
)
def test_mistakes_name_their_key(edit, expected):
    with pytest.raises(ConfigError) as err:
        parse_site(edit(MINIMAL), SAMPLE_SITE)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
