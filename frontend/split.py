"""Cutting a range query into parts on split-interval boundaries (as Cortex/Thanos do).

Every part keeps the request's step grid (start + k*step): a part ends on the last grid
point before the next interval boundary and the next part starts one step later, so no step
is evaluated twice or skipped."""
from __future__ import annotations


def align_to_step(start_ms: int, end_ms: int, step_ms: int) -> tuple[int, int]:
    """Start and end rounded down to multiples of the step (better cacheable)."""
    return start_ms - start_ms % step_ms, end_ms - end_ms % step_ms


def last_grid_point(start_ms: int, end_ms: int, step_ms: int) -> int:
    """The last start + k*step that is <= end."""
    return start_ms + (end_ms - start_ms) // step_ms * step_ms


def _next_boundary(t_ms: int, step_ms: int, interval_ms: int) -> int:
    """The last grid point (of the grid through ``t_ms``) before the interval after ``t_ms``."""
    next_interval = (t_ms // interval_ms + 1) * interval_ms
    target = next_interval - (next_interval - t_ms) % step_ms
    return target - step_ms if target == next_interval else target


def split_by_interval(start_ms: int, end_ms: int, step_ms: int, interval_ms: int
                      ) -> list[tuple[int, int]]:
    """Parts [(start, end)] covering the grid points of [start, end]; ends are grid points."""
    end_ms = last_grid_point(start_ms, end_ms, step_ms)
    if interval_ms <= 0:
        return [(start_ms, end_ms)]
    parts = []
    s = start_ms
    while s <= end_ms:
        e = min(_next_boundary(s, step_ms, interval_ms), end_ms)
        parts.append((s, e))
        s = e + step_ms
    return parts
