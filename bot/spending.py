"""The rules in force for each request: the policy (reloaded when any process changes it), who
is blocked, what can never fit, and the channel's defaults."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot import texts
from bot.errors import Blocked
from bot.fit import check_fits
from bot.policy import Defaults, Policy, Standing, team_word, whose

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.models import ImageRequest, Requester
    from bot.policy_store import PolicyStore


# How stale another process's change may be when a request arrives. A change made through
# this process's store is seen by the very next request.
RECHECK_S = 0.25


class PolicyBook:
    """The current ``Policy``: the settings' defaults and the table's entries, read again when
    the table's version moved (checked at most every RECHECK_S, and after every local change)."""

    def __init__(
        self,
        settings: Settings,
        store: PolicyStore,
        *,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.defaults = Defaults.from_settings(settings)
        self.recheck_s = recheck_s
        self._clock = clock
        self._version = -1
        self._checked_at = -math.inf
        self._local = -1
        self._policy = Policy(self.defaults)
        self._lock = asyncio.Lock()

    async def current(self) -> Policy:
        """The policy as it stands now."""
        if not self._due():
            return self._policy
        async with self._lock:
            if self._due():
                # Marked as seen only once the new policy is in place: a request arriving
                # meanwhile waits here rather than getting the old one.
                local, now = self.store.local_changes, self._clock()
                version = await self.store.policy_version()
                if version != self._version:
                    entries = await self.store.policy_entries()
                    self._policy = Policy(self.defaults, entries)
                    self._version = version
                self._local, self._checked_at = local, now
        return self._policy

    def _due(self) -> bool:
        stale = self._clock() - self._checked_at >= self.recheck_s
        return stale or self.store.local_changes != self._local

    def is_admin(self, requester: Requester) -> bool:
        """Listed in IMAGINE_ADMIN_USERS (exempt from user, tier and channel rules)."""
        return self.settings.is_admin(requester.platform, requester.user_id)

    async def standing(self, requester: Requester) -> Standing:
        """The rules that count for ``requester`` now."""
        policy = await self.current()
        return policy.standing(requester, admin=self.is_admin(requester))


def refuse_blocked(standing: Standing, requester: Requester) -> None:
    """Raise ``Blocked`` in plain words when an admin turned image making off for this request."""
    scope = standing.blocked
    if scope is None:
        return
    raise Blocked(scope, texts.blocked(scope, team_word(requester.platform)))


def check_never_fits(standing: Standing, request: ImageRequest) -> None:
    """Raise a ``NeverFits`` naming what would fit, for the first scope the request can't fit."""
    platform = request.requester.platform
    for counted in standing.counted:
        rules = counted.rules
        check_fits(
            request.options,
            len(request.sources),
            len(request.prompt),
            rules.limits,
            rules.budgets,
            whose(counted.scope, platform) or "your",
        )
