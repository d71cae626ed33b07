"""The archiver's errors, and the exit status each one means.

    ArchiverError                 base; `exit_code` is what the CLI exits with
    ├── UsageError                bad options or configuration (2)
    │   ├── QueryError            `archiver query` refused a statement, or the database rejected it
    │   │   └── QueryTimeout      the statement ran past --timeout and was stopped (124, as timeout(1))
    │   ├── NeedsConfirmation     a step that deletes data, asked for without --yes: nothing changed
    │   └── ClockSkew             the machine clock and the API's disagree: a sync refuses before writing
    ├── FatalError                the run cannot go on; nothing half-written (1)
    │   ├── AuthError             the API refused the key (401, or 403 for the organisation listing)
    │   ├── ApiUnavailable        the API could not be reached for the organisation listing
    │   ├── DatabaseUnavailable   the database could not be reached or written
    │   ├── SchemaOutOfDate       the database is at an older (or unknown) revision
    │   │   └── SchemaTooNew      the database is at a revision newer than this archiver knows
    │   ├── SyncInProgress        another sync holds the lock on this database (75, EX_TEMPFAIL)
    │   ├── LockLost              the run lost its sync lock (its connection cut); stopped before writing
    │   └── Interrupted           SIGINT/SIGTERM stopped the run (130)
    ├── JobError                  one project or job could not be archived; the run goes on (3)
    │   ├── ApiError              an HTTP error that retries did not cure
    │   │   ├── UntrustedCertificate  the API's TLS certificate was not trusted (never retried)
    │   │   ├── ProxyRefused      the proxy would not carry a request: a login it wants (never retried)
    │   │   ├── Forbidden         403 for one project or job: the key may not read it
    │   │   └── Abandoned         a request a stopping run left unsent or unfinished (not a failure)
    │   ├── MalformedResponse     a response that is not JSON or breaks the schema
    │   ├── Unstorable            the database refused one unit's rows, and still takes others
    │   ├── SuspectListing        a listing that would mark a mass of rows deleted; nothing marked
    │   └── NotFound              404: the project or job is gone (recorded, not a failure)
    └── InternalError             a bug: an unexpected exception, said in one line (70, EX_SOFTWARE)

Every message says what went wrong, where, and what to do next. None of them carries
the API key or a database password.
"""

from __future__ import annotations

from typing import Any


class ArchiverError(Exception):
    """Base of every error the archiver raises on purpose."""

    exit_code = 1


class UsageError(ArchiverError):
    """The command line or configuration is wrong."""

    exit_code = 2


class QueryError(UsageError):
    """A statement given to `archiver query` writes, is not one statement, or failed in the database."""


class QueryTimeout(QueryError):
    """A statement given to `archiver query` (or a report) ran longer than its --timeout: stopped."""

    # timeout(1)'s status: a script can tell "too slow" from "wrong".
    exit_code = 124


class NeedsConfirmation(UsageError):
    """A step that would delete data (a downgrade dropping tables or history) was asked for without --yes."""


class ClockSkew(UsageError):
    """The machine clock and the API's `Date` differ by more than --max-clock-skew: the run writes nothing."""


class FatalError(ArchiverError):
    """The run stops; what was committed before stays committed."""

    exit_code = 1
    kind = "fatal"  # of its `sync_errors` row


class CorruptResponse(FatalError):
    """A kept response body does not match its stored sha256 (or cannot be decompressed): replay stops."""

    kind = "corrupt"


class AuthError(FatalError):
    """The API answered 401, or 403 for the organisation's project listing."""

    kind = "auth"


class ApiUnavailable(FatalError):
    """The API could not be reached at all."""

    kind = "api"


class DatabaseUnavailable(FatalError):
    """The database could not be reached or written."""

    kind = "database"


class SchemaOutOfDate(FatalError):
    """The database schema is not at the revision this archiver needs."""


class SchemaTooNew(SchemaOutOfDate):
    """The database is at a revision this archiver does not know: a newer archiver migrated it."""


class SyncInProgress(FatalError):
    """Another sync is running against the same database: harmless, try again later."""

    # sysexits' EX_TEMPFAIL: monitoring can tell "already running" from a fatal error.
    exit_code = 75


class LockLost(FatalError):
    """The sync lock's connection died mid-run: the run stops rather than write unlocked."""

    kind = "lock"


class Interrupted(FatalError):
    """A signal asked the run to stop."""

    exit_code = 130


class JobError(ArchiverError):
    """One project's or job's archive failed; the rest of the run goes on."""

    exit_code = 3
    kind = "error"

    def __init__(self, message: str, *, project_id: str | None = None, job_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.project_id = project_id
        self.job_id = job_id

    def located(self, *, project_id: str | None, job_id: str | None) -> JobError:
        """Return this error with the project and job filled in where missing."""
        self.project_id = self.project_id or project_id
        self.job_id = self.job_id or job_id
        return self

    def __str__(self) -> str:
        where = ", ".join(
            part
            for part in (
                f"project {self.project_id}" if self.project_id else "",
                f"job {self.job_id}" if self.job_id else "",
            )
            if part
        )
        return f"{where}: {self.message}" if where else self.message


class ApiError(JobError):
    """An HTTP request failed after every retry."""

    kind = "api"

    def __init__(self, message: str, *, status: int | None = None, **where: str | None) -> None:
        super().__init__(message, **where)
        self.status = status


class Deferred(ApiError):
    """The API asked one request to wait longer than it may (a long Retry-After): that unit waits for the next run."""

    kind = "deferred"


class UntrustedCertificate(ApiError):
    """The API's TLS certificate was not trusted: retrying cannot change it."""


class ProxyRefused(ApiError):
    """The proxy would not carry a request (407, or another 4xx for a tunnel): retrying cannot change it."""


class Forbidden(ApiError):
    """The API answered 403 for one project or job: the key may not read it."""

    kind = "forbidden"


class Abandoned(ApiError):
    """A request the run left unsent, or stopped retrying, because it is stopping: not a failure, just not done."""

    kind = "abandoned"


class Unstorable(JobError):
    """The database refused one project's or job's rows (an index limit, a constraint), yet takes other writes."""

    kind = "database"


class MalformedResponse(JobError):
    """A response was not JSON, or lacked a field, or had one of the wrong type."""

    kind = "malformed"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        problem: str | None = None,
        project_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message, project_id=project_id, job_id=job_id)
        self.field = field  # the JSON path of the value at fault, when one is
        self.problem = problem or message  # what is wrong with it, without the path


class SuspectListing(JobError):
    """A listing that looks like a bad response (it would "delete" much of the archive): nothing is marked."""

    kind = "suspect"


class Contradiction(JobError):
    """A listing answered 404 for what its parent's listing, this same run, still has: nothing is marked."""

    kind = "contradiction"


class Outage(JobError):
    """Most of a run's listings answered 404: taken for an outage, nothing is marked deleted that run."""

    kind = "outage"


class NotFound(ApiError):
    """The API answered 404 for a project or job."""

    kind = "gone"

    def __init__(self, message: str, *, response: object = None, **where: Any) -> None:
        super().__init__(message, **where)
        self.response = response  # the client's ApiResponse: the archive keeps what it acted on


class InternalError(ArchiverError):
    """An exception the archiver did not expect: a bug, reported in one line rather than a traceback."""

    # sysexits' EX_SOFTWARE. Only the exception's type is named: its text might hold a secret.
    exit_code = 70

    def __init__(self, exception: BaseException) -> None:
        super().__init__(
            f"unexpected {type(exception).__name__}: this is a bug in the archiver; please report it "
            "with the command that caused it (-vv logs where it happened)"
        )
