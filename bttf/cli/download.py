"""`bttf download NAME... | all [--force]`: released weights from the catalogue into torch hub's
checkpoints folder, hash-checked (`bttf.models.download`)."""

from __future__ import annotations

import click

from bttf.cli.app import cli, console, lazy_progress


def byte_progress(label: str):
    """A progress bar (size, speed, ETA) for `progress(done_bytes, total_bytes)`; nothing when
    stderr is no terminal (a log or a pipe: the result line is enough)."""
    from rich.progress import DownloadColumn, TransferSpeedColumn

    return lazy_progress(label, [DownloadColumn(), TransferSpeedColumn()], terminal_only=True)


@cli.command("download")
@click.argument("names", nargs=-1, metavar="NAME... | all")
@click.option("--force", is_flag=True, help="Fetch again a file that is already there.")
def download_cmd(names: tuple[str, ...], force: bool) -> None:
    """Fetch released weights into torch hub's checkpoints folder ($TORCH_HOME/hub/checkpoints),
    under their released names, each checked against its SHA-256 before it takes that name.

    NAME is a model of the catalogue (eccv16, siggraph17, deoldify-artistic, ddcolor-tiny,
    resnet18-imagenet ...; `all` for every one). Files already there are kept unless --force.
    BTTF_WEIGHTS_BASE_URL=URL fetches BASE/FILE instead (a mirror, file:// for an offline copy).
    """
    from bttf.models.catalogue import get_release, human_size, list_releases
    from bttf.models.download import download

    if not names:
        raise click.UsageError(f"name the weights to fetch: {', '.join(list_releases())} or all")
    wanted = list_releases() if "all" in names else list(dict.fromkeys(names))
    releases = [get_release(n) for n in wanted]  # every name checked before fetching any
    for release in releases:
        with byte_progress(release.name) as progress:
            result = download(release, force=force, progress=progress)
        if result.fetched:
            status = f"downloaded ({human_size(result.size)}, SHA-256 checked)"
        else:
            status = "already there (--force fetches it again)"
        console.print(
            f"{release.name}: {result.path} {status}; licence {release.licence}",
            highlight=False,
            soft_wrap=True,
        )
