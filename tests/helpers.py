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


def flat_config(config_type, **values):
    """Build a job config from flat keyword arguments: each name that is not a field of
    ``config_type`` goes to the nested settings group that has a field of that name (e.g.
    ``track_size`` to ``shape``, ``device`` to ``runtime``, ``window`` to ``variants``)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_type)
    direct = {field.name for field in dataclasses.fields(config_type)}
    groups = {name: hint for name, hint in hints.items()
              if name in direct and dataclasses.is_dataclass(hint)}
    top, nested = {}, {name: {} for name in groups}
    for name, value in values.items():
        if name in direct:
            top[name] = value
            continue
        owners = [group for group, hint in groups.items()
                  if name in {field.name for field in dataclasses.fields(hint)}]
        assert len(owners) == 1, f"{name!r} belongs to {owners or 'no group'} of {config_type}"
        nested[owners[0]][name] = value
    for group, fields in nested.items():
        if fields:
            base = top.get(group)
            top[group] = (dataclasses.replace(base, **fields) if base is not None
                          else groups[group](**fields))
    return config_type(**top)
