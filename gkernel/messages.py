"""Request contents: declared fields, checked before any handler runs.

Each handler declares the fields it reads with their types and defaults
(:func:`field`); :func:`parse_content` turns a request's content into keyword
arguments or raises :class:`InvalidRequest` with a one-line reason that goes
back to the client in the error reply. Handlers never see a missing or
wrongly typed field.
"""

__all__ = ["InvalidRequest", "field", "parse_content", "REQUIRED"]

REQUIRED = object()


class InvalidRequest(Exception):
    """A request the kernel cannot serve as sent (missing or wrongly typed field)."""


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
        kwargs[name] = value
    return kwargs
