"""The one exception users see for mistakes they can fix (bad path, bad choice, wrong shape)."""


class L3Error(ValueError):
    """A user-fixable error; the message says what was expected and what to do."""


def check_choice(name, value, choices):
    """Raises L3Error unless `value` is one of `choices`, naming them."""
    if value not in choices:
        raise L3Error(f"Unknown {name} {value!r}; expected one of: {', '.join(map(str, choices))}.")
    return value
