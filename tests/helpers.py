"""Assertions and marks shared by the test modules."""
import pytest

from cmx_cli.errors import CmxError


#: Two warnings that torch itself raises while compiling (``--compile``), not cmx.
COMPILER_WARNINGS = (
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
    "ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning",
)


def allow_compiler_warnings(test):
    """Let a test through :data:`COMPILER_WARNINGS`."""
    for warning in COMPILER_WARNINGS:
        test = pytest.mark.filterwarnings(warning)(test)
    return test


def check_user_error(error: CmxError, *names: object) -> str:
    """Check the house rules for a user error (STYLE.md rule 6) and return its message."""
    message = error.format_message()
    assert isinstance(error, CmxError)
    for name in names:
        assert str(name) in message, (name, message)
    assert "Hint:" in message
    assert "\n" not in message
    return message
