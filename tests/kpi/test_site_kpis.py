"""KPI and rule declarations in the site file: the old keys stay valid, mistakes name the key."""

from pathlib import Path

import pytest

from analytics.kpi.inputs import site_measures
from core.errors import ConfigError
from core.site import parse_site

BASE = """
site: {id: t, name: "Huyện thử"}
org_units: [{id: d, kind: district, name: "Huyện"}]
"""


def test_old_style_kpi_without_formula_is_still_valid():
    s = parse_site(BASE + 'kpis: [{id: satisfaction, name: "Hài lòng", unit: "%", target: 90}]')
    assert s.kpis[0].formula is None and s.kpis[0].target_for(2030) == 90


@pytest.mark.parametrize(
    ("kpis", "message"),
    [
        (
            "[{id: r, name: R, formula: {op: ratio, numerator: {input: dossiers}}}]",
            "kpis[0].formula: a ratio needs a numerator and a denominator",
        ),
        (
            "[{id: p, name: P, formula: {op: percentile, q: 0.9, measure: {input: field_reports, "
            "value: resolution_h, bins: [5, 1]}}}]",
            "kpis[0].formula: a percentile needs increasing measure.bins",
        ),
        (
            "[{id: a, name: A, formula: {op: avg, measure: {input: dossiers}}}]",
            "kpis[0].formula: 'avg' needs measure.value",
        ),
    ],
)
def test_bad_formula_names_the_key(kpis, message):
    with pytest.raises(
        ConfigError,
        match=r"site file x\.yaml: "
        + message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\."),
    ):
        parse_site(BASE + f"kpis: {kpis}", Path("x.yaml"))


def test_unknown_input_or_filter_is_a_one_line_error():
    s = parse_site(BASE + "kpis: [{id: c, name: C, formula: {op: count, measure: {input: nope}}}]")
    with pytest.raises(ConfigError, match="kpis 'c': unknown KPI input 'nope'"):
        site_measures(s)
    s = parse_site(
        BASE + "kpis: [{id: c, name: C, formula: {op: count, measure: {input: dossiers, "
        "where: {colour: red}}}}]"
    )
    with pytest.raises(ConfigError, match="input 'dossiers' has no filter 'colour'"):
        site_measures(s)


def test_rule_referring_to_an_unknown_kpi():
    with pytest.raises(ConfigError, match=r"rules\[0\]\.kpi: unknown KPI 'x'"):
        parse_site(BASE + "rules: [{id: r, kind: kpi_status, name: R, kpi: x}]", Path("s.yaml"))
