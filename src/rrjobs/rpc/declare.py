"""Files named by a pipeline declared through the RPC.

A driver lists the options that name a file it opens or creates in its
constructor's ``file_options`` (the sqlite driver: ``file``). Through the RPC
such an option must name a path under ``rpc.declare_dir``: a relative path is
taken relative to that directory, symlinks and ``..`` are resolved before the
check, and the driver receives the resolved absolute path. Without
``rpc.declare_dir`` a Declare naming a file is refused, and so is one that
leaves a file option out (the driver's default path is outside the directory's
control). Pipelines of the config file are the operator's and are not checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from rrjobs.rpc.errors import ForbiddenError


def confine_files(options: Mapping[str, str], file_options: Sequence[str],
                  declare_dir: str | None) -> dict[str, str]:
    """``options`` with each of ``file_options`` resolved under ``declare_dir``.

    Raises :class:`ForbiddenError` naming ``declare.<name>.<key>`` for a path
    outside the directory, a missing one, or any when no directory is set.
    """
    out = dict(options)
    if not file_options:
        return out
    where = f"declare.{options.get('name', '')}"
    if not declare_dir:
        raise ForbiddenError(f"{where}: the {options.get('driver')!r} driver opens files "
                             f"({', '.join(file_options)}); set rpc.declare_dir to let the "
                             "RPC declare such pipelines under that directory")
    root = Path(os.path.realpath(declare_dir))
    for key in file_options:
        given = options.get(key, "").strip()
        if not given:
            raise ForbiddenError(f"{where}.{key}: required through the RPC (a path under "
                                 "rpc.declare_dir)")
        resolved = Path(os.path.realpath(root / given))
        if resolved == root or not resolved.is_relative_to(root):
            raise ForbiddenError(f"{where}.{key}: {given!r} is outside rpc.declare_dir")
        out[key] = str(resolved)
    return out
