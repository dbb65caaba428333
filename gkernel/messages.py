"""Request contents: declared fields, checked before any handler runs.

Each handler declares the fields it reads with their types and defaults
(:func:`field`); :func:`parse_content` turns a request's content into keyword
arguments or raises :class:`InvalidRequest` with a one-line reason that goes
back to the client in the error reply. Handlers never see a missing or
wrongly typed field.
"""

__all__ = ["PROTOCOL_VERSION", "InvalidRequest", "UnknownSubshellError", "field", "parse_content", "REQUIRED"]

#: the messaging protocol spoken: 5.4 adds iopub_welcome, 5.5 kernel subshells
PROTOCOL_VERSION = "5.5"

REQUIRED = object()


class InvalidRequest(Exception):
    """A request the kernel cannot serve as sent (missing or wrongly typed field)."""


class UnknownSubshellError(InvalidRequest):
    """A request for a subshell that does not exist (named as ipykernel names it)."""

    def __init__(self, subshell_id):
        super().__init__(f"Unknown subshell_id {subshell_id!r}")


class field:
    __slots__ = ("types", "default")

    def __init__(self, types, default=REQUIRED):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default


def _type_names(types):
    return " or ".join(t.__name__ for t in types)


def parse_content(msg_type, content, fields):
    """Keyword arguments for the handler of *msg_type* from *content*."""
    if not isinstance(content, dict):
        raise InvalidRequest(f"{msg_type}: content must be an object, not {type(content).__name__}")
    kwargs = {}
    for name, spec in fields.items():
        value = content.get(name, spec.default)
        if value is REQUIRED:
            raise InvalidRequest(f"{msg_type}: missing field {name!r}")
        # bool is an int subclass: a flag must not accept 0/1, a count must not accept True.
        if value is not spec.default and (
            not isinstance(value, spec.types) or (isinstance(value, bool) and bool not in spec.types)
        ):
            raise InvalidRequest(
                f"{msg_type}: field {name!r} must be {_type_names(spec.types)}, not {type(value).__name__}"
            )
        _check_value(msg_type, name, value)
        kwargs[name] = value
    return kwargs


def _check_value(msg_type, name, value):
    """What JSON allows but no handler can use: integers beyond 64 bits (SQLite's, the C
    libraries'), strings with lone surrogates (JSON's \\ud800 escapes; not encodable, so not
    compilable, storable or publishable)."""
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
        raise InvalidRequest(f"{msg_type}: field {name!r} is out of range (more than 64 bits)")
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"{msg_type}: field {name!r} is not valid Unicode "
                                 f"(a lone surrogate at position {exc.start})") from None
