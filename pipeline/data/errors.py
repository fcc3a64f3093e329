"""Errors and drop accounting for data loading.

Every problem names where it happened (file:line, file[row N] or hub[split] row N; 1-based), which field,
and how to fix it, so a user never has to bisect a data file. Bad rows are either fatal (on_bad_row=error) or
counted per reason in a `DropReport` (on_bad_row=skip) whose summary is logged: nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.config.user_errors import UserError

# Bad rows listed in full when a source stops the run; the rest are counted per reason.
SHOWN_BAD_ROWS = 20


class DataError(UserError, ValueError):
    """A data problem: "<location>: field '<field>': <problem>. Fix: <fix>"."""

    def __init__(
        self, location: str, problem: str, fix: str, field: str | None = None, reason: str | None = None
    ) -> None:
        self.location = location
        self.field = field
        self.problem = problem.rstrip(".")
        self.fix = fix
        # Short, row-independent key that groups equal problems in a DropReport.
        self.reason = reason or self.problem
        where = f"{location}: field '{field}'" if field else location
        super().__init__(f"{where}: {self.problem}. Fix: {fix}")


class BadRow(Exception):
    """A row-level problem raised by the converters, which do not know the row's location."""

    def __init__(self, reason: str, field: str, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.reason = reason
        self.field = field
        self.problem = problem
        self.fix = fix

    def at(self, location: str) -> DataError:
        return DataError(location, self.problem, self.fix, field=self.field, reason=self.reason)


@dataclass
class _Reason:
    count: int
    first: str


@dataclass
class DropReport:
    """Rows dropped under on_bad_row=skip: a count and the first location per reason."""

    reasons: dict[str, _Reason] = field(default_factory=dict)
    # source -> rows read from it (good and bad), for the "dropped X of Y" ratio.
    rows_read: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(r.count for r in self.reasons.values())

    def add(self, error: DataError) -> None:
        entry = self.reasons.setdefault(error.reason, _Reason(0, error.location))
        entry.count += 1

    def note_read(self, source: str, rows: int) -> None:
        self.rows_read[source] = self.rows_read.get(source, 0) + rows

    def summary(self) -> str:
        """E.g. "dropped 3 of 120 rows from x.jsonl: 2 x missing field 'answer' (first at x.jsonl:7), ..."."""
        if not self.total:
            return ""
        # sorted() is stable, so equal counts keep the order in which they were first seen.
        ranked = sorted(self.reasons.items(), key=lambda item: -item[1].count)
        parts = ", ".join(f"{r.count} x {reason} (first at {r.first})" for reason, r in ranked)
        sources = ", ".join(self.rows_read)
        return f"dropped {self.total} of {sum(self.rows_read.values())} rows from {sources}: {parts}"


@dataclass
class BadRows:
    """Bad rows of one pass under on_bad_row=error: all are read, then the run stops naming them at once."""

    errors: list[DataError] = field(default_factory=list)
    rest: Counter[str] = field(default_factory=Counter)

    def add(self, error: DataError) -> None:
        if len(self.errors) < SHOWN_BAD_ROWS:
            self.errors.append(error)
        else:
            self.rest[error.reason] += 1

    def raise_any(self, source: str) -> None:
        """One bad row raises its own error; several raise one error listing them."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise BadRowsError(source, self.errors, self.rest)


class BadRowsError(DataError):
    """Several bad rows in one source: the first SHOWN_BAD_ROWS with location, field and fix, then a count."""

    def __init__(self, source: str, errors: list[DataError], rest: Counter[str]) -> None:
        total = len(errors) + sum(rest.values())
        fix = "fix each row as its line says, or set data.on_bad_row=skip to drop such rows (they are counted)"
        super().__init__(source, f"{total} bad rows", fix, reason="bad rows")
        self.errors = errors
        lines = [f"  {e}" for e in errors]
        if rest:
            counts = ", ".join(f"{n} x {reason}" for reason, n in rest.most_common())
            lines.append(f"  ... and {sum(rest.values())} more bad rows: {counts}")
        self.args = (f"{source}: {total} bad rows; the first {len(errors)}:\n" + "\n".join(lines) + f"\nFix: {fix}",)
