"""``imagine-bot prune``: run the retention sweep now and say what it freed."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.config import Settings
from bot.retention import SweepReport, megabytes, sweep


async def prune(settings: Settings, *, dry_run: bool) -> int:
    """Remove (or, dry, list) the job image folders retention no longer keeps; exit 0."""
    from bot.store import Store

    store = await Store.open_settings(settings)
    try:
        report = await sweep(store, settings, dry_run=dry_run)
    finally:
        await store.close()
    for line in report_lines(report, settings):
        print(line)
    return 0


def report_lines(report: SweepReport, settings: Settings) -> list[str]:
    """What a sweep freed (or would free) and what it kept, in plain lines."""
    verb = "Would remove" if report.dry_run else "Removed"
    folders = f"{report.folders} image folder{'s' if report.folders != 1 else ''}"
    orphans = f" ({report.orphans} with no job)" if report.orphans else ""
    freed = "would free" if report.dry_run else "freed"
    lines = [f"{verb} {folders}{orphans}, {freed} {megabytes(report.bytes_freed)}."]
    oldest = (
        "none"
        if report.oldest_kept is None
        else datetime.fromtimestamp(report.oldest_kept, UTC).strftime("%Y-%m-%d %H:%M UTC")
    )
    lines.append(f"Kept {megabytes(report.bytes_kept)}; oldest kept job: {oldest}.")
    if report.failed:
        lines.append(
            f"{report.failed} folder(s) could not be removed whole (see the log); "
            "the next prune removes the rest."
        )
    if report.over_by:
        lines.append(
            f"Still {megabytes(report.over_by)} over IMAGINE_MAX_DATA_GB="
            f"{settings.imagine_max_data_gb:g}: the rest belongs to jobs still running or "
            "written in the last hour."
        )
    if settings.imagine_keep_images_days == 0 and settings.imagine_max_data_gb is None:
        lines.append(
            "Retention is off (IMAGINE_KEEP_IMAGES_DAYS=0 and no IMAGINE_MAX_DATA_GB): "
            "images are kept forever."
        )
    return lines
