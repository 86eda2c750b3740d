"""Typed errors shared by every model.

Each error can name the tenant, the file and the column it concerns, and says
what to do next, so a message read in the Dagster UI or a terminal is enough to
fix the input without reading code.
"""

from __future__ import annotations


class CreditTwinError(Exception):
    """Base class of every error CreditTwin raises on purpose.

    `transient` is True for a service that may come back (a database or the
    MLflow store unreachable): a step failing on it may be retried. Every other
    error is about the input or the configuration and retrying cannot help.
    """

    transient = False

    def __init__(
        self,
        message: str,
        *,
        tenant: str | None = None,
        file: str | None = None,
        column: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.reason = message
        self.tenant = tenant
        self.file = file
        self.column = column
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.tenant:
            where.append(f"tenant '{self.tenant}'")
        if self.file:
            where.append(f"file '{self.file}'")
        if self.column:
            where.append(f"column '{self.column}'")
        text = (", ".join(where) + ": " if where else "") + self.reason
        if self.fix:
            text += f" Fix: {self.fix}"
        return text

    def with_context(self, *, tenant: str | None = None, file: str | None = None) -> "CreditTwinError":
        """Fill in tenant/file when a caller higher up knows them; returns self."""
        if tenant and not self.tenant:
            self.tenant = tenant
        if file and not self.file:
            self.file = file
        self.args = (self._render(),)
        return self


class InvalidTenantError(CreditTwinError):
    """A tenant id that may not become a partition key, a path or a query value."""


class TenantConfigError(CreditTwinError):
    """A tenant.yaml that is malformed, has unknown keys or names missing columns."""


class InvalidDataError(CreditTwinError):
    """An uploaded file or table that cannot be used as it is."""


class UnsafePathError(CreditTwinError):
    """A path that would resolve outside the data root."""


class JsonValueError(CreditTwinError, ValueError):
    """A value JSON cannot hold exactly (NaN, an infinity, a too large integer, a non-text key), so it cannot be hashed."""


class NotFittedError(CreditTwinError):
    """A model used before `fit` (or `load`) was called."""


class ValidationErrors(InvalidDataError):
    """Several problems found together; `problems` holds each one."""

    def __init__(self, problems: list[CreditTwinError], *, tenant: str | None = None, file: str | None = None):
        self.problems = list(problems)
        text = f"{len(self.problems)} problem(s): " + " | ".join(str(p) for p in self.problems)
        super().__init__(text, tenant=tenant, file=file)


class CertificateError(CreditTwinError):
    """A privacy certificate that cannot be issued, signed or read (failed audit, missing or unsafe key)."""
