"""What the scripts share on the command line: ``error: ...`` exits, ``--help``, ``--config``.

Every script reports a problem the user fixes (a bad flag, a config file that does not exist
or does not load) as one line ``error: ...`` on stderr with exit code 2 and no traceback;
``--help`` (``--helpshort``, ``--helpfull``) prints the usage and exits 0.

``--config`` of ``scripts/explain.py`` (and ``sce-jax-explain``) names a config file by path
(``configs/squares.py``) or by the name of a shipped config (``squares``), optionally with an
argument after a colon (``squares:tiny``). :func:`resolve_config_argv` finds the file and loads
it once before ml_collections does, so a missing file, a syntax error (file and line), an
argument the config refuses or a ``--config`` given twice is one clear line instead of a
traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import NoReturn, Sequence

from absl import flags

from sce_jax.launch.config_files import load_config_module

EXIT_USER_ERROR = 2
HELP_FLAGS = ("--help", "-help", "--helpshort", "-helpshort", "--helpfull", "-helpfull",
              "--helpxml", "-?", "-h")

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # sce_jax/
# Shipped configs: inside an installed package (the build maps configs/ to sce_jax/_configs),
# else the checkout's top-level configs/ (editable installs and running from a checkout).
CONFIG_DIRS = (os.path.join(PACKAGE_DIR, "_configs"), os.path.join(os.path.dirname(PACKAGE_DIR), "configs"))


class CommandLineError(ValueError):
    """A command-line problem the user fixes; its message is the ``error:`` line."""


def error(message) -> int:
    """Prints ``error: <message>`` on stderr; returns the exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def exit_with_error(message) -> NoReturn:
    sys.exit(error(message))


def plain_message(e: BaseException) -> str:
    """The innermost message of an exception wrapping others, on one line."""
    while e.args and isinstance(e.args[0], BaseException):
        e = e.args[0]
    message = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    return " ".join(message.split())


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's flag parsing for ``app.run(main, flags_parser=parse_flags)``.

    A bad flag is ``error: ...`` with exit 2; ``--help`` prints the usage and exits 0 (absl
    itself exits 1 after printing help).
    """
    try:
        return flags.FLAGS(argv)
    except SystemExit:
        if any(a.split("=")[0] in HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise
    except flags.Error as e:
        exit_with_error(_flag_hint(str(e)))
    except Exception as e:  # noqa: BLE001 - a config override of the wrong type
        exit_with_error(_flag_hint(f"{type(e).__name__}: {plain_message(e)}"))


def _flag_hint(message: str) -> str:
    if "targets.class_index" in message:
        message += ("; to give the class by name use --config.targets.class_name=NAME "
                    "(see --print_config)")
    return message


def shipped_config_names() -> list[str]:
    """The names of the shipped config files (``fashion_mnist``, ``squares``, ...)."""
    for folder in CONFIG_DIRS:
        if os.path.isdir(folder):
            return sorted(os.path.splitext(n)[0] for n in os.listdir(folder)
                          if n.endswith(".py") and not n.startswith("_"))
    return []


def find_config_file(name_or_path: str) -> str:
    """The config file a ``--config`` value (without ``:arg``) names: a path or a shipped name.

    Raises:
      CommandLineError: no such file (the message lists the shipped configs).
    """
    if os.path.isfile(name_or_path):
        return os.path.abspath(name_or_path)
    base = os.path.basename(name_or_path)
    stem = base[:-3] if base.endswith(".py") else base
    # A bare name, or a path of the checkout's configs/ folder from another working directory.
    if name_or_path in (stem, base, os.path.join("configs", base)):
        for folder in CONFIG_DIRS:
            candidate = os.path.join(folder, stem + ".py")
            if os.path.isfile(candidate):
                return candidate
    names = ", ".join(shipped_config_names()) or "none found"
    raise CommandLineError(f"config file {name_or_path!r} does not exist; give a path or the "
                           f"name of a shipped config ({names})")


def check_config(value: str) -> str:
    """Resolves ``--config`` ``path_or_name[:arg]`` and checks that it loads; returns ``path[:arg]``.

    Raises:
      CommandLineError: the file is missing, does not import (syntax error: file and line) or
        its ``get_config(arg)`` fails.
    """
    name, sep, arg = value.partition(":")
    path = find_config_file(name)
    try:
        module = load_config_module(path)
    except SyntaxError as e:
        raise CommandLineError(f"config file {e.filename or path} line {e.lineno}: "
                               f"{e.msg}") from None
    except Exception as e:  # noqa: BLE001 - anything the file raises while importing
        raise CommandLineError(f"config file {path} fails to load{_where(e, path)}: "
                               f"{type(e).__name__}: {plain_message(e)}") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise CommandLineError(f"config file {path} defines no get_config() function")
    try:
        get_config(arg) if sep else get_config()
    except Exception as e:  # noqa: BLE001 - an argument the config refuses, a bug in it
        what = f" with argument {arg!r}" if sep else ""
        raise CommandLineError(f"config file {path}{what}: {plain_message(e)}"
                               f"{_where(e, path, prefix=' (')}") from None
    return path + (":" + arg if sep else "")


def _where(e: BaseException, path: str, prefix: str = " at ") -> str:
    """`` at line N`` of ``path`` where ``e`` was raised, or nothing."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(f.filename) == os.path.abspath(path)]
    if not lines:
        return ""
    return f"{prefix}line {lines[-1]}" + (")" if prefix.endswith("(") else "")


def config_values(argv: Sequence[str], flag: str = "config") -> list[str]:
    """The values of every ``--config`` in ``argv`` (``--config=V``, ``--config V``, one dash
    too, as absl takes them), in order; ``--config.KEY=VALUE`` overrides are not counted.
    Arguments after ``--`` are positional, not flags."""
    values = []
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        name, sep, value = arg.partition("=")
        if name not in (f"--{flag}", f"-{flag}"):
            continue
        if sep:
            values.append(value)
        elif i + 1 < len(args):
            values.append(args[i + 1])
    return values


def resolve_config_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
    """``argv`` with ``--config=NAME[:arg]`` replaced by the checked path; exits 2 on a problem.

    Handles ``--config=VALUE`` and ``--config VALUE``; other arguments are kept as they are.
    A ``--config`` given more than once is an error (absl would apply the overrides given
    between them twice and fail with "defined twice", or silently keep the last file).
    With ``--help`` the config is not checked (help must always work).
    """
    argv = list(argv)
    if any(a.split("=")[0] in HELP_FLAGS for a in argv[1:]):
        return argv
    given = config_values(argv, flag)
    if len(given) > 1:
        times = "twice" if len(given) == 2 else f"{len(given)} times"
        exit_with_error(f"--{flag} was given {times} ({', '.join(given)}); give it once")
    option = f"--{flag}"
    for i, arg in enumerate(argv):
        if i == 0:
            continue
        if arg.startswith(option + "="):
            value, rebuild = arg[len(option) + 1:], lambda v: f"{option}={v}"
        elif arg == option and i + 1 < len(argv):
            value, rebuild = argv[i + 1], None
        else:
            continue
        try:
            checked = check_config(value)
        except CommandLineError as e:
            exit_with_error(e)
        if rebuild is None:
            argv[i + 1] = checked
        else:
            argv[i] = rebuild(checked)
    return argv
