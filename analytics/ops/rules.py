"""The rule engine, pure: conditions per key, pending period, clear period, flap detection.

Each (rule, key) has a small state (JSON in rule_state). `step` takes the condition observed at
`now` and returns the new state and what to do: 'fire' (open, or count again on the open
incident), 'touch' (still firing: last seen) or 'clear' (auto-resolve). Time is always passed in,
so tests drive it with a hand-moved clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core.site import Rule


@dataclass
class RuleState:
    firing: bool = False
    pending_since: float | None = None
    clear_since: float | None = None
    changes: list[float] = field(default_factory=list)  # fire/clear times (flap detection)
    last_value: float | None = None
    last_time: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> RuleState:
        return cls(**d) if d else cls()


@dataclass(frozen=True)
class Action:
    kind: str  # 'fire' | 'touch' | 'clear'
    key: str
    at: float
    value: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def compare(op: str, a: float, b: float) -> bool:
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def flapping(rule: Rule, st: RuleState, now: float) -> bool:
    recent = [t for t in st.changes if now - t <= rule.flap.window_s]
    return len(recent) >= rule.flap.max_changes


def step(
    rule: Rule,
    st: RuleState,
    key: str,
    cond: bool,
    now: float,
    value: float | None = None,
    evidence: dict[str, Any] | None = None,
) -> tuple[RuleState, list[Action]]:
    """Advance one key by one observation."""
    ev = evidence or {}
    st.changes = [t for t in st.changes if now - t <= rule.flap.window_s]
    if cond:
        st.clear_since = None
        if st.firing:
            return st, [Action("touch", key, now, value, ev)]
        if st.pending_since is None:
            st.pending_since = now
        if now - st.pending_since >= rule.for_s:
            st.firing, st.pending_since = True, None
            st.changes.append(now)
            return st, [Action("fire", key, now, value, ev)]
        return st, []
    st.pending_since = None
    if not st.firing:
        return st, []
    if st.clear_since is None:
        st.clear_since = now
    # a flapping key must stay clear for the whole flap window before it resolves
    need = (
        max(rule.clear_for_s, rule.flap.window_s) if flapping(rule, st, now) else rule.clear_for_s
    )
    if now - st.clear_since >= need:
        st.firing, st.clear_since = False, None
        st.changes.append(now)
        return st, [Action("clear", key, now, value, ev)] if rule.auto_resolve else []
    return st, []


def robust_z(value: float, history: Sequence[float]) -> float:
    """(value − median) / (1.4826 · MAD) over the history; falls back to the mean absolute
    deviation when the MAD is 0, and to ±inf / 0 when the history is constant."""
    if not history:
        return 0.0
    med = statistics.median(history)
    mad = statistics.median(abs(h - med) for h in history)
    scale = 1.4826 * mad
    if scale == 0:
        scale = 1.2533 * statistics.fmean(abs(h - med) for h in history)
    if scale == 0:
        return 0.0 if value == med else math.copysign(math.inf, value - med)
    return (value - med) / scale


def rate_per_minute(st: RuleState, value: float, now: float) -> float | None:
    """Change per minute since the previous reading of the key (None for the first one)."""
    if st.last_value is None or st.last_time is None or now <= st.last_time:
        return None
    return (value - st.last_value) * 60.0 / (now - st.last_time)


def observe_value(
    rule: Rule, st: RuleState, key: str, value: float, now: float, extra: dict | None = None
) -> tuple[RuleState, list[Action]]:
    """A reading of a threshold or rate-of-change rule's signal."""
    assert rule.value is not None
    if rule.kind == "rate_of_change":
        rate = rate_per_minute(st, value, now)
        st.last_value, st.last_time = value, now
        if rate is None:
            return st, []
        ev = {"value": value, "rate_per_min": rate, **(extra or {})}
        return step(rule, st, key, compare(rule.op, rate, rule.value), now, rate, ev)
    st.last_value, st.last_time = value, now
    ev = {"value": value, "threshold": rule.value, **(extra or {})}
    return step(rule, st, key, compare(rule.op, value, rule.value), now, value, ev)


def observe_anomaly(
    rule: Rule, st: RuleState, key: str, value: float, history: Sequence[float], now: float
) -> tuple[RuleState, list[Action]]:
    assert rule.value is not None
    z = robust_z(value, history)
    ev = {"value": value, "history": list(history), "z": z if math.isfinite(z) else str(z)}
    return step(rule, st, key, compare(rule.op, z, rule.value), now, value, ev)


def observe_silence(
    rule: Rule, st: RuleState, key: str, last_seen: float | None, expected_s: float, now: float
) -> tuple[RuleState, list[Action]]:
    silent = last_seen is None or now - last_seen > rule.silence_factor * expected_s
    ev = {"last_seen": last_seen, "expected_interval_s": expected_s}
    return step(rule, st, key, silent, now, None, ev)
