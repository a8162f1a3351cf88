"""Spend control: who may make images, how many and for how much, at five scopes.

Rules come from the settings (the ``.env`` defaults) and from the policy table, which admins
change at run time; a job is admitted only when every scope that applies to it has room.

    scope    counted over                       default                          changed by
    user     the requester's own jobs           IMAGINE_USER_LIMIT / _BUDGET     a user rule
    tier     (the member's own jobs)            -                                a tier rule
    channel  every job in the channel           IMAGINE_CHANNEL_LIMIT / _BUDGET  a channel rule
    team     every job in the server/workspace  IMAGINE_TEAM_LIMIT / _BUDGET     a team rule
    total    every job, every platform, CLI     IMAGINE_TOTAL_LIMIT / _BUDGET    a total rule

A tier (a Discord role, a Slack user group) replaces the user defaults for its members; a member
of several gets the most generous. A rule set on the user wins over any tier. Admins
(IMAGINE_ADMIN_USERS) are exempt from user, tier and channel rules, never from team or total.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from bot.config import WINDOW_SECONDS, WindowRule, parse_rules
from bot.errors import InvalidRequest
from bot.models import Requester
from bot.sizes import size_problem

if TYPE_CHECKING:
    from bot.config import Settings

Scope = Literal["user", "tier", "channel", "team", "total"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
# The scopes a job's charges are summed over (a tier's rules are counted on the member).
Counting = Literal["user", "channel", "team", "total"]

RULE_NAMES = ("limit", "budget", "blocked")
# What a channel may set for the requests made in it (the user's own flags still win).
DEFAULT_NAMES = ("size", "quality", "model", "moderation", "format", "previews", "allowed")
NAMES = RULE_NAMES + DEFAULT_NAMES
_NAMES_AT: dict[Scope, tuple[str, ...]] = {
    "user": RULE_NAMES,
    "tier": RULE_NAMES,
    "channel": ("limit", "budget", *DEFAULT_NAMES),
    "team": RULE_NAMES,
    "total": ("limit", "budget"),
}
UNLIMITED = "unlimited"
_MONTH = WINDOW_SECONDS["month"]
_YES = {"yes", "y", "true", "on", "1"}
_NO = {"no", "n", "false", "off", "0"}
_CHOICES = {
    "quality": ("auto", "low", "medium", "high"),
    "moderation": ("auto", "low"),
    "format": ("png", "jpeg", "webp"),
}
_SIZE = re.compile(r"^(auto|\d+x\d+)$")
_MODEL = re.compile(r"^[\x21-\x7e]{1,64}$")


@dataclass(frozen=True)
class Entry:
    """One rule or channel default kept in the policy table.

    ``target`` is ``platform:id`` (a user, a tier, a channel, a team) and empty for ``total``;
    ``value`` is normalised text: ``20/day,100/month``, ``unlimited``, ``yes``, ``1024x1024``.
    """

    scope: Scope
    target: str
    name: str
    value: str


@dataclass(frozen=True)
class Rules:
    """Image limits and dollar budgets, each per window."""

    limits: tuple[WindowRule, ...] = ()
    budgets: tuple[WindowRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.limits or self.budgets)


NO_RULES = Rules()


@dataclass(frozen=True)
class Counted:
    """Rules whose usage is summed over one set of jobs: the requester's, a channel's..."""

    scope: Counting
    key: str  # "discord:123" for user, channel and team; "" for total
    rules: Rules
    # Where the rules came from: "default", "user", "tier" (``tier`` names it), or "scope".
    source: str = "default"
    tier: str | None = None


@dataclass(frozen=True)
class Standing:
    """What a requester may do: the rules that count for them, or why they may not ask."""

    counted: tuple[Counted, ...]
    blocked: Scope | None = None  # the scope that blocks them, if any


@dataclass(frozen=True)
class ChannelDefaults:
    """What a channel set for the requests made in it; None keeps the bot's default."""

    size: str | None = None
    quality: str | None = None
    model: str | None = None
    moderation: str | None = None
    output_format: str | None = None
    previews: bool | None = None
    allowed: bool = True


NO_DEFAULTS = ChannelDefaults()


def target_key(platform: str, ident: str) -> str:
    """The key a user, tier, channel or team is kept under: ``discord:123``."""
    return f"{platform}:{ident}"


def user_in_team(user_key: str, team_id: str) -> str:
    """The key of a user's rules within one team (what a team's admins may set)."""
    return f"{user_key}@{team_id}"


def split_key(key: str) -> tuple[str, str]:
    """``("discord", "123")`` from ``discord:123``."""
    platform, _, ident = key.partition(":")
    return platform, ident


def generosity(rules: Sequence[WindowRule]) -> float:
    """How much a set of rules allows over a month (the tightest rule decides); inf: no rule."""
    return min((r.amount * _MONTH / r.seconds for r in rules), default=math.inf)


def rules_text(rules: Sequence[WindowRule], *, dollars: bool) -> str:
    """Rules written back the way they are read: ``20/day,100/month`` (``$`` for budgets)."""
    if not rules:
        return UNLIMITED
    sign = "$" if dollars else ""
    return ",".join(f"{sign}{_amount(r.amount)}/{r.label}" for r in rules)


def _amount(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


# --- reading a change -------------------------------------------------------------------------
def parse_scope(text: str) -> Scope:
    """A scope by name (any case, plural allowed), or InvalidRequest listing them."""
    word = text.strip().lower().removesuffix("s")
    word = {"server": "team", "workspace": "team", "role": "tier", "group": "tier"}.get(word, word)
    for scope in SCOPES:
        if scope == word:
            return scope
    raise InvalidRequest(
        f"There is no scope called {text.strip()!r}; use user, tier, channel, team or total.",
        param="scope",
    )


def parse_entry(scope: Scope, target: str, name: str, value: str) -> Entry:
    """A validated, normalised entry, or InvalidRequest saying what is wrong and how to write it."""
    name = name.strip().lower()
    name = {"limits": "limit", "budgets": "budget", "output_format": "format"}.get(name, name)
    if name not in NAMES:
        raise InvalidRequest(
            f"There is no rule called {name!r}; use {_or(NAMES)}.",
            param="rule",
        )
    allowed = _NAMES_AT[scope]
    if name not in allowed:
        if scope == "channel" and name == "blocked":
            return Entry(scope, target, "allowed", "no" if _yes_no(value, name) else "yes")
        raise InvalidRequest(
            f"A {scope} can't have a {name} rule; a {scope} takes {_or(allowed)}.", param="rule"
        )
    return Entry(scope, target, name, normalise_value(name, value))


def normalise_value(name: str, value: str) -> str:
    """The value written the one way it is kept, or InvalidRequest."""
    text = value.strip()
    word = text.lower()
    if not text:
        raise InvalidRequest(f"Give a value for {name}.", param="value")
    if name in ("limit", "budget"):
        if word in (UNLIMITED, "none", "no limit", "off"):
            return UNLIMITED
        if text.lstrip("$").startswith("-"):
            raise InvalidRequest(
                f"A {name} can't be negative ({text}); use a number above zero, or {UNLIMITED!r}.",
                param="value",
            )
        try:
            rules = parse_rules(text, whole=name == "limit")
        except ValueError as exc:
            raise InvalidRequest(f"Can't use that {name}: {exc}.", param="value") from None
        return rules_text(rules, dollars=name == "budget")
    if name in ("blocked", "allowed", "previews"):
        return "yes" if _yes_no(text, name) else "no"
    if name in _CHOICES:
        word = "jpeg" if word == "jpg" else word
        if word not in _CHOICES[name]:
            raise InvalidRequest(
                f"{name} can be {_or(_CHOICES[name])}, not {text!r}.", param="value"
            )
        return word
    if name == "size":
        word = word.replace(" ", "").replace("×", "x")
        if not _SIZE.match(word):
            raise InvalidRequest(
                "A size is 'auto' or WIDTHxHEIGHT such as 1024x1024.", param="value"
            )
        problem = size_problem("gpt-image-2", word)
        if problem is not None:
            hint = f"; try {problem.suggestion}" if problem.suggestion else ""
            raise InvalidRequest(f"{problem.reason}{hint}.", param="value")
        return word
    if not _MODEL.match(text):  # model
        raise InvalidRequest("Write a model name like gpt-image-2.", param="value")
    return word if word.startswith("gpt-image") else text


def _yes_no(text: str, name: str) -> bool:
    word = text.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise InvalidRequest(f"{name} is yes or no, not {text.strip()!r}.", param="value")


def _or(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)


def _rules(value: str | None, *, dollars: bool) -> tuple[WindowRule, ...] | None:
    """Parsed kept rules; None when nothing is set."""
    if value is None:
        return None
    if value == UNLIMITED:
        return ()
    return parse_rules(value.replace("$", ""), whole=not dollars)


# --- resolving who gets which rules ------------------------------------------------------------
@dataclass(frozen=True)
class Defaults:
    """The settings' rules per scope (``.env``)."""

    user: Rules = NO_RULES
    channel: Rules = NO_RULES
    team: Rules = NO_RULES
    total: Rules = NO_RULES

    @classmethod
    def from_settings(cls, settings: Settings) -> Defaults:
        """IMAGINE_{USER,CHANNEL,TEAM,TOTAL}_{LIMIT,BUDGET}."""

        def read(limit: str | None, budget: str | None) -> Rules:
            return Rules(parse_rules(limit, whole=True), parse_rules(budget, whole=False))

        s = settings
        return cls(
            user=read(s.imagine_user_limit, s.imagine_user_budget),
            channel=read(s.imagine_channel_limit, s.imagine_channel_budget),
            team=read(s.imagine_team_limit, s.imagine_team_budget),
            total=read(s.imagine_total_limit, s.imagine_total_budget),
        )


@dataclass
class Policy:
    """The rules in force: the defaults with the policy table's entries on top."""

    defaults: Defaults
    entries: Sequence[Entry] = ()
    _index: dict[tuple[Scope, str], dict[str, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            self._index.setdefault((entry.scope, entry.target), {})[entry.name] = entry.value

    def values(self, scope: Scope, target: str) -> Mapping[str, str]:
        """What is set for one user, tier, channel or team (or the total)."""
        return self._index.get((scope, target), {})

    def has_tiers(self, platform: str) -> bool:
        """Whether any tier of ``platform`` has rules (else its groups need not be looked up)."""
        return any(s == "tier" and t.startswith(f"{platform}:") for s, t in self._index)

    def _scope_rules(self, scope: Scope, target: str, default: Rules) -> Rules:
        values = self.values(scope, target)
        limits = _rules(values.get("limit"), dollars=False)
        budgets = _rules(values.get("budget"), dollars=True)
        return Rules(
            default.limits if limits is None else limits,
            default.budgets if budgets is None else budgets,
        )

    def standing(self, requester: Requester, *, admin: bool = False) -> Standing:
        """The rules that count for ``requester`` (their ``groups`` are their tiers)."""
        platform = requester.platform
        team = target_key(platform, requester.team_id) if requester.team_id else None
        channel = target_key(platform, requester.channel_id) if requester.channel_id else None
        counted: list[Counted] = []
        blocked: Scope | None = None
        if not admin:
            user, tier_blocked = self._user_rules(requester)
            if user is None:
                blocked = "user" if tier_blocked is None else "tier"
            elif user.rules:
                counted.append(user)
            if channel is not None:
                values = self.values("channel", channel)
                if values.get("allowed") == "no" and blocked is None:
                    blocked = "channel"
                rules = self._scope_rules("channel", channel, self.defaults.channel)
                if rules:
                    counted.append(Counted("channel", channel, rules, _source("channel", values)))
        if team is not None:
            values = self.values("team", team)
            if values.get("blocked") == "yes" and blocked is None:
                blocked = "team"
            rules = self._scope_rules("team", team, self.defaults.team)
            if rules:
                counted.append(Counted("team", team, rules, _source("team", values)))
        total = self._scope_rules("total", "", self.defaults.total)
        if total:
            counted.append(Counted("total", "", total, _source("total", self.values("total", ""))))
        return Standing(tuple(counted), blocked)

    def _user_rules(self, requester: Requester) -> tuple[Counted | None, str | None]:
        """The member's user-level rules (None: blocked) and the tier that blocks them."""
        key = requester.key
        # A rule set for the user everywhere (the operator's), then one set in this team wins.
        mine = dict(self.values("user", key))
        if requester.team_id:
            mine.update(self.values("user", user_in_team(key, requester.team_id)))
        if mine.get("blocked") == "yes":
            return None, None
        tiers = [target_key(requester.platform, g) for g in requester.groups]
        tiers = [t for t in tiers if self.values("tier", t)]
        open_tiers = [t for t in tiers if self.values("tier", t).get("blocked") != "yes"]
        if tiers and not open_tiers and not mine:
            return None, tiers[0]
        default = self.defaults.user
        limits = _rules(mine.get("limit"), dollars=False)
        budgets = _rules(mine.get("budget"), dollars=True)
        source, tier = ("user", None) if limits is not None or budgets is not None else ("", None)
        if open_tiers and (limits is None or budgets is None):
            # Each kind from the tier that allows the most of it over a month.
            tier_limits = [self._scope_rules("tier", t, default).limits for t in open_tiers]
            tier_budgets = [self._scope_rules("tier", t, default).budgets for t in open_tiers]
            best_limit = max(range(len(open_tiers)), key=lambda i: generosity(tier_limits[i]))
            best_budget = max(range(len(open_tiers)), key=lambda i: generosity(tier_budgets[i]))
            if limits is None:
                limits, tier = tier_limits[best_limit], open_tiers[best_limit]
            if budgets is None:
                budgets = tier_budgets[best_budget]
                tier = tier or open_tiers[best_budget]
            source = source or "tier"
        rules = Rules(
            default.limits if limits is None else limits,
            default.budgets if budgets is None else budgets,
        )
        return Counted("user", key, rules, source or "default", tier), None

    def channel_defaults(self, requester: Requester) -> ChannelDefaults:
        """What the requester's channel set (nothing outside a channel)."""
        if not requester.channel_id:
            return ChannelDefaults()
        values = self.values("channel", target_key(requester.platform, requester.channel_id))
        previews = values.get("previews")
        return ChannelDefaults(
            size=values.get("size"),
            quality=values.get("quality"),
            model=values.get("model"),
            moderation=values.get("moderation"),
            output_format=values.get("format"),
            previews=None if previews is None else previews == "yes",
            allowed=values.get("allowed") != "no",
        )


def _source(scope: Scope, values: Mapping[str, str]) -> str:
    return scope if "limit" in values or "budget" in values else "default"


def describe(entries: Iterable[Entry]) -> list[str]:
    """Entries as lines ``scope target name value``, sorted (for show and audit)."""
    return sorted(f"{e.scope} {e.target or '-'} {e.name} {e.value}" for e in entries)


TEAM_WORDS = {"discord": "server", "slack": "workspace"}


def team_word(platform: str) -> str:
    """What a platform calls a team: 'server' on Discord, 'workspace' on Slack."""
    return TEAM_WORDS.get(platform, "team")


def whose(scope: Counting, platform: str) -> str | None:
    """The owner of a shared scope's rules in words ("this server's"); None for the user's own."""
    if scope == "user":
        return None
    if scope == "channel":
        return "this channel's"
    if scope == "team":
        return f"this {team_word(platform)}'s"
    return "the bot's"
