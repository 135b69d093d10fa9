"""Zones, tracker and rules as pure functions, on synthetic tracks with known histories."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analytics.vision.detector import Detection
from analytics.vision.motion import MotionResult
from analytics.vision.rules import RuleEngine, in_schedule
from analytics.vision.tracker import Track, Tracker
from analytics.vision.zones import build_zone, check_polygon, contains, crossing
from core.errors import ConfigError
from core.site import CameraRule

W, H = 800, 600


def zones() -> dict:
    return {
        "yard": build_zone("yard", "polygon", [(0, 0.5), (1, 0.5), (1, 1), (0, 1)], W, H, "t"),
        "gate": build_zone("gate", "line", [(0.5, 0), (0.5, 1)], W, H, "t"),
    }


def engine(*rules: CameraRule, **kw: object) -> RuleEngine:
    start = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    return RuleEngine("cam", list(rules), zones(), W, H, wall_start=start, **kw)  # type: ignore[arg-type]


def track(tid: int, box: tuple, label: str = "person", score: float = 0.8, **kw: object) -> Track:
    tr = Track(tid, box, 0.0, 0.0, **kw)  # type: ignore[arg-type]
    tr.labels.append(label)
    tr.scores.append(score)
    return tr


IN_YARD = (100.0, 350.0, 140.0, 450.0)  # foot at (120, 450): inside the yard
OUT = (100.0, 50.0, 140.0, 150.0)


def run(eng: RuleEngine, frames: list[tuple[float, list[Track]]]) -> tuple[list, list]:
    started, ended = [], []
    for t, trs in frames:
        s, e = eng.step(t, trs, None)
        started += s
        ended += e
    ended += eng.flush(frames[-1][0])
    return started, ended


def test_polygon_and_line_geometry() -> None:
    sq = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert contains(sq, (5, 5)) and not contains(sq, (15, 5))
    line = ((5, 0), (5, 10))
    assert crossing(line, (2, 5), (8, 5)) == -crossing(line, (8, 5), (2, 5)) != 0
    assert crossing(line, (2, 5), (4, 5)) == 0


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([(0, 0), (1, 1), (1, 0), (0, 1)], "cross"),
        ([(0, 0), (0.5, 0.5), (1, 1)], "no area"),
        ([(0, 0), (1, 0)], "at least 3"),
        ([(0, 0), (1.5, 0), (1, 1)], r"\[0, 1\]"),
    ],
)
def test_malformed_polygons_are_refused(points: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_polygon(points, "camera c zone z")


def test_one_person_standing_still_gives_one_event() -> None:
    eng = engine(CameraRule(kind="intrusion", zone="yard", debounce_s=1, cooldown_s=30))
    tr = track(1, IN_YARD)
    # 60 s present, with two short losses (detector missed it) of under the grace period.
    frames = [(t / 5, [] if 100 <= t < 105 or 200 <= t < 208 else [tr]) for t in range(300)]
    started, ended = run(eng, frames)
    assert len(started) == 1 and len(ended) == 1
    assert ended[0].track_ids == [1] and ended[0].start_s == 0.0
    assert ended[0].end_s == pytest.approx(299 / 5)


def test_debounce_and_min_score_and_size() -> None:
    rule = CameraRule(kind="intrusion", zone="yard", debounce_s=2)
    eng = engine(rule)
    brief = [(t / 5, [track(1, IN_YARD)]) for t in range(5)]  # 0.8 s < debounce
    assert run(eng, brief) == ([], [])
    weak = [(t / 5, [track(2, IN_YARD, score=0.3)]) for t in range(30)]
    assert run(engine(rule), weak) == ([], [])
    tiny = [(t / 5, [track(3, (100, 440, 103, 450))]) for t in range(30)]
    assert run(engine(rule), tiny) == ([], [])
    outside = [(t / 5, [track(4, OUT)]) for t in range(30)]
    assert run(engine(rule), outside) == ([], [])
    dog = [(t / 5, [track(5, IN_YARD, label="dog")]) for t in range(30)]
    assert run(engine(rule), dog) == ([], [])


def test_cooldown_and_reacquired_stationary_object() -> None:
    eng = engine(CameraRule(kind="intrusion", zone="yard", debounce_s=0, cooldown_s=30))
    car = track(1, IN_YARD, label="car", stationary=True)
    same_place = track(2, IN_YARD, label="car", stationary=True)
    frames = [(t, [car]) for t in range(0, 10)] + [(t, []) for t in range(10, 15)]
    frames += [(t, [same_place]) for t in range(15, 25)]  # new id, same spot, within cooldown
    _started, ended = run(eng, frames)
    assert len(ended) == 1 and ended[0].track_ids == [1]


def test_crowding_needs_count_for_duration() -> None:
    rule = CameraRule(kind="crowding", zone="yard", min_count=3, min_duration_s=5, debounce_s=0)
    people = [track(i, (100 + 50 * i, 350, 140 + 50 * i, 450)) for i in range(4)]
    frames = [(t, people[:3]) for t in range(0, 3)] + [(t, people[:2]) for t in range(3, 6)]
    assert run(engine(rule), frames) == ([], [])  # 3 people, but only for 3 s
    frames = [(t, people[: 3 + (t % 2)]) for t in range(0, 12)]
    _started, ended = run(engine(rule), frames)
    assert len(ended) == 1
    assert ended[0].max_count == 4 and ended[0].track_ids == [0, 1, 2, 3]


def test_loitering_and_stopped_vehicle() -> None:
    loiter = CameraRule(kind="loitering", zone="yard", min_duration_s=20, debounce_s=0)
    frames = [(t, [track(1, IN_YARD)]) for t in range(0, 15)]
    assert run(engine(loiter), frames) == ([], [])
    frames = [(t, [track(1, IN_YARD)]) for t in range(0, 30)]
    started, _ = run(engine(loiter), frames)
    assert len(started) == 1 and started[0].start_s == 0

    stop = CameraRule(kind="stopped_vehicle", zone="yard", min_duration_s=10, debounce_s=0)
    moving = [(t, [track(1, IN_YARD, label="car")]) for t in range(0, 30)]
    assert run(engine(stop), moving) == ([], [])
    parked = [(t, [track(1, IN_YARD, label="car", stationary=True)]) for t in range(0, 30)]
    started, ended = run(engine(stop), parked)
    assert len(started) == 1 and ended[0].label == "car"


def test_line_crossing_counts_per_direction() -> None:
    eng = engine(CameraRule(kind="line_crossing", zone="gate", cooldown_s=5))
    frames = []
    for t in range(10):  # track 1 walks left to right across x = 400
        x = 300 + 25 * t
        y = 500 - 25 * t  # track 2 walks right to left
        frames.append((t, [track(1, (x, 300, x + 20, 360)), track(2, (y, 300, y + 20, 360))]))
    _, ended = run(eng, frames)
    directions = sorted((e.track_ids[0], e.detail["direction"]) for e in ended)
    assert directions == [(1, "in"), (2, "out")] or directions == [(1, "out"), (2, "in")]
    counts = eng.take_counts()
    assert sum(counts.values()) == 2
    assert {k[1] for k in counts} == {"in", "out"}


def test_tampering_blackout() -> None:
    eng = engine(CameraRule(kind="tampering", debounce_s=2, cooldown_s=60))
    normal = MotionResult([], 0.01, 120, 40, 300)
    dark = MotionResult([], 0.01, 3, 1, 0.1)
    started = []
    for t in range(20):
        s, _ = eng.step(t, [], dark if 5 <= t < 15 else normal)
        started += s
    assert [e.label for e in started] == ["blackout"]


def test_schedule_wraps_midnight() -> None:
    night = "22:00-05:00"
    assert in_schedule(night, datetime(2026, 1, 1, 23, 30))
    assert in_schedule(night, datetime(2026, 1, 1, 4, 59))
    assert not in_schedule(night, datetime(2026, 1, 1, 12, 0))
    eng = engine(CameraRule(kind="intrusion", zone="yard", debounce_s=0, schedule=night))
    assert run(eng, [(t, [track(1, IN_YARD)]) for t in range(5)]) == ([], [])  # noon


def test_track_label_is_the_mode_and_score_the_median() -> None:
    tr = track(1, IN_YARD, score=0.9)
    for lb, s in [("person", 0.5), ("bird", 0.95), ("person", 0.6), ("person", 0.7)]:
        tr.labels.append(lb)
        tr.scores.append(s)
    assert tr.label == "person" and tr.score == pytest.approx(0.65)


def test_tracker_keeps_ids_through_misses_and_crossings() -> None:
    tk = Tracker(max_lost_s=1.0)
    ids = {}
    for i in range(20):
        t = i * 0.2
        a = Detection((10 + 10 * i, 100, 50 + 10 * i, 200), 0.8, "person")
        b = Detection((400 - 10 * i, 110, 440 - 10 * i, 210), 0.8, "person")
        dets = [a] if i in (7, 8) else [a, b]  # b missed for two frames
        for tr in tk.update(dets, t):
            ids.setdefault(round(tr.box[0] - 10 * i), set()).add(tr.id)
    all_ids = {tr.id for tr in tk.tracks}
    assert len(all_ids) == 2
    weak = tk.update([Detection((200, 100, 240, 200), 0.25, "person")], 20 * 0.2)
    assert weak == [] or all(tr.id in all_ids for tr in weak)  # weak boxes never start tracks
