"""The one place that decides whether a database error is transient: "try again shortly".

A transient error says the database cannot be reached right now (restarting,
shutting down, refusing connections, the socket gone), not that the query or
the code is wrong. Loops restart after one, consumers retry the event, and the
HTTP surface answers 503 with Retry-After instead of 500.

Decided by class, from asyncpg 0.32's hierarchy, so no member of a family is missed:

- `PostgresConnectionError`: SQLSTATE class 08 (connection exception), which in
  asyncpg includes `ConnectionDoesNotExistError`, `ConnectionFailureError`,
  `ClientCannotConnectError`, `ConnectionRejectionError`, `ProtocolViolationError`
  and `TransactionResolutionUnknownError`;
- `OperatorInterventionError`: class 57 (`CannotConnectNowError` while the server
  starts up, `AdminShutdownError`, `CrashShutdownError`, `DatabaseDroppedError`,
  `IdleSessionTimeoutError`, `QueryCanceledError`);
- `TooManyConnectionsError` (53300): the server refuses a connection for now;
- `InterfaceError` itself ("connection is closed", "pool is closing"), but not its
  subclasses, which name a client configuration or a feature mismatch: a bug;
- `TargetServerAttributeNotMatched`: during a failover, the server reached is not
  yet the primary;
- `OSError` (`ConnectionError` and the builtin `TimeoutError` among them): the socket.

`InternalClientError`'s other subclasses (`ProtocolError`, `OutdatedSchemaCacheError`)
are not transient: retrying does not make them go away.
"""

import asyncpg
from asyncpg import exceptions

TRANSIENT_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    exceptions.OperatorInterventionError,
    exceptions.TooManyConnectionsError,
    exceptions.InterfaceError,
    exceptions.TargetServerAttributeNotMatched,
    OSError,
)
"""Every class an `except` must name to catch the transient errors; narrow the match
with `is_transient_database_error`, since a few subclasses of these are not transient."""

_NOT_TRANSIENT: tuple[type[Exception], ...] = (
    exceptions.ClientConfigurationError,
    exceptions.UnsupportedClientFeatureError,
    exceptions.UnsupportedServerFeatureError,
)


def is_transient_database_error(error: BaseException) -> bool:
    """True if `error` means the database is unreachable for now and a retry may succeed."""
    return isinstance(error, TRANSIENT_DATABASE_ERRORS) and not isinstance(error, _NOT_TRANSIENT)
