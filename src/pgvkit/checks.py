"""One model of checks: a Check is a named finding with a status, what was seen, why it
matters and the fix; a Report is a list of them that renders itself and sets the exit code.
`pgvkit verify`, `pgvkit doctor` and `explain()` all return a Report."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field, replace

from .display import Checklist
from .errors import PgvkitError

__all__ = ["Check", "Report", "ChecksFailed", "VerificationFailed", "DiagnosisFailed", "verification", "diagnosis",
           "STATUSES"]

STATUSES = ("pass", "warn", "fail")


@dataclass(frozen=True)
class Check:
    """One finding: `name` says what was checked, `detail` what was seen; `why` and `fix` are
    for anything that is not a pass."""

    name: str
    status: str  # pass / warn / fail
    detail: str
    why: str = ""
    fix: str = ""

    def fix_sql(self) -> list[str]:
        """The statements the fix starts with, to run as they are: each part of `fix` up to a `;`
        that PostgreSQL's parser accepts, until the first that is prose (`before CREATE INDEX`,
        `(or, as its owner: ...)`)."""
        from pglast import parse_sql
        from pglast.parser import ParseError

        found = []
        for part in self.fix.split(";"):
            text = part.strip()
            if not text:
                continue
            try:
                parse_sql(text)
            except ParseError:
                break
            found.append(text)
        return found

    # the doctor's words for the same fields (its JSON and notebooks used them first)
    @property
    def area(self) -> str:
        return self.name

    @property
    def what(self) -> str:
        return self.detail


class ChecksFailed(PgvkitError):
    """At least one check failed; the report is attached."""

    def __init__(self, report: Report):
        self.report = report
        failed = [c for c in report.checks if c.status == "fail"]
        super().__init__(f"{len(failed)} check(s) failed: "
                         + "; ".join(f"{c.name}: {c.detail} (fix: {c.fix})" for c in failed))


class VerificationFailed(ChecksFailed):
    """pgvkit verify found a failing check."""


class DiagnosisFailed(ChecksFailed):
    """pgvkit doctor found a failing check."""


@dataclass(repr=False)
class Report(Checklist):
    """Checks of one subject: a table in notebooks, text in a terminal, a dict for --json.

    `context` goes into the JSON as is (database, table, target); `words` renames fields in
    the columns and the JSON for a command whose users already read other names (the doctor
    says area / what / findings); `blocks` prints one block per check in a terminal, for long
    why and fix texts."""

    heading: str
    checks: list[Check] = field(default_factory=list)
    context: dict = field(default_factory=dict)
    words: dict = field(default_factory=dict)
    blocks: bool = False
    failure: type[ChecksFailed] = field(default=ChecksFailed, repr=False)  # what raise_for_failures raises
    passed: int = 0  # passing checks brief() left out: counted in the title, not listed
    colour_by = "status"

    def _word(self, name: str) -> str:
        return self.words.get(name, name)

    @property
    def title(self) -> str:
        counts = ", ".join(f"{sum(c.status == s for c in self.checks) + (self.passed if s == 'pass' else 0)} {s}"
                           for s in STATUSES)
        return f"{self.heading}: {counts}" + ("; what is not a pass is listed" if self.passed else "")

    @property
    def columns(self) -> tuple[str, ...]:
        fields = ("name", "status", "detail") + (("why",) if any(c.why for c in self.checks) else ()) + ("fix",)
        return tuple(self._word(f) for f in fields)

    def items(self) -> list[Check]:
        return self.checks

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status != "pass"]

    def rows(self) -> list[dict]:
        return [{self._word(k): v for k, v in asdict(c).items()} for c in self.checks]

    def to_dict(self) -> dict:
        return {**self.context, "ok": self.ok, self._word("checks"): self.rows()}

    def __str__(self) -> str:
        if self.passed and not self.checks:
            return self.title
        if not self.blocks:
            return super().__str__()
        lines = [self.title]
        for c in self.checks:
            lines.append(f"{c.status.upper():>4}  {c.name}: {c.detail}")
            if c.status != "pass":
                lines += [f"      why: {c.why}", f"      fix: {c.fix}"]
        return "\n".join(lines)

    def __getitem__(self, key: str | int) -> Check:
        """The first check of a name (or by position)."""
        if isinstance(key, int):
            return self.checks[key]
        return next(c for c in self.checks if c.name == key)

    def __contains__(self, name: str) -> bool:
        return any(c.name == name for c in self.checks)

    def __iter__(self):
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def _repr_html_(self) -> str:
        if self.passed and not self.checks:  # nothing to list: the title says it all
            return f"<p><b>{html.escape(self.title)}</b></p>"
        return super()._repr_html_()

    def brief(self) -> Report:
        """What is not a pass, under the whole report's counts: a healthy database in one line."""
        return replace(self, checks=self.problems, passed=self.passed + len(self.checks) - len(self.problems))

    def only(self, *names: str) -> Report:
        """The checks of some names, still rendered as a report (for a notebook cell)."""
        return replace(self, checks=[c for c in self.checks if c.name in names])

    def raise_for_failures(self) -> Report:
        """Raise ChecksFailed if any check fails (a notebook cell then fails too)."""
        if not self.ok:
            raise self.failure(self)
        return self


def verification(database: str, table: str, checks: list[Check] | None = None) -> Report:
    """The report of pgvkit verify: a table of checks of one table."""
    return Report(f"Verification of {table} on {database}", checks or [], {"database": database, "table": table},
                  failure=VerificationFailed)


_DOCTOR_WORDS = {"name": "area", "detail": "what", "checks": "findings"}


def diagnosis(target: str, checks: list[Check] | None = None, *, where: str | None = None) -> Report:
    """The report of pgvkit doctor (and of explain): one block per check, in its own words.
    `target` (the masked URL) goes into the JSON; the title says `where` in words when given."""
    return Report(f"Doctor on {where or target}", checks or [], {"target": target}, _DOCTOR_WORDS, blocks=True,
                  failure=DiagnosisFailed)
