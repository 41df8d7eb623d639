"""``rrjobs check -c FILE``: is this config ready to serve?

Validates the file (every section rrjobs reads, ``${VAR}`` expansion, the
pipelines named in ``consume``, what ``jobs.pool.processes`` above 1 refuses),
every pipeline's driver: installed, its
global section and the pipeline's options (see :mod:`rrjobs.runtime.preflight`),
and imports the application. It connects to nothing. Exit 0 with one ``OK``
line; exit 2 with every problem found, one per line (``key.path: message``).
"""

from __future__ import annotations

import sys

import click
import yaml

from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.processes import check_shareable
from rrjobs.server import EXIT_CONFIG, add_app_paths, load, load_application

Problem = tuple[str, str]


def _raw_app(config_path: str) -> str | None:
    """``jobs.app`` read without validation (for a file that failed it)."""
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    jobs = raw.get("jobs") if isinstance(raw, dict) else None
    app = jobs.get("app") if isinstance(jobs, dict) else None
    return app if isinstance(app, str) and "$" not in app else None


def find_problems(config_path: str, app_path: str | None) -> tuple[Config | None, list[Problem]]:
    """The loaded config (``None`` when it is invalid) and every problem found."""
    try:
        config, _ = load(config_path, app_path)
        check_shareable(config, config.jobs.pool.processes)
        return config, []
    except ConfigError as exc:
        problems = list(exc.problems)
    try:
        Config.load(config_path)
        return None, problems  # the file is valid: load() checked drivers and app
    except ConfigError:
        pass
    path = app_path or _raw_app(config_path)
    if path:
        add_app_paths(config_path)
        try:
            load_application(path, "--app" if app_path else "jobs.app")
        except ConfigError as exc:
            problems.extend(exc.problems)
    return None, problems


@click.command("check")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The .rr.yaml config file.")
@click.option("--app", "app_path", metavar="MODULE:ATTR",
              help="The rrjobs.App [default: jobs.app of the config].")
def check_command(config_path: str, app_path: str | None) -> None:
    """Validate a config, its drivers' options and its app (connects to nothing).

    Exit 0 with one OK line, or 2 with every problem, one per line."""
    config, problems = find_problems(config_path, app_path)
    if problems or config is None:
        for path, message in problems:
            click.echo(f"{path}: {message}" if path else message, err=True)
        sys.exit(EXIT_CONFIG)
    names = list(config.jobs.pipelines)
    app = app_path or config.jobs.app or "none"
    noun = "pipeline" if len(names) == 1 else "pipelines"
    click.echo(f"{config_path}: OK ({len(names)} {noun}: {', '.join(names) or 'none'}; "
               f"app: {app})")
