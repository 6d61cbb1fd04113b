"""Paths that may be URLs (``gs://bucket/run``) or local, ``~``/``$VAR`` expanded."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from etils import epath

PathLike = str | os.PathLike

# What os.path.expandvars replaces: $NAME or ${NAME}.
_VARIABLE = re.compile(r"\$(\w+|\{([^}]*)\})")


def is_url(path: PathLike) -> bool:
    """Whether `path` is a URL (has a ``scheme://``), i.e. not a local file system path."""
    return "://" in os.fspath(path)


def expand_path(path: PathLike, what: str = "path") -> str:
    """`path` with ``~``/``~user`` and ``$VAR``/``${VAR}`` expanded (a URL as given);
    ValueError naming `what` (e.g. ``"--data_dir"``) for a variable that is not set."""
    text = os.fspath(path)
    if is_url(text):
        return text
    unset = [m.group(2) if m.group(2) is not None else m.group(1)
             for m in _VARIABLE.finditer(text)
             if (m.group(2) if m.group(2) is not None else m.group(1)) not in os.environ]
    if unset:
        raise ValueError(f"{what} {text!r}: environment variable(s) "
                         f"{', '.join('$' + name for name in unset)} not set")
    return os.path.expandvars(os.path.expanduser(text))


def _flag_parser() -> Any:
    from absl import flags

    class PathParser(flags.ArgumentParser):
        """A string flag whose value is `expand_path`'s (absl names the flag on error)."""

        def parse(self, argument: Any) -> Any:
            return None if argument is None else expand_path(argument)

        def flag_type(self) -> str:
            return "path"

    return PathParser()


def _calling_module() -> str:
    """The module that called `DEFINE_path` as absl names it (for ``--help``)."""
    name = sys._getframe(2).f_globals.get("__name__", "__main__")
    return sys.argv[0] if name == "__main__" else name


def DEFINE_path(name: str, default: str | None, help: str, **kwargs: Any) -> Any:
    """An absl string flag whose value is `expand_path`'s; `kwargs` as `absl.flags.DEFINE`."""
    from absl import flags

    kwargs.setdefault("module_name", _calling_module())
    return flags.DEFINE(_flag_parser(), name, default, help,
                        serializer=flags.ArgumentSerializer(), **kwargs)


def DEFINE_multi_path(name: str, default: list[str] | None, help: str,
                      **kwargs: Any) -> Any:
    """`DEFINE_path` for a flag that may be repeated (a list of paths)."""
    from absl import flags

    kwargs.setdefault("module_name", _calling_module())
    return flags.DEFINE_multi(_flag_parser(), flags.ArgumentSerializer(), name, default,
                              help, **kwargs)


def resolve_path(path: PathLike) -> epath.Path:
    """`path` as an `epath.Path`: a URL as given (ValueError for a scheme `etils.epath`
    lacks; a `pathlib.Path` cannot carry one), a local path expanded and made absolute."""
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
    return epath.Path(expand_path(text)).absolute()


def as_path(path: PathLike) -> epath.Path:
    """`resolve_path` without making a local path absolute (messages show it as typed)."""
    return resolve_path(path) if is_url(path) else epath.Path(expand_path(path))
