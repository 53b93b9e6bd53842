"""One JSON tool-call object, `{"name": "...", "arguments": {...}}`, read a character at a time,
so a stream can send the call as soon as its name is complete and its arguments as they grow.

The scanner follows the object's own structure (keys, colons, commas) exactly, and inside the
member values only their nesting (brackets, strings, escapes): it finds where the arguments
begin and end without validating what lies between. The arguments text is the model's own
text of the arguments object, or the content of a JSON string holding it (some models quote
it); either way streamed pieces and a whole response agree character for character.

A call is *committed* once its name is complete and one of the tools, and its arguments have
begun as an object (or, quoted, are complete and hold an object; or the object closed
without any). Before that the scanner may still find it is no call (`not_call`); after, it
only grows, and a broken object ends it (`failed`).
"""

from __future__ import annotations

import json

_WHITESPACE = " \t\n\r"
_SCALAR = frozenset("0123456789+-.eEtruefalsn")  # numbers, true, false, null
_ARGUMENT_KEYS = ("arguments", "parameters")  # Llama 3 writes "parameters"


class CallScanner:
    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.name: str | None = None
        self.arguments = ""  # what can be sent so far (see the module docstring)
        self.committed = False
        self.not_call = False  # found before commit: this object is no call of the tools
        self.failed = False  # the object broke (before or after commit)
        self.done = False  # the object closed
        self._state = "open"
        self._key = ""  # raw text of the key being read, then of the member's key
        self._member = ""  # the decoded key of the member whose value is being read
        self._value = ""  # raw text of that value
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._args_kind: str | None = None  # "object" or "string" once the arguments begin
        self._args_done = False

    def feed(self, ch: str) -> bool:
        """Read one character; False when it is not part of the object: the object closed
        before it, or it breaks the object (then `failed`)."""
        if self.done or self.failed:
            return False
        ok = self._step(ch)
        if not ok:
            self.failed = True
        self._settle()
        return ok

    # ------------------------------------------------------------ structure
    def _step(self, ch: str) -> bool:
        state = self._state
        if state == "value":
            return self._value_char(ch)
        if state == "key":
            self._key += ch
            if self._escaped:
                self._escaped = False
            elif ch == "\\":
                self._escaped = True
            elif ch == '"':
                member = _decode(self._key)
                if member is None:
                    return False
                self._member, self._state = member, "colon"
            return True
        if ch in _WHITESPACE:
            return True
        if state == "open" and ch == "{":
            self._state = "first_key"
        elif state in ("first_key", "key_after_comma") and ch == '"':
            self._key, self._state = ch, "key"
        elif state in ("first_key", "after_value") and ch == "}":
            self.done = True
        elif state == "colon" and ch == ":":
            self._state = "value_start"
        elif state == "value_start":
            return self._value_start(ch)
        elif state == "after_value" and ch == ",":
            self._state = "key_after_comma"
        else:
            return False
        return True

    def _value_start(self, ch: str) -> bool:
        if self._is_name() and ch != '"':
            return False
        if self._is_arguments():
            if ch not in '{"':
                return False
            self._args_kind = "object" if ch == "{" else "string"
        self._state, self._value, self._depth = "value", "", 0
        if ch in "{[":
            self._depth = 1
        elif ch == '"':
            self._in_string = True
        elif ch not in _SCALAR:
            return False
        self._append(ch)
        return True

    def _value_char(self, ch: str) -> bool:
        if self._in_string:
            self._append(ch)
            if self._escaped:
                self._escaped = False
            elif ch == "\\":
                self._escaped = True
            elif ch == '"':
                self._in_string = False
                if self._depth == 0:
                    return self._end_value()
            return True
        if self._depth == 0:  # a scalar: it ends at the first character not its own
            if ch in _SCALAR:
                self._append(ch)
                return True
            return self._end_value() and self._step(ch)
        self._append(ch)
        if ch == '"':
            self._in_string = True
        elif ch in "{[":
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
            if self._depth == 0:
                return self._end_value()
        return True

    def _append(self, ch: str) -> None:
        self._value += ch
        if self._is_arguments() and self._args_kind == "object":
            self.arguments += ch

    def _end_value(self) -> bool:
        if self._is_name():
            self.name = _decode(self._value)
            if self.name is None:
                return False
        elif self._is_arguments():
            self._args_done = True
            if self._args_kind == "string":
                self._unquote(_decode(self._value))
        self._state, self._member = "after_value", ""
        return True

    def _unquote(self, text: str | None) -> None:
        """Quoted arguments count only when the string holds a JSON object."""
        try:
            ok = text is not None and isinstance(json.loads(text), dict)
        except json.JSONDecodeError:
            ok = False
        if ok and text is not None:
            self.arguments = text
        else:
            self._args_kind = "invalid"

    def _is_name(self) -> bool:
        return self._member == "name" and self.name is None

    def _is_arguments(self) -> bool:
        if self._member not in _ARGUMENT_KEYS:
            return False
        return self._args_kind is None or (self._state == "value" and not self._args_done)

    # ------------------------------------------------------------ commit
    def _settle(self) -> None:
        if self.committed or self.not_call:
            return
        kind = self._args_kind
        if (
            self.failed
            or kind == "invalid"
            or (self.name is not None and self.name not in self.names)
            or (self.done and self.name is None)
        ):
            self.not_call = True
            return
        if self.name is None:
            return
        if kind == "object" or (kind == "string" and self._args_done) or self.done:
            if self.done and kind is None:
                self.arguments = "{}"  # no arguments written: the function takes none
            self.committed = True


def _decode(quoted: str) -> str | None:
    """A JSON string's text, or None when its escapes are malformed."""
    try:
        return str(json.loads(quoted))
    except json.JSONDecodeError:
        return None
