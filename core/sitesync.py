"""Copy the site file's org units and sources into the database (upsert; gone sources inactive)."""

from __future__ import annotations

import psycopg

from core.site import Site


def sync_site(conn: psycopg.Connection, site: Site) -> tuple[int, int]:
    """Upsert org units and sources; return (units, sources) now active."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO org_units (id, parent_id, kind, name, name_en, lat, lon)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET parent_id = EXCLUDED.parent_id, kind = EXCLUDED.kind,
                 name = EXCLUDED.name, name_en = EXCLUDED.name_en, lat = EXCLUDED.lat,
                 lon = EXCLUDED.lon, updated_at = now()""",
            [(u.id, u.parent, u.kind, u.name, u.name_en, u.lat, u.lon) for u in site.org_units],
        )
        rows = [
            (s.id, s.kind, s.org_unit, s.name, s.lat, s.lon, s.expected_interval_s)
            for s in site.sources
        ] + [(c.id, "camera", c.org_unit, c.name, c.lat, c.lon, 10.0) for c in site.cameras]
        cur.executemany(
            """INSERT INTO sources (id, kind, org_unit_id, name, lat, lon, expected_interval_s)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind,
                 org_unit_id = EXCLUDED.org_unit_id, name = EXCLUDED.name, lat = EXCLUDED.lat,
                 lon = EXCLUDED.lon, expected_interval_s = EXCLUDED.expected_interval_s,
                 active = true, updated_at = now()""",
            rows,
        )
        cur.execute(
            "UPDATE sources SET active = false, updated_at = now() WHERE NOT (id = ANY(%s))",
            ([r[0] for r in rows],),
        )
    return len(site.org_units), len(rows)
