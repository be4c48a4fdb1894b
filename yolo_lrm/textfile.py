"""Reading the small text files a user writes or edits (cfg, .data, names, lists, labels), with one error style."""
from __future__ import annotations

import os
from pathlib import Path


def read_text(path: str | os.PathLike, what: str, error: type[Exception] = ValueError) -> str:
    """The file's text as UTF-8; a leading byte-order mark (Windows editors add one) is dropped, since it would
    otherwise become part of the first section, key, name or path.  Failures raise `error('<path>: cannot read
    <what> (<reason>)')`."""
    try:
        return Path(path).read_text(encoding='utf-8-sig')
    except OSError as exc:
        raise error(f'{path}: cannot read {what} ({exc.strerror or exc})') from None
    except UnicodeDecodeError as exc:
        raise error(f'{path}: cannot read {what} (not UTF-8 text: {exc.reason} at byte offset {exc.start})') from None


def read_lines(path: str | os.PathLike, what: str, error: type[Exception] = ValueError) -> list[str]:
    """The non-blank lines of `read_text`, stripped (names files, image lists, image sets)."""
    return [ln.strip() for ln in read_text(path, what, error).splitlines() if ln.strip()]


def read_names(path: str | os.PathLike, error: type[Exception] = ValueError) -> list[str]:
    """Class names, one per non-blank line; an empty file is an error."""
    names = read_lines(path, 'names file', error)
    if not names:
        raise error(f'{path}: the names file is empty')
    return names
