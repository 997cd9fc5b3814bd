"""What pgvkit confirm measured on the live index and what it chose: each measurement (a shape at
a setting, recall per query and latency) and the Confirmation that shows them as a table, with
the settings an owner's search through the index runs with when owners have their own."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..audit.truth import recall_low
from ..display import Table
from ..kinds import OWNER_SETTING

__all__ = ["Measurement", "Confirmation", "for_owners"]


@dataclass
class Measurement:
    shape: str  # "new vectors", "similar assets", "owner X (1.0 %)"
    settings: dict[str, str]  # the settings under test (beside what search_assets binds)
    per_query: np.ndarray = field(repr=False)
    p50_ms: float
    p95_ms: float
    short: int = 0  # searches that returned fewer rows than exist
    plan: str = ""

    @property
    def recall(self) -> float:
        return float(self.per_query.mean())

    @property
    def low(self) -> float:
        return recall_low(self.per_query) if len(self.per_query) > 1 else self.recall

    def meets(self, target: float) -> bool:
        return self.low >= target and self.short == 0

    def row(self, target: float) -> dict:
        return {"shape": self.shape, "setting": ", ".join(f"{k} = {v}" for k, v in self.settings.items()),
                "queries": len(self.per_query), "recall": round(self.recall, 4),
                "p5": round(float(np.percentile(self.per_query, 5)), 3), "short": self.short,
                "p50 ms": round(self.p50_ms, 2), "p95 ms": round(self.p95_ms, 2), "plan": self.plan,
                "status": "meets" if self.meets(target) else "below"}


@dataclass(repr=False)
class Confirmation(Table):
    """What confirm measured on the live index, and the settings it chose."""

    database: str
    table: str
    rows_in_table: int
    index: str  # the live index's definition
    index_name: tuple[str, str]  # its schema and name
    index_comment: str | None  # its comment when measured (tune's choice and prediction)
    method: str
    k: int
    target: float
    bound_before: dict[str, str]  # what search_assets bound when confirm ran
    chosen: dict[str, str] = field(default_factory=dict)  # to bind (with search.INDEX_ONLY)
    measurements: list[Measurement] = field(default_factory=list)
    met: bool = False
    message: str = ""
    predicted: str | None = None  # what tune predicted for this size, from the index's comment
    at_tuned: dict = field(default_factory=dict)  # recall measured at the setting tune bound, per shape
    schema: str | None = None  # where the search_path found the table: the title names it
    route: str = ""  # which owners search_assets reads whole: measured, and what was chosen
    kind: str = "vector"  # the live index's kind, and the column's dimensions: search_assets' body, rewritten
    dims: int = 0
    columns = ("shape", "setting", "queries", "recall", "p5", "short", "p50 ms", "p95 ms", "plan", "status")
    colour_by = "status"

    @property
    def title(self) -> str:
        named = f"{self.schema}.{self.table}" if self.schema else self.table
        return (f"Confirm on {named} ({self.rows_in_table:,} rows, {self.database}): "
                + ("" if self.met else "NOT MET: ") + self.message)

    def rows(self) -> list[dict]:
        return [m.row(self.target) for m in self.measurements]

    @property
    def exit_code(self) -> int:
        return 0 if self.met else 1

    def chosen_measurements(self) -> list[Measurement]:
        """The measurements at the chosen settings: one per shape (an owner's at what its searches
        through the index run with, see for_owners)."""
        owners = for_owners(self.chosen)
        return [m for m in self.measurements
                if all((owners if m.shape.startswith("owner") else self.chosen).get(k) == v for k, v in m.settings.items())]

    def to_dict(self) -> dict:
        return {"table": self.table, "rows": self.rows_in_table, "index": self.index, "k": self.k,
                "target": self.target, "met": self.met, "message": self.message, "chosen": self.chosen,
                "bound_before": self.bound_before, "predicted": self.predicted, "at_tuned": self.at_tuned,
                "route": self.route, "measurements": self.rows(), "at_chosen": {m.shape: round(m.recall, 4) for m in self.chosen_measurements()}}


def for_owners(settings: dict[str, str]) -> dict[str, str]:
    """The settings an owner's search through the index runs with: the owners' own search
    setting (kinds.OWNER_SETTING) in place of the unfiltered one, when one is bound."""
    out = dict(settings)
    for param, own in OWNER_SETTING.items():
        if own in out:
            value = out.pop(own)
            if value:
                out[param] = value
    return out
