"""The policy table: rules and channel defaults set at run time, and the audit of every change."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.db import Conn
from bot.policy import Entry, Scope
from bot.store_base import StoreBase


@dataclass(frozen=True)
class Change:
    """One recorded change: who set (or unset) what, when; ``new_value`` None is an unset."""

    id: int
    at: float
    actor: str
    scope: str
    target: str
    name: str
    old_value: str | None
    new_value: str | None


class PolicyStore(StoreBase):
    """Reads and writes of the policy; each change is audited in the same transaction."""

    #: Changes made through this store (a PolicyBook reads the table again when it moves).
    local_changes = 0

    async def policy_version(self) -> int:
        """Grows with every change (in any process): reload the policy when it moves."""
        rows = await self._fetch("SELECT COALESCE(MAX(id), 0) FROM policy_audit")
        return int(rows[0][0])

    async def policy_entries(self) -> list[Entry]:
        """Everything set at run time."""
        rows = await self._fetch(
            "SELECT scope, target, name, value FROM policy ORDER BY scope, target, name"
        )
        return [Entry(row[0], row[1], row[2], row[3]) for row in rows]

    async def set_policy(self, entry: Entry, actor: str, now: float | None = None) -> str | None:
        """Set one rule or default (replacing it); the value it had before, if any."""
        now = time.time() if now is None else now
        async with self._write() as db:
            old = await _value(db, entry.scope, entry.target, entry.name)
            await db.execute(
                "INSERT INTO policy (scope, target, name, value, set_by, set_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, target, name) DO UPDATE SET "
                "value = excluded.value, set_by = excluded.set_by, set_at = excluded.set_at",
                (entry.scope, entry.target, entry.name, entry.value, actor, now),
            )
            await _audit(db, now, actor, entry.scope, entry.target, entry.name, old, entry.value)
        self.local_changes += 1
        return old

    async def unset_policy(
        self, scope: Scope, target: str, name: str, actor: str, now: float | None = None
    ) -> str | None:
        """Remove one rule or default (the settings' default applies again); its old value."""
        now = time.time() if now is None else now
        async with self._write() as db:
            old = await _value(db, scope, target, name)
            if old is None:
                return None
            await db.execute(
                "DELETE FROM policy WHERE scope = ? AND target = ? AND name = ?",
                (scope, target, name),
            )
            await _audit(db, now, actor, scope, target, name, old, None)
        self.local_changes += 1
        return old

    async def policy_changes(self, limit: int = 20) -> list[Change]:
        """The newest changes first."""
        rows = await self._fetch(
            "SELECT id, at, actor, scope, target, name, old_value, new_value FROM policy_audit "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [Change(*tuple(row)) for row in rows]


async def _value(db: Conn, scope: str, target: str, name: str) -> str | None:
    rows = list(
        await db.execute_fetchall(
            "SELECT value FROM policy WHERE scope = ? AND target = ? AND name = ?",
            (scope, target, name),
        )
    )
    return str(rows[0][0]) if rows else None


async def _audit(
    db: Conn,
    now: float,
    actor: str,
    scope: str,
    target: str,
    name: str,
    old: str | None,
    new: str | None,
) -> None:
    await db.execute(
        "INSERT INTO policy_audit (at, actor, scope, target, name, old_value, new_value) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now, actor, scope, target, name, old, new),
    )
