"""KPI formulas as pure functions over live values and the org-unit tree."""

from __future__ import annotations

from collections.abc import Mapping

from core.site import Site


def roll_up(
    site: Site, per_source: Mapping[str, float], unit_of: Mapping[str, str]
) -> dict[str, float]:
    """Sum values of sources into their org unit and every ancestor; units with none get 0."""
    totals = {u.id: 0.0 for u in site.org_units}
    for source_id, value in per_source.items():
        unit = unit_of.get(source_id)
        if unit is None or unit not in site.units:
            continue
        for ancestor in site.ancestors(unit):
            totals[ancestor] += value
    return totals


def wifi_clients(site: Site, latest: Mapping[str, Mapping[str, object]]) -> dict[str, int]:
    """Connected public-WiFi users per org unit: clients of the APs that are up, rolled up.

    `latest` maps an access-point id to its latest reading ({'clients', 'up', 'org_unit'}).
    """
    per_ap = {
        ap: float(v["clients"])  # type: ignore[arg-type]
        for ap, v in latest.items()
        if v.get("up") and site.source_by_id.get(ap) and site.source_by_id[ap].kind == "wifi_ap"
    }
    unit_of = {ap: site.source_by_id[ap].org_unit for ap in per_ap}
    return {unit: int(v) for unit, v in roll_up(site, per_ap, unit_of).items()}


def changed(old: Mapping[str, float], new: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in new.items() if old.get(k) != v}
