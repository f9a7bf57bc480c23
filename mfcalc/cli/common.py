"""Shared command-line plumbing: expected errors as one clear line and exit code 2, and flags
generated from the settings dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any, Callable, Dict, List


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run ``body``; bad input (ValueError, FileNotFoundError, OSError, KeyError) becomes
    ``prog: error: <message>`` on stderr and exit status 2, never a traceback."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError, KeyError, RuntimeError) as exc:
        msg = str(exc).strip()
        # TorchScript wraps errors raised inside a scripted model; keep the user's message
        if "builtins.ValueError:" in msg:
            msg = msg.split("builtins.ValueError:")[-1].strip()
        print(f"{prog}: error: {msg or type(exc).__name__}", file=sys.stderr)
        return 2


def add_settings_arguments(parser: argparse._ActionsContainer, cls: type) -> None:
    """One ``--flag`` per field of a settings dataclass (``n_features`` -> ``--n-features``).

    Type, choices, metavar and help come from the field's declaration, so a setting is
    declared once (in its dataclass) and reaches the command line by itself.  Every flag
    defaults to ``None``: only what the user gives overrides the config file.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        args = typing.get_args(kind)
        if typing.get_origin(kind) is typing.Union and type(None) in args:  # Optional[X] -> X
            kind = next(a for a in args if a is not type(None))
        meta = dict(f.metadata)
        options: Dict[str, Any] = {"default": None, "help": meta.get("help")}
        for key in ("choices", "metavar"):
            if key in meta:
                options[key] = meta[key]
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) in (list, List):
            options.update(nargs="+", type=typing.get_args(kind)[0])
        else:
            options["type"] = kind
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **options)


def apply_settings(args: argparse.Namespace, settings: Any) -> None:
    """Copy every flag the user gave (not ``None``) onto the settings dataclass."""
    for f in dataclasses.fields(settings):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(settings, f.name, value)
