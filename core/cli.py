"""What every ``python -m core.X`` shares: flags, help format, device check, error -> exit code.

    parser = cli.parser("python -m core.evaluate", __doc__)
    cli.add_device(parser); cli.add_json(parser)
    ...
    def main(argv=None) -> int:
        return cli.run(_main, argv)          # tests call main() and read the code

    if __name__ == "__main__":
        sys.exit(main())

``run`` turns an ArchScopeError into one line on stderr and its exit code (core/errors.py), and
Ctrl-C into 130. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from core.errors import (EXIT_CANCELLED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_LOCKED,  # noqa: F401
                         EXIT_OK, ArchScopeError, InvalidInputError)

DEVICE_CHOICES = ("auto", "cpu", "cuda")
TOP_K_DEFAULT = 5


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's layout and shows every flag's default."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's own code for usage errors)
        self.exit(EXIT_INVALID, f"error: {message}\n")


def parser(prog: str, doc: str | None, *, epilog: str | None = None) -> Parser:
    """An ArgumentParser whose description is the first line of ``doc`` and whose epilog is the rest."""
    doc = (doc or "").strip()
    first, _, rest = doc.partition("\n")
    return Parser(prog=prog, description=first, epilog=epilog if epilog is not None else (rest.strip("\n").rstrip() or None),
                  formatter_class=_HelpFormatter)


def add_device(p: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: str | None = "auto") -> None:
    """``--device auto|cpu|cuda`` (auto: cuda when a GPU is visible)."""
    p.add_argument("--device", choices=DEVICE_CHOICES, default=default,
                   help="auto: cuda when a GPU is visible, else cpu")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def add_top_k(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top-k", type=int, default=TOP_K_DEFAULT, metavar="K", help="classes listed per image")


def json_object(flag: str) -> Callable[[str], dict]:
    """An argparse ``type=`` that accepts a JSON object only, with a message naming ``flag``."""
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(
                f"{flag} needs a JSON object, e.g. '{{\"width\": 32}}' ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag} needs a JSON object, got {text!r}")
        return value
    parse.__name__ = "JSON object"
    return parse


def add_model_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, *, default=None) -> None:
    """``--model-options JSON``: the model factory's keyword arguments (same name in every command)."""
    kwargs = {} if default is None else {"default": default}
    p.add_argument("--model-options", type=json_object("--model-options"), metavar="JSON",
                   help="model options as a JSON object, e.g. '{\"width\": 32}'", **kwargs)


def check_device(name: str | None) -> None:
    """Refuse ``cuda`` at once, in one line, when no CUDA GPU is visible (exit 2)."""
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError("--device cuda: no CUDA GPU is available on this machine "
                                    "(use --device cpu or auto)")


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and return its exit code; ArchScopeError -> one stderr line + its exit code."""
    try:
        code = main(argv)
    except ArchScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except SystemExit as exc:            # argparse: --help (0) or a usage error (2), as a return code
        code = exc.code if isinstance(exc.code, int) else (EXIT_INVALID if exc.code else EXIT_OK)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    return int(code or 0)
