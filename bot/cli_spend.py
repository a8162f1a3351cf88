"""``imagine-bot usage`` and ``imagine-bot policy``: spend per user, team reports, CSV exports
and the policy table, read and changed on the data dir (no tokens needed, a bot may be running).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bot.errors import InvalidRequest, format_usd
from bot.policy import (
    Defaults,
    Entry,
    Policy,
    Rules,
    Scope,
    parse_entry,
    parse_scope,
    rules_text,
    split_key,
)

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.models import JobRecord
    from bot.reports import RuleUse, Spend
    from bot.store import Store

EXIT_USAGE = 2
TOP_USERS = 10
EVERY_ROW = sys.maxsize  # a LIMIT no table reaches
LOG_SIZE = 20

CSV_COLUMNS = (
    "id",
    "created_at",
    "platform",
    "team",
    "channel",
    "user",
    "status",
    "images",
    "charged_cost",
    "cost_usd",
    "size",
    "quality",
    "model",
    "prompt",
)
USAGE_EPILOG = """\
Without --since/--until the table shows today and this month (UTC). With them it shows that
period; --report and --csv cover it too, and this UTC month when neither is given.

--csv writes one row per job created in the period, oldest first, with these columns:
  id            the job id (imagine-bot history and chat answers show it)
  created_at    when it was asked for, ISO 8601 in UTC (2026-11-05T09:30:00+00:00)
  platform      discord, slack or cli
  team          the Discord server or Slack workspace id (empty for cli)
  channel       the channel id (empty for cli)
  user          the requester as --user takes it: discord:ID, slack:ID, cli:NAME
  status        queued, running, succeeded or failed
  images        images charged: what counts against limits (0 once refunded)
  charged_cost  dollars charged: what counts against budgets (0 once refunded)
  cost_usd      dollars the image service billed
  size, quality, model   the options asked for
  prompt        the prompt as written (quoted when it holds commas, quotes or newlines)
"""
POLICY_HELP = """\
Scopes: user, tier, channel, team, total. Targets are written as the bot keeps them:
  user     discord:<user id>, slack:<user id> or cli:<name>
  tier     discord:<role id> or slack:<user group id>
  channel  discord:<channel id> or slack:<channel id>
  team     discord:<server id> or slack:<workspace id>
  total    no target (or -)
Rules: limit (images, like 20/day,100/month), budget (dollars, like 5/day), blocked (yes/no);
a channel also takes size, quality, model, moderation, format, previews (on/off), allowed.
Examples:
  imagine-bot policy set team discord:123456789012345678 budget 20/month
  imagine-bot policy set total budget 100/month
  imagine-bot policy unset user slack:U0123ABCD limit
"""
SET_USAGE = "imagine-bot policy set SCOPE TARGET RULE VALUE (for total: SCOPE RULE VALUE)"
UNSET_USAGE = "imagine-bot policy unset SCOPE TARGET RULE (for total: SCOPE RULE)"
_TARGET_FORMS = {
    "user": "discord:<user id>, slack:<user id> or cli:<name>",
    "tier": "discord:<role id> or slack:<user group id>",
    "channel": "discord:<channel id> or slack:<channel id>",
    "team": "discord:<server id> or slack:<workspace id>",
}
# A value each rule accepts, to check a rule's name for ``unset`` the way ``set`` does.
_SAMPLE_VALUES = {
    "limit": "1/day",
    "limits": "1/day",
    "budget": "1/day",
    "budgets": "1/day",
    "size": "auto",
    "quality": "auto",
    "moderation": "auto",
    "format": "png",
    "output_format": "png",
    "model": "gpt-image-2",
}


# --- reading the command line ------------------------------------------------------------------
def moment(text: str) -> float:
    """An argparse type: an ISO date or date-time (or a month: its first day), UTC unless it
    names its offset."""
    word = text.strip()
    if len(word) == 7 and word[4] == "-":  # 2026-11: the month's first day
        word += "-01"
    try:
        when = datetime.fromisoformat(word)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"can't read {text!r} as a date; write it like 2026-11-01 or 2026-11-01T09:30 (UTC)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def team(text: str) -> str:
    """An argparse type: a team written ``discord:<server id>`` or ``slack:<workspace id>``."""
    try:
        return parse_target("team", text)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(exc.user_message) from None


def parse_target(scope: Scope, text: str | None) -> str:
    """A policy target as the bot keeps it (``discord:123``; "" for total), or InvalidRequest."""
    shown = (text or "").strip()
    if scope == "total":
        if shown in ("", "-"):
            return ""
        raise InvalidRequest(
            f"The total has no target (not {shown!r}); write `imagine-bot policy set total "
            "budget 100/month`, or - in the target's place."
        )
    platform, colon, ident = shown.partition(":")
    platform = platform.lower()
    platforms = ("discord", "slack", "cli") if scope == "user" else ("discord", "slack")
    form = _TARGET_FORMS[scope]
    bad_ident = not ident or ":" in ident or any(c.isspace() for c in ident)
    if not colon or platform not in platforms or bad_ident:
        raise InvalidRequest(f"Write the {scope} as {form}, not {shown!r}.")
    if platform == "discord" and not ident.isdigit():
        raise InvalidRequest(
            f"Discord ids are numbers, not {ident!r}; copy one with Developer Mode on "
            "(right-click → Copy ID)."
        )
    if platform == "slack":
        if not (ident.isascii() and ident.isalnum()):
            raise InvalidRequest(f"Slack ids are letters and digits like U0123ABCD, not {ident!r}.")
        ident = ident.upper()  # Slack writes every id in capitals
    return f"{platform}:{ident}"


def add_usage_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``usage`` sub-command and its options."""
    usage = commands.add_parser(
        "usage",
        help="images and dollars per user (today and this month, or a period); team reports; CSV",
        description="Images and dollars charged per user, read from the data dir.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    usage.add_argument(
        "--user",
        help="only this requester: discord:1234, slack:U0123, or a bare name for cli:NAME "
        "(as imagine --user takes it)",
    )
    usage.add_argument(
        "--since",
        type=moment,
        metavar="DATE",
        help="from this ISO date or date-time, UTC (2026-11-01, 2026-11-01T09:30, or 2026-11 "
        "for the month's first day)",
    )
    usage.add_argument(
        "--until",
        type=moment,
        metavar="DATE",
        help="up to this date or date-time, UTC, not included (default: now)",
    )
    usage.add_argument(
        "--team",
        type=team,
        metavar="PLATFORM:ID",
        help="only this Discord server or Slack workspace: discord:123 or slack:T0123",
    )
    output = usage.add_mutually_exclusive_group()
    output.add_argument(
        "--report",
        action="store_true",
        help="top users, spend per channel, the team's and the whole bot's totals against the "
        "limits and budgets in force",
    )
    output.add_argument(
        "--csv", action="store_true", help="one CSV row per job to stdout (columns below)"
    )


def add_policy_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``policy`` sub-command: show, set, unset, log."""
    policy = commands.add_parser(
        "policy",
        help="show or change limits, budgets and channel defaults; see who changed what",
        description="The rules set at run time, kept in the data dir. A running bot applies a "
        "change from its next request.",
        epilog=POLICY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("show", help="every rule set, and the settings' defaults")
    set_ = actions.add_parser(
        "set",
        help="set a rule or channel default",
        usage=SET_USAGE,
        epilog=POLICY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # One REMAINDER, scope included: a value like -5/day then reaches parse_entry (which says
    # why it can't be) instead of being taken for an unknown flag.
    set_.add_argument("words", nargs=argparse.REMAINDER, metavar="SCOPE TARGET RULE VALUE")
    unset = actions.add_parser(
        "unset",
        help="remove a rule (the default applies again)",
        usage=UNSET_USAGE,
        epilog=POLICY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    unset.add_argument("words", nargs=argparse.REMAINDER, metavar="SCOPE TARGET RULE")
    log = actions.add_parser("log", help="who changed which rule, newest first")
    log.add_argument(
        "--limit", type=int, default=LOG_SIZE, metavar="N", help=f"changes (default {LOG_SIZE})"
    )


# --- usage -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Period:
    """[since, until) in epoch seconds; ``to_now`` when no end was given."""

    since: float
    until: float
    to_now: bool

    def words(self) -> str:
        """'from 2026-11-01 00:00 UTC until now'."""
        start = "from the start" if self.since <= 0 else f"from {_when(self.since)}"
        end = "until now" if self.to_now else f"until {_when(self.until)}"
        return f"{start} {end}"


async def usage(settings: Settings, args: argparse.Namespace) -> int:
    """``imagine-bot usage``: the per-user table, ``--report`` or ``--csv``."""
    from bot.reports import month_start

    now = time.time()
    user: str | None = args.user
    if user is not None and ":" not in user:
        user = f"cli:{user}"  # the same bare name `imagine --user` counts under
    given = args.since is not None or args.until is not None
    since = args.since if args.since is not None else (0.0 if given else month_start(now))
    until = args.until if args.until is not None else now + 1
    if since >= until:
        print(
            f"imagine-bot: --since ({_when(since)}) must be before --until ({_when(until)}).",
            file=sys.stderr,
        )
        return EXIT_USAGE
    period = Period(since, until, to_now=args.until is None)
    jobs: list[JobRecord] = []
    lines: list[str] = []
    store = await _open(settings)
    try:
        if args.csv:
            jobs = await store.jobs_between(since, until, user_key=user, **_team(args.team))
        elif args.report:
            lines = await _report(store, settings, period, args.team, now)
        elif given:
            lines = await _period_table(store, period, user, args.team)
        else:
            lines = await _today_table(store, user, args.team, now)
    finally:
        await store.close()
    return _write(lambda: _write_csv(jobs) if args.csv else _print(lines))


def _team(team_key: str | None) -> dict[str, str]:
    if team_key is None:
        return {}
    platform, ident = split_key(team_key)
    return {"platform": platform, "team_id": ident}


async def _users(
    store: Store, since: float, until: float, user: str | None, team_key: str | None
) -> list[Spend]:
    where = _team(team_key)
    if user is not None:
        # One user's question gets a row of zeros rather than nothing.
        return [await store.spend(since, until, user_key=user, **where)]
    report = await store.team_report(since, until, top=EVERY_ROW, **where)
    return list(report.users)


async def _period_table(
    store: Store, period: Period, user: str | None, team_key: str | None
) -> list[str]:
    rows = await _users(store, period.since, period.until, user, team_key)
    where = f" in {team_key}" if team_key else ""
    title = f"Images and dollars {period.words()} (UTC){where}"
    if not rows:
        return [title, "No images made in that period."]
    lines = [title, f"{'user':<32} {'images':>7} {'dollars':>9}"]
    lines += [f"{row.key:<32} {row.images:>7} {row.cost:>9.4f}" for row in rows]
    return lines


async def _today_table(
    store: Store, user: str | None, team_key: str | None, now: float
) -> list[str]:
    from bot.reports import day_start, month_start

    today = {r.key: r for r in await _users(store, day_start(now), now + 1, user, team_key)}
    month = await _users(store, month_start(now), now + 1, user, team_key)
    if not month:  # only when asking about everyone
        return ["No images made yet." if team_key is None else f"No images made in {team_key} yet."]
    lines = [f"{'user':<32} {'today':>7} {'$ today':>9} {'month':>7} {'$ month':>9}"]
    for row in month:
        day = today.get(row.key)
        images, cost = (day.images, day.cost) if day is not None else (0, 0.0)
        lines.append(f"{row.key:<32} {images:>7} {cost:>9.4f} {row.images:>7} {row.cost:>9.4f}")
    return lines


async def _report(
    store: Store, settings: Settings, period: Period, team_key: str | None, now: float
) -> list[str]:
    from bot.models import Requester

    where = _team(team_key)
    report = await store.team_report(period.since, period.until, top=TOP_USERS, **where)
    name = team_key or "every team"
    lines = [f"Spend in {name} {period.words()} (UTC)"]
    if report.users:
        lines.append("Top users:")
        lines += _table(
            [
                (f"{i}.", u.key, _name(u.name), _images(u.images), format_usd(u.cost))
                for i, u in enumerate(report.users, start=1)
            ],
            indent=2,
            right=(0, 3, 4),
        )
    else:
        lines.append("Nobody made an image in that period.")
    if report.channels:
        lines.append("Channels:")
        lines += _table(
            [(c.key, _images(c.images), format_usd(c.cost)) for c in report.channels],
            indent=2,
            right=(1, 2),
        )
    total = report.team
    label = f"Team {team_key}" if team_key else "All teams"
    lines.append(f"{label}: {_images(total.images)}, {format_usd(total.cost)} ({total.jobs} jobs).")
    if team_key:
        everything = report.everything
        lines.append(
            f"The whole bot: {_images(everything.images)}, {format_usd(everything.cost)} "
            f"({everything.jobs} jobs)."
        )
    policy = Policy(Defaults.from_settings(settings), await store.policy_entries())
    platform, ident = split_key(team_key) if team_key else ("cli", "")
    standing = policy.standing(Requester(platform, "", ident), admin=True)
    if team_key and policy.values("team", team_key).get("blocked") == "yes":
        lines.append(f"Image making is turned off for {team_key} (policy: team blocked yes).")
    uses = await store.rule_uses(standing.counted, now)
    if uses:
        lines.append("Limits and budgets in force now (each over its own rolling window):")
        lines += _table([_use_row(policy, use) for use in uses], indent=2)
    else:
        lines.append(
            "No team or total limit or budget is in force (IMAGINE_TEAM_BUDGET, "
            "IMAGINE_TOTAL_BUDGET, or imagine-bot policy set)."
        )
    return lines


def _use_row(policy: Policy, use: RuleUse) -> tuple[str, ...]:
    counted = use.counted
    kind = "budget" if use.dollars else "limit"
    scope: Scope = counted.scope
    owner = "total" if scope == "total" else f"{scope} {counted.key}"
    if kind in policy.values(scope, counted.key):
        source = "set at run time"
    else:
        source = f"IMAGINE_{scope.upper()}_{kind.upper()}"
    rule = rules_text([use.rule], dollars=use.dollars)
    if use.dollars:
        used, left = format_usd(use.used), format_usd(use.left)
    else:
        used, left = f"{int(use.used)}", f"{int(use.left)}"
    return (owner, kind, rule, f"{used} used,", f"{left} left", f"({source})")


def _write_csv(jobs: Sequence[JobRecord]) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    for job in jobs:
        who, options = job.requester, job.options
        out.writerow(
            (
                job.id,
                datetime.fromtimestamp(job.created_at, UTC).isoformat(timespec="seconds"),
                who.platform,
                who.team_id,
                who.channel_id,
                who.key,
                job.status,
                job.charged_images,
                f"{job.charged_cost:.6f}",
                f"{job.cost_usd:.6f}",
                options.size,
                options.quality,
                options.model,
                job.prompt,
            )
        )


# --- policy ------------------------------------------------------------------------------------
async def policy(settings: Settings, args: argparse.Namespace) -> int:
    """``imagine-bot policy show|set|unset|log``; bad input changes nothing (InvalidRequest)."""
    action: str = args.action
    change: Entry | None = None
    if action in ("set", "unset"):
        # Everything is checked before the data dir is opened.
        set_ = action == "set"
        if not args.words:
            raise _shape_error(set_=set_)
        scope = parse_scope(args.words[0])
        target, name, value = _change_words(scope, args.words[1:], set_=set_)
        if value is None:  # unset: the rule's name is checked (and normalised) as set would
            value = _SAMPLE_VALUES.get(name.strip().lower(), "yes")
        change = parse_entry(scope, target, name, value)
    store = await _open(settings)
    try:
        if action == "show":
            lines = await _show(store, settings)
        elif action == "log":
            lines = await _log(store, args.limit)
        else:
            assert change is not None
            lines = await (_set if action == "set" else _unset)(store, change)
    finally:
        await store.close()
    return _write(lambda: _print(lines))


async def _set(store: Store, entry: Entry) -> list[str]:
    old = await store.set_policy(entry, _actor())
    was = "the default" if old is None else old
    return [
        f"Set {_label(entry.scope, entry.target)} {entry.name} to {entry.value} (was {was}). "
        "A running bot applies it from its next request."
    ]


async def _unset(store: Store, entry: Entry) -> list[str]:
    old = await store.unset_policy(entry.scope, entry.target, entry.name, _actor())
    label = f"{_label(entry.scope, entry.target)} {entry.name}"
    if old is None:
        return [f"Nothing to remove: {label} isn't set, so the default applies."]
    return [f"Removed {label} (was {old}); the default applies from the next request."]


def _change_words(scope: Scope, words: Sequence[str], *, set_: bool) -> tuple[str, str, str | None]:
    """TARGET, RULE and VALUE from what followed the scope; total's target may be left out."""
    words = list(words)
    if scope == "total" and words and words[0].strip() in ("", "-"):
        words = words[1:]
    elif scope == "total" and words and ":" in words[0]:
        parse_target(scope, words[0])  # says the total has no target
    target_words = 0 if scope == "total" else 1
    needed = target_words + (2 if set_ else 1)
    if len(words) < needed or (not set_ and len(words) > needed):
        raise _shape_error(set_=set_)
    target = parse_target(scope, words[0] if target_words else None)
    name = words[target_words]
    value = " ".join(words[target_words + 1 :]) if set_ else None
    return target, name, value


def _shape_error(*, set_: bool) -> InvalidRequest:
    shape, action = (SET_USAGE, "set") if set_ else (UNSET_USAGE, "unset")
    return InvalidRequest(f"Write it as {shape}; see imagine-bot policy {action} -h.")


async def _show(store: Store, settings: Settings) -> list[str]:
    defaults = Defaults.from_settings(settings)
    lines = ["Defaults from the settings (IMAGINE_<SCOPE>_LIMIT and IMAGINE_<SCOPE>_BUDGET):"]
    lines += _table(
        [
            (
                scope,
                f"limit {rules_text(rules.limits, dollars=False)}",
                f"budget {rules_text(rules.budgets, dollars=True)}",
            )
            for scope, rules in _default_rules(defaults)
        ],
        indent=2,
    )
    entries = await store.policy_entries()
    if not entries:
        lines.append("Nothing is set at run time; the defaults apply.")
        return lines
    # The audit records every change, so its newest one per entry says who set it and when.
    setters: dict[tuple[str, str, str], tuple[str, float]] = {}
    for change in await store.policy_changes(EVERY_ROW):
        setters.setdefault((change.scope, change.target, change.name), (change.actor, change.at))
    lines.append("Set at run time (these win over the defaults):")
    rows = [("scope", "target", "rule", "value", "set by", "when")]
    for entry in entries:
        actor, at = setters.get((entry.scope, entry.target, entry.name), ("?", 0.0))
        rows.append(
            (
                entry.scope,
                entry.target or "-",
                entry.name,
                entry.value,
                actor,
                _when(at) if at else "?",
            )
        )
    return lines + _table(rows, indent=2)


def _default_rules(defaults: Defaults) -> list[tuple[str, Rules]]:
    return [
        ("user", defaults.user),
        ("channel", defaults.channel),
        ("team", defaults.team),
        ("total", defaults.total),
    ]


async def _log(store: Store, limit: int) -> list[str]:
    changes = await store.policy_changes(max(1, limit))
    if not changes:
        return ["No rule has been changed yet."]
    rows = [("when", "by", "scope", "target", "rule", "was", "now")]
    rows += [
        (
            _when(c.at),
            c.actor or "?",
            c.scope,
            c.target or "-",
            c.name,
            c.old_value or "default",
            c.new_value or "default",
        )
        for c in changes
    ]
    return _table(rows)


def _label(scope: str, target: str) -> str:
    return "the total" if scope == "total" else f"{scope} {target}"


def _actor() -> str:
    """Who changed a rule from this shell: ``cli:<OS user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container's unnamed uid)
        return f"cli:uid{os.getuid()}"


# --- shared ------------------------------------------------------------------------------------
async def _open(settings: Settings) -> Store:
    from bot.store import Store

    return await Store.open_settings(settings)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _name(name: str) -> str:
    return f"({name})" if name else ""


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _table(
    rows: Sequence[Sequence[str]], *, indent: int = 0, right: Sequence[int] = ()
) -> list[str]:
    """Rows in aligned columns (``right``: the columns aligned to the right)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append(" " * indent + "  ".join(cells).rstrip())
    return lines


def _print(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


def _write(emit: Callable[[], None]) -> int:
    """Run ``emit``; a reader that stopped early (``| head``) is no error."""
    try:
        emit()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again flushing at exit: point stdout at nothing instead.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
