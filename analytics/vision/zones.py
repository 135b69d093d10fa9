"""Pure zone geometry: polygons and lines given as fractions of the frame, in frame pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import ConfigError

Point = tuple[float, float]


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Proper intersection of two segments (touching at an end point does not count)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


def polygon_area(points: Sequence[Point]) -> float:
    n = len(points)
    return (
        abs(
            sum(
                points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
                for i in range(n)
            )
        )
        / 2
    )


def check_polygon(points: Sequence[Point], where: str) -> None:
    """Refuse polygons a rule could not use: too few points, no area, or crossing edges."""
    if len(points) < 3:
        raise ConfigError(f"{where}: a polygon needs at least 3 points")
    if any(not (0 <= x <= 1 and 0 <= y <= 1) for x, y in points):
        raise ConfigError(f"{where}: points are fractions of the frame, each in [0, 1]")
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # neighbours share a corner
            if segments_intersect(*edges[i], *edges[j]):
                raise ConfigError(f"{where}: polygon edges {i} and {j} cross (self-intersecting)")
    if polygon_area(points) < 1e-6:
        raise ConfigError(f"{where}: the polygon has no area (points on one line?)")


def contains(poly: Sequence[Point], pt: Point) -> bool:
    """Ray casting point-in-polygon; points on an edge may fall either way."""
    x, y = pt
    inside = False
    n = len(poly)
    for i in range(n):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            xi = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < xi:
                inside = not inside
    return inside


def crossing(line: tuple[Point, Point], before: Point, after: Point) -> int:
    """+1 when a point moved across ``line`` from its left to its right side (image coordinates,
    y down: "left" is where the cross product is negative), -1 the other way, 0 if it did not."""
    a, b = line
    if not segments_intersect(a, b, before, after):
        return 0
    return 1 if _cross(a, b, before) < 0 else -1


@dataclass(frozen=True)
class ZoneGeom:
    """A zone in frame pixels."""

    id: str
    kind: str  # "polygon" | "line"
    points: tuple[Point, ...]

    def contains(self, pt: Point) -> bool:
        return self.kind == "polygon" and contains(self.points, pt)

    @property
    def line(self) -> tuple[Point, Point]:
        return self.points[0], self.points[-1]


def build_zone(
    zone_id: str, kind: str, points: Sequence[Point], width: int, height: int, where: str
) -> ZoneGeom:
    """Validate a zone given in frame fractions and scale it to pixels."""
    if kind == "polygon":
        check_polygon(points, where)
    elif len(points) != 2 or points[0] == points[1]:
        raise ConfigError(f"{where}: a line needs exactly 2 distinct points")
    return ZoneGeom(zone_id, kind, tuple((x * width, y * height) for x, y in points))


FULL_FRAME: tuple[Point, ...] = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))
