"""Code completion for ``complete_request``.

jedi, when installed, understands the namespace and the code around the
cursor; otherwise the standard library's rlcompleter completes names and
attributes of the token before the cursor. jedi is imported on the first
completion: it would add about 60 ms to every kernel start.
"""

import importlib.util
import re
import rlcompleter

__all__ = ["complete", "HAVE_JEDI"]

HAVE_JEDI = importlib.util.find_spec("jedi") is not None

_TOKEN = re.compile(r"[\w.]*$")


def complete(code, cursor_pos, namespace, use_jedi=True):
    """Return a ``complete_reply`` content for *code* with the cursor at *cursor_pos*."""
    if use_jedi and HAVE_JEDI:
        matches, start, metadata = _complete_jedi(code, cursor_pos, namespace)
    else:
        matches, start, metadata = _complete_stdlib(code, cursor_pos, namespace)
    return {
        "status": "ok",
        "matches": matches,
        "cursor_start": start,
        "cursor_end": cursor_pos,
        "metadata": metadata,
    }


def _complete_jedi(code, cursor_pos, namespace):
    import jedi

    before = code[:cursor_pos]
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1)
    completions = jedi.Interpreter(code, [namespace]).complete(line, column)
    if not completions:
        return [], cursor_pos, {}
    # Every completion replaces the same typed prefix.
    start = cursor_pos - (len(completions[0].name) - len(completions[0].complete))
    matches = [c.name for c in completions]
    types = [{"start": start, "end": cursor_pos, "text": c.name, "type": c.type} for c in completions]
    return matches, start, {"_jupyter_types_experimental": types}


def _complete_stdlib(code, cursor_pos, namespace):
    token = _TOKEN.search(code[:cursor_pos]).group()
    completer = rlcompleter.Completer(namespace)
    matches, state = [], 0
    while (match := completer.complete(token, state)) is not None:
        state += 1
        match = match.rstrip("(")
        if match not in matches:
            matches.append(match)
    return matches, cursor_pos - len(token), {}
