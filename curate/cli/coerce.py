"""Option values turned into Python values without pydantic.

typer (0.2x) coerces every command-line value through a pydantic ``TypeAdapter``: importing
pydantic and building the adapters costs about 0.3 s on every command, more than a one-caption
``curate match`` spends matching. The options of curate are nearly all plain ``str``, ``int``,
``float``, ``bool`` and ``Path`` values (numbers with ``min``/``max`` bounds at most);
:func:`install` gives those a plain conversion with pydantic's own error messages, and leaves
every other option (clamped numbers, lists, choices, custom parsers) to typer. With a typer that
has no such layer (older releases coerce through click), :func:`install` does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_INT_ERROR = "Input should be a valid integer, unable to parse string as an integer"
_FLOAT_ERROR = "Input should be a valid number, unable to parse string as a number"
_BOOL_ERROR = "Input should be a valid boolean, unable to interpret input"
# the strings pydantic reads as booleans (an empty value is False, as typer has it)
_BOOLS = {"": False, "0": False, "off": False, "f": False, "false": False, "n": False, "no": False,
          "1": True, "on": True, "t": True, "true": True, "y": True, "yes": True}


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    number = float(value)  # "3.0" is an integer to pydantic, "3.5" is not
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise ValueError(value)


def _bound(x: float) -> str:
    """A bound as pydantic writes it in its message (0.0 as 0, 0.1 as 0.1)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _plain(descriptor, param) -> bool:
    """Whether this option is one that :func:`install` converts itself."""
    info = descriptor.parameter_info
    if descriptor.annotation not in (str, int, float, bool, Path) or descriptor.file_annotation is not None:
        return False
    if param.multiple or param.nargs != 1 or descriptor.is_choice:
        return False
    return all(
        getattr(info, name, None) in (None, False)
        for name in ("clamp", "parser", "path_type", "resolve_path", "allow_dash")
    ) and (descriptor.annotation in (int, float) or (info.min is None and info.max is None))


def install() -> bool:
    """Route plain options past typer's pydantic layer; False where this typer has no such layer."""
    try:
        from typer import _coercion, core
        from typer._click.exceptions import BadParameter
        from typer._param_types import coerce_cli_path
    except ImportError:
        return False
    parameter = getattr(core, "_TyperParameter", None)
    base = getattr(_coercion, "RuntimeParam", None)
    original = getattr(parameter, "get_runtime_param", None)
    if parameter is None or base is None or original is None or getattr(original, "_curate_plain", False):
        return False

    class PlainRuntimeParam(base):
        def _coerce_value(self, value: Any, param, ctx) -> Any:
            kind = self.annotation
            if kind is str:
                return value if isinstance(value, str) else str(value)
            if kind is Path:
                path = value if isinstance(value, Path) else Path(value)
                return coerce_cli_path(path, self.parameter_info, path_type=Path, param=param, ctx=ctx)
            convert, error = {int: (_int, _INT_ERROR), float: (float, _FLOAT_ERROR), bool: (_bool, _BOOL_ERROR)}[kind]
            try:
                number = convert(value)
            except (TypeError, ValueError, OverflowError):
                raise BadParameter(error, ctx=ctx, param=param) from None
            low, high = self.parameter_info.min, self.parameter_info.max
            if low is not None and number < low:
                raise BadParameter(f"Input should be greater than or equal to {_bound(low)}", ctx=ctx, param=param)
            if high is not None and number > high:
                raise BadParameter(f"Input should be less than or equal to {_bound(high)}", ctx=ctx, param=param)
            return number

    def get_runtime_param(self):
        try:
            if getattr(self, "_runtime_param", None) is None and _plain(self.type_descriptor, self):
                d = self.type_descriptor
                self._runtime_param = PlainRuntimeParam(parameter_info=d.parameter_info, annotation=d.annotation)
        except (AttributeError, TypeError):  # another typer's internals: its own conversion, as without us
            pass
        return original(self)

    get_runtime_param._curate_plain = True  # type: ignore[attr-defined]
    parameter.get_runtime_param = get_runtime_param
    return True
