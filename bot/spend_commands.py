"""/imagine-usage, /imagine-history and /imagine-admin, written once for every platform.

A platform turns its options (Discord) or its text (Slack) into these calls, finds users,
channels and tiers through its ``Directory``, and posts the ``Answer`` so only the asker sees it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bot import texts
from bot.errors import (
    InvalidRequest,
    NotAllowed,
    UserFacingError,
    count_images,
    every,
    format_usd,
)
from bot.policy import (
    NAMES,
    Counted,
    Entry,
    Scope,
    parse_entry,
    parse_scope,
    rules_text,
    split_key,
    target_key,
    team_word,
    user_in_team,
    whose,
)
from bot.reports import RuleUse, day_start, month_start

if TYPE_CHECKING:
    from bot.models import JobRecord, Requester
    from bot.service import ImageService

HISTORY_SIZE = 10
TOP_USERS = 10
MAX_SHOWN = 40  # entries listed by "show"; a chat message has room for about this many lines
PROMPT_IN_LIST = 60
REPORT_WORDS = ("team", "report", "server", "workspace")
ADMIN_USAGE = (
    "Use `show`, `log`, `set <scope> [who] <rule> <value>` or `unset <scope> [who] <rule>`. "
    "Scopes: user, tier, channel, team, total. Rules: limit (images, like 20/day), budget "
    "(dollars, like 20/month), blocked (yes/no); a channel also takes size, quality, model, "
    "moderation, format, previews (on/off) and allowed (yes/no). Example: "
    "`set channel #art budget 5/day`."
)


@dataclass(frozen=True)
class Asker:
    """Who asked, and whether they manage this team (Discord: Manage Server; Slack: an admin
    or owner of the workspace). IMAGINE_ADMIN_USERS are admins everywhere."""

    requester: Requester
    admin: bool = False


@dataclass(frozen=True)
class Answer:
    """What to show the asker (privately); ``refused`` marks a refusal or bad input."""

    text: str
    refused: bool = False


@dataclass(frozen=True)
class AdminArgs:
    """One /imagine-admin request: ``show``, ``log``, ``set`` or ``unset``."""

    action: str = "show"
    scope: str | None = None
    target: str | None = None
    name: str | None = None
    value: str | None = None


class Directory(Protocol):
    """The platform's lookups: mentions, names and ids to the people and places they name."""

    async def find_user(self, text: str) -> Requester | None:
        """The user ``text`` names in this team (with their tiers), or None if there is none."""
        ...

    async def find_channel(self, text: str) -> str | None:
        """The id of the channel ``text`` names in this team, or None."""
        ...

    async def find_tier(self, text: str) -> str | None:
        """The id of the role or user group ``text`` names in this team, or None."""
        ...

    def tier_name(self, tier_id: str) -> str:
        """A tier as readers see it (a role mention, a group handle)."""
        ...

    def message_link(self, job: JobRecord, message_key: str) -> str | None:
        """A link to a message that shows the job, if the platform can make one."""
        ...


def parse_admin(text: str) -> AdminArgs:
    """``set channel #art budget 5/day`` and the like, from a command's text."""
    words = text.split()
    if not words:
        return AdminArgs("show")
    action = words[0].lower()
    if action in ("show", "list", "rules"):
        return AdminArgs("show")
    if action in ("log", "audit", "changes"):
        return AdminArgs("log")
    if action not in ("set", "unset") or len(words) < 2:
        raise InvalidRequest(ADMIN_USAGE)
    scope = parse_scope(words[1])
    rest = words[2:]
    target: str | None = None
    needs_target = scope in ("user", "tier")
    optional_target = scope in ("channel", "team") and rest and not _is_rule(rest[0])
    if (needs_target or optional_target) and rest:
        target, rest = rest[0], rest[1:]
    if not rest:
        raise InvalidRequest(f"Say which rule to {action}. {ADMIN_USAGE}")
    name, value = rest[0], " ".join(rest[1:])
    if action == "set" and not value:
        raise InvalidRequest(f"Give a value for {name}, like `{_example(name)}`.")
    return AdminArgs(action, scope, target, name, value or None)


def parse_usage(text: str) -> tuple[str | None, bool]:
    """Whose usage (None: the asker's) and whether the team report was asked for."""
    word = text.strip()
    if not word:
        return None, False
    if word.lower() in REPORT_WORDS:
        return None, True
    return word, False


def _is_rule(word: str) -> bool:
    return word.lower().removesuffix("s") in NAMES or word.lower() == "format"


def _example(name: str) -> str:
    return {
        "limit": "20/day",
        "budget": "20/month",
        "blocked": "yes",
        "allowed": "no",
        "previews": "off",
        "size": "1024x1024",
        "quality": "medium",
        "format": "webp",
        "moderation": "low",
        "model": "gpt-image-2",
    }.get(name.lower(), "yes")


class SpendCommands:
    """The answers to the three commands; nothing here knows which platform asks."""

    def __init__(self, service: ImageService, markup: texts.Markup, directory: Directory):
        self.service = service
        self.store = service.store
        self.m = markup
        self.directory = directory

    def _operator(self, requester: Requester) -> bool:
        return self.service.settings.is_admin(requester.platform, requester.user_id)

    def _admin(self, asker: Asker) -> bool:
        return asker.admin or self._operator(asker.requester)

    # --- /imagine-usage -----------------------------------------------------------------------
    async def usage(
        self,
        asker: Asker,
        *,
        user: str | None = None,
        report: bool = False,
        now: float | None = None,
    ) -> Answer:
        """Your usage and what is left (admins: anyone's, or the team report)."""
        now = time.time() if now is None else now
        try:
            if report:
                self._require_admin(asker, "see the team report")
                return Answer(await self._team_report(asker.requester, now))
            subject = asker.requester
            if user is not None:
                self._require_admin(asker, "see someone else's usage")
                found = await self.directory.find_user(user)
                if found is None:
                    raise InvalidRequest(self._no_such("user", user, asker.requester, False))
                subject = found
            return Answer(await self._usage(subject, subject is asker.requester, now))
        except UserFacingError as exc:
            return Answer(exc.user_message, refused=True)

    async def _usage(self, who: Requester, own: bool, now: float) -> str:
        m = self.m
        day, month = day_start(now), month_start(now)
        today = await self.store.spend(day, now + 1, user_key=who.key)
        this_month = await self.store.spend(month, now + 1, user_key=who.key)
        title = "Your usage" if own else f"Usage of {m.mention(who.user_id)}"
        lines = [
            m.bold(title),
            f"Today: {count_images(today.images)}, {format_usd(today.cost)}. "
            f"This month: {count_images(this_month.images)}, {format_usd(this_month.cost)}.",
        ]
        standing = await self.service.policy.standing(who)
        if standing.blocked is not None:
            lines.append(texts.blocked(standing.blocked, team_word(who.platform)))
        uses = await self.store.rule_uses(standing.counted, now)
        if uses:
            lines.append("What's left:")
            lines += [f"• {self._use_line(use, who.platform, own)}" for use in uses]
        elif standing.blocked is None:
            lines.append("No limit or budget applies to you here." if own else "No limit applies.")
        return "\n".join(lines)

    def _use_line(self, use: RuleUse, platform: str, own: bool) -> str:
        m = self.m
        rule = use.rule
        owner = whose(use.counted.scope, platform) or ("your" if own else "their")
        kind = "budget" if use.dollars else "limit"
        amount = format_usd(rule.amount) if use.dollars else count_images(int(rule.amount))
        left = format_usd(use.left) if use.dollars else f"{int(use.left)}"
        line = f"{owner[:1].upper()}{owner[1:]} {every(rule.label)} {kind} of {amount}: "
        line += f"{left} left" if use.left > 0 else "used up"
        if use.frees_at is not None:
            line += f"; frees up {m.relative(use.frees_at)}"
        if use.counted.source == "tier" and use.counted.tier is not None:
            line += f" (as {self.directory.tier_name(split_key(use.counted.tier)[1])})"
        return line

    async def _team_report(self, requester: Requester, now: float) -> str:
        m = self.m
        platform, team = requester.platform, requester.team_id
        since = month_start(now)
        report = await self.store.team_report(
            since, now + 1, platform=platform, team_id=team or None, top=TOP_USERS
        )
        where = f"This {team_word(platform)}" if team else "All teams"
        lines = [m.bold(f"{where}: spend this month"), f"Since {m.relative(since)} (UTC month)."]
        if report.users:
            lines.append("Top users:")
            lines += [
                f"{i}. {m.mention(split_key(u.key)[1])}: {count_images(u.images)}, "
                f"{format_usd(u.cost)}"
                for i, u in enumerate(report.users, start=1)
            ]
        else:
            lines.append("Nobody has made an image here this month.")
        if report.channels:
            lines.append("Channels:")
            lines += [
                f"• {m.channel(split_key(c.key)[1])}: {count_images(c.images)}, "
                f"{format_usd(c.cost)}"
                for c in report.channels
            ]
        lines.append(
            f"{where}: {count_images(report.team.images)}, {format_usd(report.team.cost)}."
        )
        if team:
            lines.append(
                f"The whole bot: {count_images(report.everything.images)}, "
                f"{format_usd(report.everything.cost)}."
            )
        policy = await self.service.policy.current()
        shared = policy.standing(requester, admin=True).counted
        for use in await self.store.rule_uses(shared, now):
            lines.append(f"• {self._use_line(use, platform, True)}")
        return "\n".join(lines)

    # --- /imagine-history ---------------------------------------------------------------------
    async def history(self, asker: Asker, job_id: str | None = None) -> Answer:
        """Your last jobs, or one job's whole record."""
        try:
            if job_id:
                return Answer(await self._one_job(asker, job_id.strip()))
            return Answer(await self._history(asker.requester))
        except UserFacingError as exc:
            return Answer(exc.user_message, refused=True)

    async def _history(self, who: Requester) -> str:
        m = self.m
        items = await self.store.history(who.key, HISTORY_SIZE)
        if not items:
            return "You haven't asked for any images yet. Try `/imagine a lighthouse in fog`."
        lines = [m.bold(f"Your last {len(items)} request{'s' if len(items) != 1 else ''}")]
        for item in items:
            job = item.job
            parts = [
                m.relative(job.created_at),
                m.code(job.id),
                job.options.size,
                format_usd(job.cost_usd if job.status == "succeeded" else 0.0),
                job.status,
                f"“{m.escape(texts.shorten(job.prompt, PROMPT_IN_LIST))}”",
            ]
            link = self.directory.message_link(job, item.message_key) if item.message_key else None
            if link:
                parts.append(m.link(link, "message"))
            lines.append("• " + " · ".join(parts))
        lines.append("Ask for one with its job id for the whole record.")
        return "\n".join(lines)

    async def _one_job(self, asker: Asker, job_id: str) -> str:
        m = self.m
        job = await self.service.get_job(job_id)
        if job is None:
            raise InvalidRequest(f"There is no job {m.code(job_id)}. Check the id and try again.")
        own = job.requester.key == asker.requester.key
        same_team = job.requester.platform == asker.requester.platform and (
            job.requester.team_id == asker.requester.team_id
        )
        # A team's admins see their team's jobs; the operator sees every job.
        if not own and not (self._operator(asker.requester) or (asker.admin and same_team)):
            raise NotAllowed(
                f"Job {m.code(job_id)} was asked for by someone else; only admins can see "
                "other people's jobs."
            )
        o = job.options
        lines = [
            m.bold(f"Job {m.code(job.id)}: {job.status}"),
            f"Prompt: “{m.escape(texts.shorten(job.prompt, 900))}”",
            f"Options: model {o.model}, size {o.size}, quality {o.quality}, "
            f"{count_images(o.n)}, format {o.output_format}, background {o.background}, "
            f"moderation {o.moderation}",
            f"Asked by {m.mention(job.requester.user_id)} {m.relative(job.created_at)}"
            + (f" in {m.channel(job.requester.channel_id)}" if job.requester.channel_id else ""),
        ]
        if job.parent_job_id:
            lines.append(f"Edit of job {m.code(job.parent_job_id)}")
        elif job.is_edit:
            lines.append(f"Edit of {count_images(job.source_count)} attached")
        if job.started_at is not None and job.finished_at is not None:
            waited = job.started_at - job.created_at
            lines.append(f"Took {job.finished_at - job.started_at:.0f} s (waited {waited:.0f} s)")
        cost = f"Cost: {format_usd(job.cost_usd)}"
        if job.usage is not None:
            u = job.usage
            cost += (
                f" ({u.input_text_tokens:,} text and {u.input_image_tokens:,} image tokens in, "
                f"{u.output_tokens:,} out)"
            )
        if job.status != "succeeded":
            cost += f"; charged {format_usd(job.charged_cost)}"
        lines.append(cost)
        if job.error:
            lines.append(f"Why it ended: {m.escape(job.error)}")
        key = await self.store.message_of(job.id)
        link = self.directory.message_link(job, key) if key else None
        if link:
            lines.append(m.link(link, "Open the message"))
        return "\n".join(lines)

    # --- /imagine-admin -----------------------------------------------------------------------
    async def admin(self, asker: Asker, args: AdminArgs) -> Answer:
        """Show, change or remove the rules and channel defaults (admins only)."""
        try:
            self._require_admin(asker, "see or change the bot's rules")
            if args.action == "show":
                return Answer(await self._show(asker.requester))
            if args.action == "log":
                return Answer(await self._log(asker))
            if args.action not in ("set", "unset") or not args.scope or not args.name:
                raise InvalidRequest(ADMIN_USAGE)
            return Answer(await self._change(asker, args))
        except UserFacingError as exc:
            return Answer(exc.user_message, refused=True)

    async def _change(self, asker: Asker, args: AdminArgs) -> str:
        requester = asker.requester
        assert args.scope is not None and args.name is not None
        scope = parse_scope(args.scope)
        target = await self._target(asker, scope, args.target)
        actor = requester.key
        if args.action == "set":
            if not args.value:
                raise InvalidRequest(f"Give a value for {args.name}, like `{_example(args.name)}`.")
            entry = parse_entry(scope, target, args.name, args.value)
            old = await self.store.set_policy(entry, actor)
            what = f"{self._label(scope, target)} {entry.name}"
            was = f"was {old}" if old is not None else "was the default"
            return (
                f"Done: {what} is now {self.m.code(entry.value)} ({was}). It applies from the "
                "next request."
            )
        # Normalise the rule's name the way set keeps it (validates it for the scope too).
        name = parse_entry(scope, target, args.name, _example(args.name)).name
        old = await self.store.unset_policy(scope, target, name, actor)
        what = f"{self._label(scope, target)} {name}"
        if old is None:
            return f"Nothing to remove: {what} isn't set here, so the default applies."
        return (
            f"Removed: {what} (was {self.m.code(old)}); the default applies from the next request."
        )

    async def _target(self, asker: Asker, scope: Scope, text: str | None) -> str:
        requester = asker.requester
        platform = requester.platform
        team = team_word(platform)
        if scope == "total":
            if not self._operator(requester):
                raise NotAllowed(
                    "Only the bot's operator (listed in IMAGINE_ADMIN_USERS) can change the "
                    "total for the whole bot. Nothing was changed."
                )
            return ""
        if scope == "team":
            if not requester.team_id:
                raise InvalidRequest(f"Use this in a channel of the {team} you want to change.")
            return target_key(platform, requester.team_id)
        if scope == "channel":
            if text is None:
                if not requester.channel_id:
                    raise InvalidRequest("Name the channel, like #art.")
                return target_key(platform, requester.channel_id)
            channel = await self.directory.find_channel(text)
            if channel is None:
                raise InvalidRequest(self._no_such("channel", text, requester))
            return target_key(platform, channel)
        if text is None:
            raise InvalidRequest(f"Name the {scope}: {ADMIN_USAGE}")
        if scope == "tier":
            tier = await self.directory.find_tier(text)
            if tier is None:
                raise InvalidRequest(self._no_such("tier", text, requester))
            return target_key(platform, tier)
        user = await self.directory.find_user(text)
        if user is None:
            raise InvalidRequest(self._no_such("user", text, requester))
        if not requester.team_id:
            raise InvalidRequest(f"Use this in a channel of the {team} the user's rule is for.")
        # Rules a team's admins set hold in that team only (the operator's CLI sets them for
        # everywhere).
        return user_in_team(user.key, requester.team_id)

    def _no_such(self, kind: str, text: str, requester: Requester, changing: bool = True) -> str:
        team = team_word(requester.platform)
        noun = {"tier": "role" if requester.platform == "discord" else "user group"}.get(kind, kind)
        shown = self.m.escape(texts.shorten(text, 80))
        unchanged = " Nothing was changed." if changing else ""
        return f"I can't find a {noun} called {shown} in this {team}.{unchanged}"

    def _label(self, scope: Scope, target: str) -> str:
        m = self.m
        ident = split_key(target)[1] if target else ""
        if scope == "total":
            return "the bot's total"
        if scope == "team":
            return f"this {team_word(split_key(target)[0])}'s"
        if scope == "channel":
            return f"{m.channel(ident)}'s"
        if scope == "tier":
            return f"{self.directory.tier_name(ident)}'s"
        return f"{m.mention(ident.partition('@')[0])}'s"

    async def _show(self, requester: Requester) -> str:
        m = self.m
        book = self.service.policy
        defaults = book.defaults
        platform = requester.platform

        def pair(counted: Counted) -> str:
            rules = counted.rules
            return (
                f"limit {rules_text(rules.limits, dollars=False)}, "
                f"budget {rules_text(rules.budgets, dollars=True)}"
            )

        lines = [
            m.bold("Rules in force"),
            "Defaults from the bot's settings:",
            f"• each user: {pair(Counted('user', '', defaults.user))}",
            f"• each channel: {pair(Counted('channel', '', defaults.channel))}",
            f"• each {team_word(platform)}: {pair(Counted('team', '', defaults.team))}",
            f"• the whole bot: {pair(Counted('total', '', defaults.total))}",
        ]
        entries = await self._entries_here(requester)
        if entries:
            lines.append("Set here (these win over the defaults):")
            for entry in entries[:MAX_SHOWN]:
                lines.append(
                    f"• {self._label(entry.scope, entry.target)} {entry.name}: "
                    f"{m.code(entry.value)}"
                )
            if len(entries) > MAX_SHOWN:
                lines.append(f"…and {len(entries) - MAX_SHOWN} more.")
        else:
            lines.append("Nothing is set here yet; the defaults apply.")
        lines.append(
            f"Change them with {m.code('set')} and {m.code('unset')}; see {m.code('log')}."
        )
        return "\n".join(lines)

    async def _entries_here(self, requester: Requester) -> list[Entry]:
        """The entries that concern this team: the total, the team, its channels, tiers, users."""
        policy = await self.service.policy.current()
        here: list[Entry] = []
        for entry in policy.entries:
            if await self._concerns(requester, entry.scope, entry.target):
                here.append(entry)
        return here

    async def _concerns(self, requester: Requester, scope: str, target: str) -> bool:
        """Whether a rule is this team's (or the whole bot's), so its admins may see it."""
        platform, ident = split_key(target)
        team = target_key(requester.platform, requester.team_id) if requester.team_id else None
        if scope == "total" or (scope == "team" and target == team):
            return True
        if platform != requester.platform or scope == "team":
            return False
        if scope == "user":
            # The team's own user rules, and the operator's rules for everyone.
            where = ident.partition("@")[2]
            return where == "" or where == requester.team_id
        if scope == "channel":
            return await self.directory.find_channel(ident) is not None
        return await self.directory.find_tier(ident) is not None

    async def _log(self, asker: Asker) -> str:
        m = self.m
        changes = await self.store.policy_changes(200)
        if not self._operator(asker.requester):
            changes = [
                c for c in changes if await self._concerns(asker.requester, c.scope, c.target)
            ]
        changes = changes[:10]
        if not changes:
            return "No rule has been changed yet."
        lines = [m.bold("Latest changes")]
        for change in changes:
            scope: Scope = parse_scope(change.scope)
            who = m.mention(split_key(change.actor)[1]) if change.actor else "someone"
            was = change.old_value or "default"
            now = change.new_value or "default"
            lines.append(
                f"• {m.relative(change.at)} {who}: {self._label(scope, change.target)} "
                f"{change.name} {m.code(was)} → {m.code(now)}"
            )
        return "\n".join(lines)

    def _require_admin(self, asker: Asker, to_do: str) -> None:
        if not self._admin(asker):
            raise NotAllowed(texts.admins_only(asker.requester.platform, to_do))
