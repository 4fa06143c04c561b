"""How the CLI (and ``make demo``) shows results: aligned tables, CSV, JSON, a progress bar.

Values are rendered one way everywhere: in ``--json`` times are ISO 8601 in UTC, intervals
are seconds and statuses their string values; in a table times are UTC to the second and
intervals ``1h5m``. Nothing here knows the commands, so the demo imports only this module.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TextIO

__all__ = ["ProgressBar", "cell", "print_csv", "print_json", "print_table"]


def _plain(value: Any) -> Any:
    """A value as it appears in ``--json``: ISO 8601 times, seconds for intervals."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def cell(value: Any) -> str:
    """A value as it appears in a table cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        return _human_duration(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, dict | list):
        return json.dumps(_plain(value), separators=(",", ":"))
    return str(value)


def _human_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    return "".join(parts) + (f"{seconds}s" if seconds or not parts else "")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def print_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                ""
                if v is None
                else json.dumps(_plain(v))
                if isinstance(v, dict | list)
                else _plain(v)
                for v in row
            ]
        )


def print_json(document: Any, out: TextIO) -> None:
    out.write(json.dumps(_plain(document), indent=2, sort_keys=False) + "\n")


class ProgressBar:
    """A progress bar on stderr, no dependency needed.

    On a terminal one line is redrawn with ``\\r`` at each whole percent; elsewhere (CI logs,
    pipes) a line is written at each tenth, so a log does not fill with redraws.
    """

    def __init__(self, total: int, label: str, out: TextIO, width: int = 30) -> None:
        self.total, self.label, self.out, self.width = total, label, out, width
        self.interactive = out.isatty()
        self._drawn: int | None = None

    def update(self, done: int) -> None:
        fraction = 1.0 if self.total <= 0 else min(done / self.total, 1.0)
        step = int(fraction * (100 if self.interactive else 10))
        if step == self._drawn:
            return
        self._drawn = step
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"{self.label} [{bar}] {fraction:4.0%} {done:,}/{self.total:,}"
        self.out.write(f"\r{line}" if self.interactive else f"{line}\n")
        self.out.flush()

    def close(self) -> None:
        if self.interactive:
            self.out.write("\n")
            self.out.flush()
