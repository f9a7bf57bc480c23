"""Shared command-line plumbing: turning expected errors into one clear line and exit code 2."""

from __future__ import annotations

import sys
from typing import Callable


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
