"""String `format`s as regexes. Each regex generates only strings the format accepts (often a
plain subset: ASCII addresses for the idn forms, absolute URIs for references), never more."""

from __future__ import annotations

_DATE = (
    r"[1-9]\d{3}-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)"
    r"|02-(0[1-9]|1\d|2[0-8]))"
)
_TIME = r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"
_EMAIL = (
    r"[a-zA-Z0-9]+([._+-][a-zA-Z0-9]+)*@[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*"
    r"(\.[a-zA-Z0-9]+(-[a-zA-Z0-9]+)*)*\.[a-zA-Z]{2,}"
)
_URI = r"[a-z][a-z0-9+.-]*://[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*(/[a-zA-Z0-9._~-]*)*"
_HOSTNAME = (
    r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}"
    r"[a-zA-Z0-9])?)*"
)
# RFC 3339 appendix A: P then date parts (and maybe time parts), time parts alone, or weeks.
_DUR_TIME = r"T(\d+H(\d+M)?(\d+S)?|\d+M(\d+S)?|\d+S)"
_DURATION = rf"P((\d+Y(\d+M)?(\d+D)?|\d+M(\d+D)?|\d+D)({_DUR_TIME})?|{_DUR_TIME}|\d+W)"

FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": _DATE + "T" + _TIME,
    "email": _EMAIL,
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "uri": _URI,
    "ipv4": r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}",
    "ipv6": r"[0-9a-f]{1,4}(:[0-9a-f]{1,4}){7}",
    "hostname": _HOSTNAME,
    "duration": _DURATION,
    # Subsets of wider formats: ASCII forms of the internationalised ones, absolute URIs as
    # references, and common unregistered spellings read as the format they name.
    "idn-email": _EMAIL,
    "idn-hostname": _HOSTNAME,
    "uri-reference": _URI,
    "iri": _URI,
    "iri-reference": _URI,
    "url": _URI,
    "datetime": _DATE + "T" + _TIME,
    # A regex made of literal characters only; a colour as #rgb or #rrggbb.
    "regex": r"[A-Za-z0-9 _-]*",
    "color": r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})",
}

# Formats that constrain nothing we generate (an empty name names no format).
FREE_FORMATS = ("password", "binary", "text", "")
