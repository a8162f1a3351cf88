"""The ``imagine-bot`` command: run the chat adapters, or make and edit images from a shell."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import cli_spend, launch
from bot.config import Settings, load_settings
from bot.errors import ConfigError, ProviderMisconfigured, UserFacingError
from bot.log_format import JsonFormatter
from bot.redact import protect_handlers, redact

logger = logging.getLogger("bot.cli")

EXIT_FAILED = 1
EXIT_USAGE = 2


def _word(text: str) -> str:
    """A choice as typed, in any case."""
    return text.strip().lower()


def _format(text: str) -> str:
    """An output format in any case; ``jpg`` is the name most files use for ``jpeg``."""
    word = _word(text)
    return "jpeg" if word == "jpg" else word


# Each image option's argparse dest is its ImageOptions field name (bot.cli_imagine.OPTION_ARGS).
def _image_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", type=_word, help="auto, 1024x1024, 1536x1024, 1024x1536 or a custom WxH"
    )
    parser.add_argument("--quality", type=_word, choices=["auto", "low", "medium", "high"])
    parser.add_argument("-n", type=int, dest="n", metavar="N", help="how many images (default 1)")
    parser.add_argument("--background", type=_word, choices=["auto", "opaque", "transparent"])
    parser.add_argument(
        "--format",
        dest="output_format",
        type=_format,
        choices=["png", "jpeg", "webp"],
        help="png, jpeg (or jpg) or webp; any case",
    )
    parser.add_argument(
        "--compression",
        dest="output_compression",
        type=int,
        metavar="0-100",
        help="jpeg/webp compression level",
    )
    parser.add_argument(
        "--partials",
        dest="partial_images",
        type=int,
        choices=[0, 1, 2, 3],
        help="partial previews to stream (default IMAGINE_PARTIAL_IMAGES)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="folder to write images into, created if missing (default: here)",
    )
    parser.add_argument(
        "--previews",
        type=Path,
        metavar="DIR",
        help="folder to keep every partial preview in, created if missing",
    )
    parser.add_argument("--user", help="whose limits to count against (default: your OS user)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(
        prog="imagine-bot",
        description="Generate and edit images with OpenAI's gpt-image-2 from Discord, Slack "
        "or this shell.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start the Discord and/or Slack bot")
    run.add_argument(
        "platform",
        nargs="?",
        type=_word,
        choices=["discord", "slack"],
        help="start only this one (default: every platform whose tokens are set)",
    )

    imagine = commands.add_parser("imagine", help="generate images from a prompt")
    imagine.add_argument("prompt")
    _image_options(imagine)

    edit = commands.add_parser("edit", help="edit one or more images with a prompt")
    edit.add_argument("prompt")
    edit.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    edit.add_argument("--mask", type=Path, help="PNG whose transparent pixels mark what to change")
    _image_options(edit)

    cli_spend.add_usage_command(commands)
    cli_spend.add_policy_command(commands)

    prune = commands.add_parser(
        "prune",
        help="delete job images past IMAGINE_KEEP_IMAGES_DAYS or IMAGINE_MAX_DATA_GB now "
        "(the bot also does it hourly); job rows and usage stay",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="only print what would be deleted and freed"
    )

    health = commands.add_parser(
        "health",
        help="exit 0 if the running bot's /healthz (IMAGINE_METRICS_PORT) answers, else 1",
    )
    health.add_argument(
        "--ready",
        action="store_true",
        help="ask /readyz instead: the database answers and every platform is connected",
    )

    commands.add_parser("discord-invite", help="print the link that adds the bot to a server")
    commands.add_parser("slack-manifest", help="print the Slack app manifest (YAML)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``imagine-bot`` console script."""
    args = build_parser().parse_args(argv)
    secrets: tuple[str, ...] = ()
    try:
        settings = load_settings()
        secrets = settings.secret_values()
        _setup_logging(
            settings,
            quiet=args.command in {"imagine", "edit", "usage", "policy", "prune", "health"},
        )
        return asyncio.run(_dispatch(args, settings))
    except ConfigError as exc:
        print(f"imagine-bot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ProviderMisconfigured as exc:
        # In a shell the user is the operator: say what the API refused and what to check.
        detail = redact(exc.detail, *secrets)
        print(
            f"imagine-bot: the image service refused the settings ({detail}). Nothing was charged.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except UserFacingError as exc:
        print(f"imagine-bot: {exc.user_message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        # Ctrl-C before the command could stop itself (imagine/edit catch it once they run).
        costless = "; nothing was charged" if args.command in {"imagine", "edit"} else ""
        print(f"imagine-bot: stopped by SIGINT{costless}", file=sys.stderr)
        return 130
    except Exception as exc:
        logger.debug("unexpected failure", exc_info=True)
        detail = redact(f"{type(exc).__name__}: {exc}", *secrets)
        print(f"imagine-bot: unexpected error: {detail}", file=sys.stderr)
        return EXIT_FAILED


def _setup_logging(settings: Settings, *, quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else settings.imagine_log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.imagine_log_format == "json":
        formatter = JsonFormatter(*settings.secret_values())
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    # httpx logs every request URL at INFO; keep that for debugging only.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Whatever a library puts in a log line or a traceback, no configured key or token shows.
    protect_handlers(*settings.secret_values())


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command: str = args.command
    if command == "discord-invite":
        print(launch.discord_invite(settings))
        return 0
    if command == "slack-manifest":
        print(launch.slack_manifest(), end="")
        return 0
    if command == "usage":
        return await cli_spend.usage(settings, args)
    if command == "policy":
        return await cli_spend.policy(settings, args)
    if command == "run":
        return await launch.run(settings, args.platform)
    if command == "health":
        from bot.cli_health import health

        return await health(settings, ready=args.ready)
    if command == "prune":
        from bot.cli_prune import prune

        return await prune(settings, dry_run=args.dry_run)
    from bot.cli_imagine import make_images

    return await make_images(settings, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
