"""Running one image job in Slack and turning every outcome into words the user sees."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook.async_client import AsyncWebhookClient

from adapters.slack_placeholder import (
    CANT_POST_HERE,
    FAILED_STATE,
    INTERRUPTED_STATE,
    UNAVAILABLE_STATE,
    Placeholder,
)
from adapters.slack_rate import PacedWebClient
from bot.errors import ProviderUnavailable, UserFacingError
from bot.models import ImageRequest

if TYPE_CHECKING:
    from bot.service import ImageService

logger = logging.getLogger("adapters.slack")


def generic_error(job_id: str | None) -> str:
    """The message for a failure with no user-facing explanation (details are in the log)."""
    ref = f" (job {job_id})" if job_id else ""
    return (
        f"Sorry, something went wrong on the bot's side{ref}; it has been logged. "
        "Please try again, and tell the bot's operator if it keeps happening."
    )


class SlackJobs:
    """Runs requests through the service and shows them in a channel or thread."""

    def __init__(self, service: ImageService, client: PacedWebClient, *, interval: float) -> None:
        self.service = service
        self.client = client
        self.interval = interval

    async def tell(
        self,
        user: str,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        response_url: str | None = None,
    ) -> None:
        """Show ``text`` to one user only (ephemeral), falling back to the response URL."""
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts
            )
            return
        except SlackApiError as exc:
            if not response_url:
                logger.warning(
                    "couldn't tell %s in %s: %s", user, channel, exc.response.get("error")
                )
                return
        # Outside channels the bot is in, only the command's response URL reaches the user.
        response = await AsyncWebhookClient(response_url).send(text=text, response_type="ephemeral")
        if response.status_code != 200:
            logger.warning("couldn't tell %s via response_url: HTTP %s", user, response.status_code)

    async def run(
        self,
        request: ImageRequest,
        *,
        channel: str,
        thread_ts: str | None,
        response_url: str | None = None,
    ) -> None:
        """Run one request end to end; every failure ends with words the user can read."""
        user = request.requester.user_id
        display = Placeholder(self.client, self.service, request, channel, thread_ts, self.interval)

        async def tell_user(text: str) -> None:
            await self.tell(user, channel, text, thread_ts=thread_ts, response_url=response_url)

        try:
            result = await self.service.run(request, display.on_event)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if display.cant_post and task is not None and task.uncancel() == 0:
                # Our own cancel: nothing can be shown here, so the job was stopped (refunded).
                await tell_user(_cant_post_text(display.cant_post))
                return
            # Shutting down mid-job: the service has refunded it; say so where people look.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(display.close(INTERRUPTED_STATE)), 5.0)
            raise
        except UserFacingError as exc:
            unavailable = isinstance(exc, ProviderUnavailable)
            await display.close(UNAVAILABLE_STATE if unavailable else FAILED_STATE)
            await tell_user(exc.user_message)
            return
        except Exception:
            logger.exception("Slack job %s failed", display.job_id or "(not admitted)")
            await display.close(FAILED_STATE)
            await tell_user(generic_error(display.job_id))
            return
        try:
            await display.deliver(result)
        except Exception as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else None
            if error in CANT_POST_HERE:
                # Access was lost while the job ran: it was made (and counted), just not shown.
                logger.warning("Slack job %s: can't post in %s: %s", result.job_id, channel, error)
                await tell_user(
                    f"Your image was made (job {result.job_id}), but I can't post in this "
                    f"channel any more ({error}). Invite me with `/invite @imagine` and try again."
                )
                return
            if isinstance(exc, SlackClientError | aiohttp.ClientError | TimeoutError):
                # Slack refused or dropped the upload: the images are kept, so say how to go on.
                # Slack's error code, or for a transfer that broke off, a few plain words.
                reason = str(error or "the connection failed")
                if display.uploaded:
                    # The files are in the thread and linked; only the finished message is missing.
                    logger.warning(
                        "Slack job %s: finishing its message failed: %s", result.job_id, exc
                    )
                    await tell_user(
                        f"Your image is in the thread (job {result.job_id}), but Slack wouldn't "
                        f"let me finish its message ({reason}). Reply in the thread to edit it."
                    )
                    return
                logger.warning("Slack job %s: uploading the result failed: %s", result.job_id, exc)
                await display.show_unposted(result, reason)
                await tell_user(
                    f"Your image was made and saved (job {result.job_id}), but Slack wouldn't "
                    f"take the upload ({reason}). Use Regenerate or Edit on the message, or "
                    "try again in a moment."
                )
                return
            logger.exception("Slack job %s: posting the result failed", result.job_id)
            await display.close(f"made, but I couldn't post it here (job {result.job_id})")
            await tell_user(
                f"Your image was made, but I couldn't post it here (job {result.job_id}); "
                "it has been logged."
            )


def _cant_post_text(error: str) -> str:
    return (
        f"I can't post in this channel ({error}), so I didn't make the image and nothing was "
        "charged. Invite me with `/invite @imagine`, or use me in a channel I'm in."
    )
