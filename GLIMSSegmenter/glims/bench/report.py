"""A benchmark's result, ``BenchReport``: rows of measurements, the machine context, Markdown and JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BenchReport", "ALLOCATOR_LABELS"]


@dataclass
class BenchReport:
    """The result of one benchmark run: rows of measurements plus what they depend on.

    Attributes:
        target: benchmark name (``network``...).
        title: one-line description of what was measured.
        columns: (key, header) pairs, in table order; each row is a dict keyed by these keys.
        rows: one dict per measured configuration (values: str, int, float or None for "not applicable").
        context: machine and run facts (CPU, cores, torch, threads, load average, command...).
        notes: sentences printed under the table (what the counters count, caveats).
    """

    target: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]]
    context: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = [list(c) for c in self.columns]
        return data

    def to_markdown(self) -> str:
        """A Markdown section: title, context line, table, notes."""
        lines = [f"### {self.title}", ""]
        ctx = self.context
        facts = [f"{k}: {ctx[k]}" for k in _CONTEXT_ORDER if k in ctx]
        lines += [f"- {fact}" for fact in facts] + [""]
        lines.append("| " + " | ".join(header for _, header in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in self.columns) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


ALLOCATOR_LABELS = {"retain": "glibc, freed memory retained", "default": "platform default"}

_CONTEXT_ORDER = (
    "command",
    "date",
    "cpu",
    "cores",
    "python",
    "torch",
    "monai",
    "device",
    "precision",
    "threads",
    "competing_load",
    "allocator",
    "input",
    "weights",
    "glims_feature_size",
    "omp_wait_policy",
    "load_before",
    "load_after",
)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 0.01:
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.2f}"
        return f"{value:.1e}"
    if isinstance(value, int):
        return f"{value:,d}"
    return str(value).replace("|", "\\|")
