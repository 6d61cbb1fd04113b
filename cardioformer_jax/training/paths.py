"""Workdir paths that may be URLs (``gs://bucket/run``) as well as local directories.

`pathlib` collapses a URL's ``//`` (``Path("gs://b/run")`` is ``gs:/b/run``) and
``.absolute()`` then prefixes the working directory (``/cwd/gs:/b/run``), so the training
program keeps every workdir, run directory and checkpoint directory as an `etils.epath.Path`
made by `resolve_path`: a URL unchanged, a local path absolute. Orbax, TFDS and tensorboardX
all accept such paths (``os.fspath`` gives back the URL).

Which URL schemes work is `etils.epath`'s choice: ``gs://``, ``s3://``, ``az://``, ``hf://``
(through fsspec; ``gs://`` needs gcsfs, the ``[gcs]`` extra). Another scheme (``memory://``,
``file://``, ...) is refused by `resolve_path` with a ValueError, before anything is
written.
"""

from __future__ import annotations

import os

from etils import epath

PathLike = str | os.PathLike


def is_url(path: PathLike) -> bool:
    """Whether `path` is a URL (has a ``scheme://``), i.e. not a local file system path."""
    return "://" in os.fspath(path)


def resolve_path(path: PathLike) -> epath.Path:
    """`path` as an `epath.Path`: a URL exactly as given, a local path with ``~`` expanded
    and made absolute (not resolving symlinks).

    Accepts str, `pathlib.Path` and `epath.Path`. Raises ValueError for a URL scheme that
    `etils.epath` has no backend for. (A `pathlib.Path` cannot carry a URL: it has already
    collapsed ``gs://`` to ``gs:/``; pass URLs as str or `epath.Path`.)
    """
    text = os.fspath(path)
    if is_url(text):
        try:
            return epath.Path(text)
        except (KeyError, NotImplementedError) as error:
            scheme = text.split("://", 1)[0]
            raise ValueError(
                f"{text!r}: etils.epath (through which checkpoints and logs are written) "
                f"has no file system for {scheme}:// URLs; use a local path or a gs://, "
                f"s3://, az:// or hf:// URL") from error
    return epath.Path(text).expanduser().absolute()


def as_path(path: PathLike) -> epath.Path:
    """`path` as an `epath.Path` without making it absolute: a URL as `resolve_path` keeps
    it (same ValueError for a scheme without a backend), a local path with ``~`` expanded
    and otherwise as given, so that messages show a relative path as the user typed it.

    For the commands that read a run or write a file where the user points them
    (predict, evaluate, export).
    """
    if is_url(path):
        return resolve_path(path)
    return epath.Path(os.fspath(path)).expanduser()
