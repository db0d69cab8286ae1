"""Hot-path statements compiled once per engine and run on the DBAPI cursor.

``Connection.execute`` costs tens of microseconds per statement above what the database itself
spends: a compiled-cache lookup, parameter processing, event dispatch and result set-up. The
ledger writes a few rows per task on the request path, so its hot statements are compiled from
the Core schema once for the engine's dialect (same SQL SQLAlchemy would send) and executed on
the connection's own DBAPI cursor, inside the transaction SQLAlchemy opened. Values still go
through each column type's bind processor for that dialect (the UTC datetime decorator
included), so the rows are byte-for-byte what ``Connection.execute`` writes.

Driver errors propagate as the driver's own exceptions; the ledger maps them (by the dialect's
DBAPI ``Error`` class) to :class:`~tierwise.errors.LedgerError` with the driver's message only.

The same code serves every paramstyle: SQLite's ``qmark`` (``?``, positional) and psycopg's
``pyformat`` (``%(name)s``, by name, with ``::TYPE`` casts rendered into the SQL), and the
``named``/``format`` styles an engine may be configured with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

__all__ = ["Prepared", "prepare", "savepoint"]

_Processor = Callable[[Any], Any]
_savepoint_ids = count(1)


@dataclass(frozen=True, slots=True)
class Prepared:
    """One statement compiled for one dialect: its SQL and how to bind its parameters."""

    sql: str
    #: (value key, name the driver sees, bind processor), in the driver's order: positional
    #: paramstyles (qmark, format, numeric) list a parameter once per placeholder
    binds: tuple[tuple[str, str, _Processor | None], ...]
    positional: bool
    _pick: Callable[[Mapping[str, Any]], Any] = field(repr=False, compare=False)
    _processed: tuple[tuple[int, _Processor], ...] = field(repr=False, compare=False)
    #: values fixed in the statement itself (``column == "held"``), by value key
    _fixed: Mapping[str, Any] = field(repr=False, compare=False)
    #: fixed values computed at each execution (``bindparam(callable_=...)``), by value key
    _computed: Mapping[str, Callable[[], Any]] = field(repr=False, compare=False)

    def parameters(self, values: Mapping[str, Any]) -> list[Any] | dict[str, Any]:
        """The driver parameters for *values* (keyed by bind key), processed for the dialect.

        Raises:
            KeyError: a bind parameter has no value.
        """
        if self._fixed or self._computed:
            values = {**self._fixed, **{k: f() for k, f in self._computed.items()}, **values}
        if not self.positional:
            return {
                out: values[key] if proc is None else proc(values[key])
                for key, out, proc in self.binds
            }
        args = list(self._pick(values))  # one C call for all the plain values
        for i, proc in self._processed:
            args[i] = proc(args[i])
        return args

    def run(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        """Execute on a DBAPI *cursor* of the current transaction; return the cursor.

        Raises:
            ValueError: a value cannot be bound (e.g. a naive timestamp).
            Exception: the driver's own error (the caller maps it).
        """
        cursor.execute(self.sql, self.parameters(values))
        return cursor


def prepare(
    stmt: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None
) -> Prepared:
    """Compile *stmt* for *dialect* (an INSERT/UPDATE over *column_keys* when given).

    Parameters are bound as ``SQLCompiler.construct_params`` and the execution context bind
    them for ``Connection.execute``: each compiled name (``bind_names``) takes the value given
    under its bind key, or the value fixed in the statement; the driver sees it under its
    escaped name (``escaped_bind_names``: pyformat cannot carry ``%``, ``(`` or ``.`` in a
    name) or, for positional paramstyles, at each of its places in ``positiontup``. A test runs
    every hot statement both ways on SQLite and Postgres and compares what the driver got.
    """
    compiled = stmt.compile(
        dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None
    )
    assert isinstance(compiled, SQLCompiler)
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("expanding and literal-execute parameters are not supported here")
    escaped = compiled.escaped_bind_names
    key_of: dict[str, str] = {}  # compiled name -> the key its value is given under
    fixed: dict[str, Any] = {}
    computed: dict[str, Callable[[], Any]] = {}
    processors: dict[str, _Processor | None] = {}
    for bind, name in compiled.bind_names.items():
        if name in key_of:
            continue
        if bind.required:
            key_of[name] = bind.key
        else:  # a value fixed in the statement: keyed by its unique compiled name
            key_of[name] = name
            if bind.callable is not None:
                computed[name] = bind.callable
            else:
                fixed[name] = bind.value
        processors[name] = bind.type.dialect_impl(dialect).bind_processor(dialect)
    if compiled.positional:
        order: Sequence[str] = compiled.positiontup or ()
    else:
        order = list(key_of)
    binds = tuple((key_of[name], escaped.get(name, name), processors[name]) for name in order)
    processed = tuple((i, proc) for i, (_, _, proc) in enumerate(binds) if proc is not None)
    keys = [key for key, _, _ in binds]
    pick = itemgetter(*keys) if len(keys) > 1 else _single(keys[0]) if keys else _none
    return Prepared(
        compiled.string,
        binds,
        bool(compiled.positional),
        pick,
        processed,
        fixed,
        computed,
    )


def _single(name: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    return lambda values: (values[name],)


def _none(_: Mapping[str, Any]) -> tuple[Any, ...]:
    return ()


@contextmanager
def savepoint(cursor: Any) -> Iterator[None]:
    """``SAVEPOINT`` … ``RELEASE``; on any exception roll back to it and re-raise.

    The same SQL on SQLite and Postgres, run on the DBAPI cursor: cheaper than
    ``Connection.begin_nested()``, which compiles its two statements anew each time.
    """
    name = f"tw_sp_{next(_savepoint_ids)}"
    cursor.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        try:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
            cursor.execute(f"RELEASE SAVEPOINT {name}")
        except Exception:  # the connection is gone: the outer transaction fails anyway
            pass
        raise
    cursor.execute(f"RELEASE SAVEPOINT {name}")
