"""The error family for what users cause (bad files, bad budgets, bad requests).

Defined at the lowest layer that raises one, so every layer can subclass it without importing
upward. The CLI turns a `VidsieveError` into one line on stderr; `serve/` maps it to an HTTP
status (`http_status`) with a JSON body. Anything else escaping is a bug in vidsieve.
"""

from __future__ import annotations


class VidsieveError(Exception):
    """A problem with what the user gave us. The message is one sentence naming what and where."""

    http_status: int = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(VidsieveError):
    """A value the user passed is out of range or of the wrong kind (a budget, a strategy name...)."""

    http_status = 422
