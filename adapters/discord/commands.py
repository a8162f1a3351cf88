"""Discord's side of the commands: /imagine, the "Edit image" menu, result buttons and modals."""

from __future__ import annotations

import re
from typing import Any, Literal

import discord
from discord import app_commands

from adapters.discord.files import remote, remote_all
from adapters.discord.handlers import DiscordImagine, ref
from adapters.discord.render import (
    BUTTONS,
    ENHANCE_BUTTON,
    RESULT_BUTTONS,
    SUGGESTION_BUTTONS,
    job_button,
    suggestion_button,
    warning,
)
from adapters.discord.spend import SPEND_COMMANDS
from bot import texts
from bot.commands import Command, Edit, Generate, Overrides, Regenerate, Retry, Vary, split_mask

JOB = r"(?P<job>[0-9a-z]{1,40})"
EDIT_MODAL = re.compile(rf"^imagine:edit:{JOB}$")
MESSAGE_MODAL = re.compile(r"^imagine:msgedit:(?P<channel>\d+):(?P<message>\d+)$")
PROMPT_FIELD = "prompt"
SIZE_SUGGESTIONS = ("auto", "1024x1024", "1536x1024", "1024x1536", "2048x2048", "3840x2160")
SIZE_TEXT = re.compile(r"^\s*(\d{2,5})\s*[xX×]\s*(\d{2,5})\s*$")


def imagine_of(client: discord.Client) -> DiscordImagine:
    """The adapter object a client carries (buttons and modals only get the client)."""
    found = getattr(client, "imagine", None)
    if not isinstance(found, DiscordImagine):
        raise RuntimeError("this client was not built by adapters.discord.bot")
    return found


# --- buttons: the job id lives in the custom_id (see render.BUTTONS), so they work after a restart
class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"imagine:(?P<action>{'|'.join(BUTTONS)}):{JOB}",
):
    """A button under a result, or on a job still being made; ``action`` is a key of BUTTONS."""

    def __init__(self, action: str, job_id: str) -> None:
        super().__init__(job_button(action, job_id))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> JobButton:
        return cls(match["action"], match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        imagine, job_id = imagine_of(interaction.client), self.job_id
        if self.action == "delete":
            await imagine.delete(interaction, job_id)
        elif self.action == "cancel":
            await imagine.cancel(interaction, job_id)
        elif self.action == "rephrase":
            await imagine.rephrase(interaction, job_id)
        elif self.action == "enhance" and not await imagine.prompt_help_or_refuse(interaction):
            return
        elif self.action in ("regen", "vary", "enhance"):
            # A variation needs the result's image: a pruned one is refused before "thinking".
            vary = self.action == "vary"
            target = await imagine.begin(interaction, job_id=job_id, images=vary)
            if target is not None:
                who = target.requester
                command: Command = Regenerate(who, job_id)
                if vary:
                    command = Vary(who, job_id)
                elif self.action == "enhance":
                    command = Retry(who, job_id, enhance=True)
                await imagine.run(target, command)
        # Asking for a prompt the bot can't use would waste the user's typing: check first.
        elif await imagine.job_or_refuse(interaction, job_id, images=True) is not None:
            await interaction.response.send_modal(PromptModal(f"imagine:edit:{job_id}"))


class SuggestionButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"imagine:(?P<action>{'|'.join(SUGGESTION_BUTTONS)}):{JOB}:(?P<suggestion>[0-9a-z]{{1,40}})",
):
    """ "Send it" or "Never mind" under a reworded prompt offered after a safety block."""

    def __init__(self, action: str, job_id: str, suggestion_id: str) -> None:
        super().__init__(suggestion_button(action, job_id, suggestion_id))
        self.action = action
        self.job_id = job_id
        self.suggestion_id = suggestion_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> SuggestionButton:
        return cls(match["action"], match["job"], match["suggestion"])

    async def callback(self, interaction: discord.Interaction) -> None:
        imagine = imagine_of(interaction.client)
        if self.action == "send":
            await imagine.send_suggestion(interaction, self.job_id, self.suggestion_id)
        else:
            await imagine.drop_suggestion(interaction)


DYNAMIC_ITEMS = (JobButton, SuggestionButton)


def result_view(job_id: str, *, enhance: bool = False) -> discord.ui.View:
    """The buttons under a result; ``enhance`` (prompt help is on) adds "Enhance & retry"."""
    view = discord.ui.View(timeout=None)
    actions = list(RESULT_BUTTONS)
    if enhance:
        # Before Delete, which stays last.
        actions[-1:-1] = ENHANCE_BUTTON
    for action in actions:
        view.add_item(JobButton(action, job_id))
    # Stopped views are sent but not kept in memory: the dynamic item above answers the clicks.
    view.stop()
    return view


class PromptModal(discord.ui.Modal):
    """Asks what to change. Submissions are handled by custom_id (see handle_modal_submit)."""

    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="What should change?",
        custom_id=PROMPT_FIELD,
        style=discord.TextStyle.paragraph,
        placeholder="make it night, add falling snow",
        max_length=4000,
    )

    def __init__(self, custom_id: str) -> None:
        super().__init__(title="Edit image", custom_id=custom_id, timeout=15 * 60)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        # The client's on_interaction handles it, so a modal opened before a restart still works.
        return


def modal_prompt(data: dict[str, Any]) -> str:
    """The prompt typed into a submitted modal."""
    for row in data.get("components", []):
        inner = row.get("components") or [row.get("component", {})]
        for component in inner:
            if component.get("custom_id") == PROMPT_FIELD:
                return str(component.get("value", "")).strip()
    return ""


async def handle_modal_submit(interaction: discord.Interaction) -> None:
    """Route a submitted imagine modal by its custom_id."""
    data: dict[str, Any] = dict(interaction.data or {})
    custom_id = str(data.get("custom_id", ""))
    imagine, prompt = imagine_of(interaction.client), modal_prompt(data)
    if match := EDIT_MODAL.match(custom_id):
        target = await imagine.begin(interaction)
        if target is not None:
            await imagine.run(target, Edit(target.requester, prompt, job_id=match["job"]))
    elif match := MESSAGE_MODAL.match(custom_id):
        channel_id, message_id = int(match["channel"]), int(match["message"])
        await imagine.edit_message_images(interaction, channel_id, message_id, prompt)


# --- application commands -------------------------------------------------------------------------
async def size_autocomplete(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Suggest the standard sizes; a typed WxH is offered as is (the core checks it)."""
    typed = SIZE_TEXT.match(current)
    choices = [f"{typed[1]}x{typed[2]}"] if typed else []
    choices += [s for s in SIZE_SUGGESTIONS if current.lower() in s and s not in choices]
    return [app_commands.Choice(name=s, value=s) for s in choices[:25]]


@app_commands.command(name="imagine", description="Make an image, or edit attached images")
@app_commands.describe(
    prompt="What to make, or what to change in the attached images",
    size="auto, 1024x1024, 1536x1024, 1024x1536 or any WIDTHxHEIGHT",
    quality="Higher quality takes longer and costs more",
    count="How many images (1-4)",
    background="transparent needs png or webp",
    output_format="File format of the result",
    image="An image to edit",
    image2="A second image to use",
    image3="A third image to use",
    mask="PNG whose transparent areas mark what to change in the first image",
    enhance="✨ Let prompt help rewrite your prompt first",
)
@app_commands.rename(output_format="format")
@app_commands.autocomplete(size=size_autocomplete)
async def imagine_command(
    interaction: discord.Interaction,
    prompt: app_commands.Range[str, 1, 4000],
    size: str | None = None,
    quality: Literal["auto", "low", "medium", "high"] | None = None,
    count: app_commands.Range[int, 1, 4] | None = None,
    background: Literal["auto", "opaque", "transparent"] | None = None,
    output_format: Literal["png", "jpeg", "webp"] | None = None,
    image: discord.Attachment | None = None,
    image2: discord.Attachment | None = None,
    image3: discord.Attachment | None = None,
    mask: discord.Attachment | None = None,
    enhance: bool = False,
) -> None:
    """The /imagine slash command: generate, or edit the attached images."""
    imagine = imagine_of(interaction.client)
    if enhance and not await imagine.prompt_help_or_refuse(interaction):
        return
    target = await imagine.begin(interaction)
    if target is None:
        return
    overrides = Overrides(
        size=size.strip().lower().replace("×", "x") if size else None,
        quality=quality,
        n=count,
        background=background,
        output_format=output_format,
    )
    files = remote_all(a for a in (image, image2, image3) if a is not None)
    command: Command = Generate(target.requester, prompt, overrides, enhance=enhance)
    if files or mask:
        the_mask = remote(mask) if mask else None
        command = Edit(
            target.requester,
            prompt,
            files=files,
            mask=the_mask,
            overrides=overrides,
            enhance=enhance,
        )
    await imagine.run(target, command)


@app_commands.context_menu(name="Edit image")
async def edit_image_menu(interaction: discord.Interaction, message: discord.Message) -> None:
    """Message menu: edit the images of any message (asks for the prompt in a modal)."""
    imagine = imagine_of(interaction.client)
    linked = await imagine.service.job_for(ref(message.id))
    if linked is None and not split_mask(remote_all(message.attachments))[0]:
        await interaction.response.send_message(warning(texts.NO_IMAGE), ephemeral=True)
        return
    await interaction.response.send_modal(
        PromptModal(f"imagine:msgedit:{message.channel.id}:{message.id}")
    )
    imagine.remember_menu_target(message)


COMMANDS: tuple[app_commands.Command[Any, ..., Any] | app_commands.ContextMenu, ...] = (
    imagine_command,
    edit_image_menu,
    *SPEND_COMMANDS,
)
