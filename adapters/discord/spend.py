"""/imagine-usage, /imagine-history and /imagine-admin on Discord: options in, private answers out.

The answers and their wording are the core's (``bot.spend_commands``); this module finds the
members, channels and roles they name in the interaction's server and shows each answer only to
the member who asked.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import discord
from discord import app_commands

from adapters.discord import api_calls
from adapters.discord.handlers import DiscordImagine
from adapters.discord.render import MARKUP, warning
from adapters.discord.targets import requester_of
from bot.models import JobRecord, Requester
from bot.policy import NAMES
from bot.spend_commands import AdminArgs, Answer, Asker, SpendCommands

logger = logging.getLogger("adapters.discord")

# Discord docs (Message resource, Create Message): content is at most 2000 characters.
MESSAGE_LIMIT = 2000
# Discord docs (Gateway, Request Guild Members): at most 100 members per query.
NAME_QUERY_LIMIT = 100
NAME_QUERY_TIMEOUT = 10.0

_ID = r"(\d{15,21})"
USER = re.compile(rf"^(?:<@!?{_ID}>|{_ID})$")
CHANNEL = re.compile(rf"^(?:<#{_ID}>|{_ID})$")
ROLE = re.compile(rf"^(?:<@&{_ID}>|{_ID})$")


def _id_in(pattern: re.Pattern[str], text: str) -> int | None:
    found = pattern.match(text.strip())
    if found is None:
        return None
    return int(next(group for group in found.groups() if group))


class DiscordDirectory:
    """``bot.spend_commands.Directory`` for one server: mentions, ids and names to its members,
    channels and roles."""

    def __init__(
        self,
        guild: discord.Guild | None,
        channel_id: int | None,
        known: tuple[discord.Member, ...] = (),
    ) -> None:
        self.guild = guild
        self.channel_id = channel_id
        # Members the interaction already resolved (a user option): no lookup needed.
        self.known = {member.id: member for member in known}

    async def find_user(self, text: str) -> Requester | None:
        """The member ``text`` names (``<@id>``, an id, a user name or nickname), with roles."""
        guild = self.guild
        if guild is None:
            return None
        member_id = _id_in(USER, text)
        if member_id is not None:
            member = self.known.get(member_id) or guild.get_member(member_id)
            if member is None:
                try:
                    member = await guild.fetch_member(member_id)
                except discord.NotFound as exc:  # 10007 Unknown Member (or 10013 Unknown User)
                    api_calls.failed_call(exc, "get_member")
                    return None
        else:
            member = await self._member_named(guild, text.strip().removeprefix("@"))
            if member is None:
                return None
        return requester_of(member, self.channel_id)

    async def _member_named(self, guild: discord.Guild, name: str) -> discord.Member | None:
        if not name:
            return None
        wanted = name.casefold()
        cached = [m for m in guild.members if wanted in _names(m)]
        if cached:
            return cached[0]
        # Without the privileged members intent the cache holds few members; Discord searches
        # user names and nicknames by prefix, the exact match is picked here.
        try:
            found = await guild.query_members(query=name, limit=NAME_QUERY_LIMIT, cache=False)
        except TimeoutError:
            logger.warning("Discord did not answer a member search in guild %s", guild.id)
            return None
        exact = [m for m in found if wanted in _names(m)]
        return exact[0] if len(exact) == 1 else None

    async def find_channel(self, text: str) -> str | None:
        """The id of the channel or thread ``text`` names (``<#id>``, an id or a name)."""
        guild = self.guild
        if guild is None:
            return None
        channel_id = _id_in(CHANNEL, text)
        if channel_id is not None:
            found = guild.get_channel_or_thread(channel_id)
            return str(found.id) if found is not None else None
        name = text.strip().removeprefix("#").casefold()
        for channel in (*guild.channels, *guild.threads):
            if channel.name.casefold() == name and not isinstance(channel, discord.CategoryChannel):
                return str(channel.id)
        return None

    async def find_tier(self, text: str) -> str | None:
        """The id of the role ``text`` names (``<@&id>``, an id or a name); never @everyone."""
        guild = self.guild
        if guild is None:
            return None
        role_id = _id_in(ROLE, text)
        if role_id is not None:
            role = guild.get_role(role_id)
        else:
            name = text.strip().removeprefix("@").casefold()
            role = next((r for r in guild.roles if r.name.casefold() == name), None)
        if role is None or role.is_default():
            return None
        return str(role.id)

    def tier_name(self, tier_id: str) -> str:
        """The role, mentioned (clients show its name; nobody is pinged in a private answer)."""
        return f"<@&{tier_id}>"

    def message_link(self, job: JobRecord, message_key: str) -> str | None:
        """discord.com/channels/<server or @me>/<channel>/<message>."""
        channel = job.requester.channel_id
        if not channel or not message_key.isdigit():
            return None
        server = job.requester.team_id or "@me"
        return f"https://discord.com/channels/{server}/{channel}/{message_key}"


def _names(member: discord.Member) -> set[str]:
    names = {member.name, member.display_name, member.global_name or "", member.nick or ""}
    return {n.casefold() for n in names if n}


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at line ends where possible."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:  # a single line longer than a message: cut it
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        if current and len(current) + 1 + len(line) > limit:
            pieces.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current or not pieces:
        pieces.append(current)
    return pieces


def _service_of(client: discord.Client) -> DiscordImagine:
    found = getattr(client, "imagine", None)
    if not isinstance(found, DiscordImagine):
        raise RuntimeError("this client was not built by adapters.discord.bot")
    return found


def asker_of(interaction: discord.Interaction) -> Asker:
    """Who asked; an admin when they can manage this server (checked on every use)."""
    admin = interaction.guild_id is not None and interaction.permissions.manage_guild
    return Asker(requester_of(interaction.user, interaction.channel_id), admin=admin)


def spend_commands(
    interaction: discord.Interaction, known: tuple[discord.Member, ...] = ()
) -> SpendCommands:
    """The core's three commands, looking things up in the interaction's server."""
    directory = DiscordDirectory(interaction.guild, interaction.channel_id, known)
    return SpendCommands(_service_of(interaction.client).service, MARKUP, directory)


async def answer_privately(interaction: discord.Interaction, answer: Answer) -> None:
    """The answer, ephemeral, in as many messages as its length needs (after a defer)."""
    text = warning(answer.text) if answer.refused else answer.text
    for piece in split_message(text):
        await interaction.followup.send(
            piece, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


async def _start(interaction: discord.Interaction) -> None:
    # Lookups (members over REST, the store) can outlast the 3 s Discord allows for an answer.
    await interaction.response.defer(ephemeral=True, thinking=True)


@app_commands.command(name="imagine-usage", description="What you have used and what is left")
@app_commands.describe(
    user="Someone else's usage (needs Manage Server)",
    report="The whole server's spend this month (needs Manage Server)",
)
async def usage_command(
    interaction: discord.Interaction,
    user: discord.Member | None = None,
    report: bool | None = None,
) -> None:
    """/imagine-usage: your images and spend, and what each limit leaves you."""
    await _start(interaction)
    known = (user,) if user is not None else ()
    commands = spend_commands(interaction, known)
    shown = await commands.usage(
        asker_of(interaction), user=user.mention if user else None, report=bool(report)
    )
    await answer_privately(interaction, shown)


@app_commands.command(name="imagine-history", description="Your last image requests")
@app_commands.describe(job="A job id, for that job's whole record")
async def history_command(
    interaction: discord.Interaction, job: app_commands.Range[str, 1, 64] | None = None
) -> None:
    """/imagine-history: your last jobs with links, or one job's record."""
    await _start(interaction)
    shown = await spend_commands(interaction).history(asker_of(interaction), job)
    await answer_privately(interaction, shown)


@app_commands.command(
    name="imagine-admin", description="See or change who may make images, and for how much"
)
@app_commands.describe(
    action="show the rules, the log of changes, or set / unset one",
    scope="Who the rule is for",
    target="The user, role or channel (a mention, id or name); empty: this channel or server",
    rule="Which rule or channel default",
    value="Like 20/day, 5/month (dollars for budget), yes, off, 1024x1024",
)
@app_commands.choices(rule=[app_commands.Choice(name=name, value=name) for name in NAMES])
@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
async def admin_command(
    interaction: discord.Interaction,
    action: Literal["show", "log", "set", "unset"],
    scope: Literal["user", "tier", "channel", "team", "total"] | None = None,
    target: app_commands.Range[str, 1, 100] | None = None,
    rule: app_commands.Choice[str] | None = None,
    value: app_commands.Range[str, 1, 100] | None = None,
) -> None:
    """/imagine-admin: the rules in force, their log, or one change (Manage Server only)."""
    await _start(interaction)
    args = AdminArgs(action, scope, target, rule.value if rule else None, value)
    shown = await spend_commands(interaction).admin(asker_of(interaction), args)
    await answer_privately(interaction, shown)


SPEND_COMMANDS: tuple[app_commands.Command[Any, ..., Any], ...] = (
    usage_command,
    history_command,
    admin_command,
)
