"""Assertions shared by the test modules."""
from cmx_cli.errors import CmxError


def check_user_error(error: CmxError, *names: object) -> str:
    """Check the house rules for a user error (STYLE.md rule 6) and return its message."""
    message = error.format_message()
    assert isinstance(error, CmxError)
    for name in names:
        assert str(name) in message, (name, message)
    assert "Hint:" in message
    assert "\n" not in message
    return message
