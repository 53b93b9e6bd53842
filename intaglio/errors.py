"""RequestError: a request the engine refuses, naming the field at fault.

Raised where the engine validates (sampling params, prompts, limits); the offline API fails that
request alone, and the server maps it to a 400 with `param` and `code` instead of validating
the same things again.
"""

from __future__ import annotations


class RequestError(ValueError):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param  # the request field at fault (OpenAI's error "param")
        self.code = code  # a machine-readable reason, e.g. context_length_exceeded
