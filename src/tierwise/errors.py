"""tierwise's exception tree. Every error tierwise raises derives from ``TierwiseError``::

    TierwiseError
     ├── PolicyError                 a policy file is unreadable or invalid (lists every issue)
     ├── UnknownTierError            a tier name the policy's ladder lacks (also a KeyError;
     │                               defined in tierwise.policy.core)
     ├── PricingError
     │    └── UnknownModelError      no catalog price and no override for a model
     ├── ProviderError               one upstream call failed (mapped once, per provider)
     │    ├── ProviderConnectionError    could not reach the upstream
     │    ├── ProviderTimeoutError       the upstream did not answer in time
     │    ├── RateLimitedError           429; ``retry_after`` seconds when the upstream said
     │    ├── AuthenticationError        401/403: the key is missing, wrong or not allowed
     │    ├── BadRequestError            4xx other than the above: the request itself is wrong
     │    ├── ServerError                5xx, including 529 overloaded
     │    └── BadResponseError           a reply that cannot be parsed or is cut short
     ├── BudgetExceededError         a budget would be overrun; carries the attempts so far
     ├── EscalationExhaustedError    every tier of the ladder failed; carries the whole trail
     ├── StreamInterruptedError      a relayed stream broke after bytes reached the caller
     ├── PolicyChangeError           a learned change or override cannot be applied or
     │                               reverted: an unknown id, a change in the wrong state,
     │                               a stale proposal, an override in the way
     ├── LedgerError                 the ledger cannot be opened, migrated or written
     │    ├── LedgerUnavailableError the database cannot be reached or refused for now
     │    │                          (connection refused or cut, server shutting down, a
     │    │                          lock or pool timeout): trying again later may succeed
     │    └── MissingDriverError     a Postgres ledger without psycopg; names the extra to
     │                               install (also an ImportError; defined in
     │                               tierwise.ledger.engine)
     └── DatasetError                recorded results for `tierwise eval` are missing or
                                     malformed (defined in tierwise.evaluation.dataset)

Retries dispatch on class (``ProviderError.retryable``), never on message text. Messages say
what was expected and what was found, and never contain credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierwise.records import AttemptRecord, Usage


class TierwiseError(Exception):
    """Root of every error tierwise raises."""


# -- policy -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy file: where it is and what is wrong."""

    path: str
    message: str
    line: int | None = None
    severity: str = "error"  # "error" | "warning"

    def format(self, file: str | None = None) -> str:
        where = file or "<policy>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        loc = f"{self.path}: " if self.path else ""
        return f"{where}: {self.severity}: {loc}{self.message}"


class PolicyError(TierwiseError):
    """A policy file is invalid. ``issues`` lists every problem found, each with its key path."""

    def __init__(self, issues: Sequence[PolicyIssue], file: str | None = None) -> None:
        self.issues = tuple(issues)
        self.file = file
        super().__init__("\n".join(i.format(file) for i in self.issues) or "invalid policy")


# -- pricing ----------------------------------------------------------------------------------


class PricingError(TierwiseError):
    """Prices cannot be determined."""


class UnknownModelError(PricingError):
    """The price catalog does not know a model and the policy gives no price for it."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price known for model {model!r}: the genai-prices catalog does not list it; "
            f"add [prices.{model!r}] with input and output USD per million tokens to the policy"
        )


# -- providers --------------------------------------------------------------------------------


class ProviderError(TierwiseError):
    """One call to an upstream model failed.

    ``retryable`` says whether trying the same call again may succeed; the retry loop reads
    this attribute, never the message. ``usage`` is what the upstream billed for the failed
    call when it said (a reply that arrived but was not a valid answer, a stream cut after it
    started): the call is paid for, so its cost goes in the ledger like any other.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        request_id: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.status = status
        self.request_id = request_id
        self.usage = usage
        super().__init__(message)


class ProviderConnectionError(ProviderError):
    retryable = True


class ProviderTimeoutError(ProviderError):
    retryable = True


class RateLimitedError(ProviderError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class AuthenticationError(ProviderError):
    pass


class BadRequestError(ProviderError):
    pass


class ServerError(ProviderError):
    retryable = True


class BadResponseError(ProviderError):
    retryable = True


# -- budgets and the cascade -------------------------------------------------------------------


class BudgetExceededError(TierwiseError):
    """Starting another attempt would overrun a budget.

    ``budget`` names it (``task``, ``session:<id>``, ``kind-day:<kind>``, ``key-day:<name>``),
    ``limit_usd`` and ``spent_usd`` say how far it got, ``attempts`` holds the trail so far.
    """

    def __init__(
        self,
        budget: str,
        limit_usd: Decimal,
        spent_usd: Decimal,
        needed_usd: Decimal,
        attempts: Sequence[AttemptRecord] = (),
    ) -> None:
        self.budget = budget
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.needed_usd = needed_usd
        self.attempts = tuple(attempts)
        super().__init__(
            f"budget {budget} would be exceeded: limit ${limit_usd}, spent or reserved "
            f"${spent_usd}, next attempt may cost up to ${needed_usd}; "
            f"{len(self.attempts)} attempt(s) so far"
        )


class EscalationExhaustedError(TierwiseError):
    """Every tier from the starting one to the top failed validation or errored.

    ``attempts`` is the whole trail; ``last_error`` the top tier's provider error, if it had one.
    """

    def __init__(
        self,
        task_id: str,
        attempts: Sequence[AttemptRecord],
        last_error: ProviderError | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempts = tuple(attempts)
        #: The provider error of the last tier, when it failed on one (not on validation).
        self.last_error = last_error
        total = sum((a.cost_usd for a in self.attempts), Decimal(0))
        last = self.attempts[-1].failure if self.attempts else "no attempt was made"
        super().__init__(
            f"task {task_id}: every tier failed after {len(self.attempts)} attempt(s) "
            f"costing ${total}; last failure: {last}"
        )


class StreamInterruptedError(TierwiseError):
    """A relayed stream broke after its first bytes had reached the caller.

    Nothing can be retried then: the attempt is recorded as ``partial`` (with the usage that
    arrived, which is billed) and ``attempts`` holds the whole trail; ``cause`` is what broke it.
    """

    def __init__(
        self, task_id: str, attempts: Sequence[AttemptRecord], cause: BaseException
    ) -> None:
        self.task_id = task_id
        self.attempts = tuple(attempts)
        self.cause = cause
        super().__init__(f"task {task_id}: the stream broke after it had started: {cause}")


class PolicyChangeError(TierwiseError):
    """A change to the effective policy (``tierwise learn apply | revert | set``) was refused.

    ``unknown`` is true when no change has the id given (the gateway answers 404); otherwise
    the change exists but cannot be made as asked (409): the message says why and what to do.
    """

    def __init__(self, message: str, *, unknown: bool = False) -> None:
        self.unknown = unknown
        super().__init__(message)


class LedgerError(TierwiseError):
    """The ledger cannot be opened, migrated or written."""


class LedgerUnavailableError(LedgerError):
    """The ledger's database cannot be used right now; the same write may succeed later.

    Raised for what the driver reports as an operational failure (PEP 249's
    ``OperationalError`` / ``InterfaceError``: the server is down or restarting, the connection
    was cut, a lock or the connection pool timed out), never for a write the database refuses
    on its merits (a constraint, a type). The gateway answers 503 before an upstream call and
    spools a paid call's rows to a local file after one.
    """
