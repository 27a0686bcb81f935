"""The project's own error for a bad user input (a command-line flag, a config file): its message names the input,
"input: expected X, got Y". The command line reports these (and `checkpoint.CheckpointError`) in one line with
exit status 2; anything else is a bug and shows its traceback."""
from __future__ import annotations

import re


class InputError(ValueError):
    """A bad user input; the message names it."""


# the library's error grammar: "name: expected ..." (the name may hold spaces, dots and slashes)
_NAMED = re.compile(r"^[A-Za-z_][\w ./-]*: ")


def as_input_error(e: ValueError, rename: dict[str, str] | None = None) -> InputError | None:
    """A library ValueError that names its input, as an InputError (the name renamed through `rename`, e.g. to a
    command-line flag); None for any other ValueError (a bug, to be re-raised)."""
    text = str(e)
    if not _NAMED.match(text):
        return None
    name, _, rest = text.partition(":")
    flag = (rename or {}).get(name.strip())
    return InputError(f"{flag}:{rest}" if flag else text)
