"""``crossres`` (alias ``lightning``, ``python -m crossres``): dispatch a command before any heavy import.

``crossres --help`` and the help of ``report``/``export``/``align`` import neither torch nor Lightning;
``fit``/``validate``/``test``/``predict`` go to :class:`crossres.cli.CrossResCLI`. Bad input
(:mod:`crossres.errors`) ends any command with one line on stderr, ``crossres <command>: error: <message>``, and
exit status 2; ``--debug`` or ``CROSSRES_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

from crossres.errors import InputError, debug_requested, input_error_message

__all__ = ["main"]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = ("report", "export", "align")
EXIT_BAD_INPUT = 2

USAGE = """\
usage: crossres [--debug] {fit,validate,test,predict,report,export,align} ...

Cross-resolution face recognition: train, evaluate and report every method on one protocol.

commands:
  fit         train a method (crossres fit -c experiments/baseline.yaml)
  validate    evaluate a checkpoint on the validation pair sets
  test        evaluate a checkpoint on the test pair sets (crossres test -c CONFIG --ckpt_path CKPT)
  predict     embed the test pair sets with a checkpoint
  report      figures and tables of a run's results (crossres report runs/baseline)
  export      write a RecordIO set, a .bin pair set, an identity folder or an LFW pairs file
  align       detect faces and align them onto the ArcFace template (or from given landmarks)

options:
  -h, --help  show this message; `crossres <command> --help` lists a command's options
  --debug     show the traceback of bad-input errors too (or set CROSSRES_DEBUG=1)
"""


def _config_files(argv: list[str]) -> list[str]:
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


def _check_data_arguments(argv: list[str]) -> None:
    """Name the group's key of a grouped option set flat by ``--data.lr_sizes`` or in a ``--data FILE``."""
    import yaml

    from crossres.data.options import check_grouped_keys

    for i, arg in enumerate(argv):
        if arg.startswith("--data."):
            key = arg.removeprefix("--data.").split("=", 1)[0]
            check_grouped_keys([key], f"--data.{key}")
            continue
        if arg == "--data" and i + 1 < len(argv):
            path = Path(argv[i + 1])
        elif arg.startswith("--data="):
            path = Path(arg.removeprefix("--data="))
        else:
            continue
        try:
            section = yaml.safe_load(path.read_text()) if path.is_file() else None
        except yaml.YAMLError:
            section = None  # jsonargparse says so itself
        if isinstance(section, dict):
            check_grouped_keys(section, f"--data {path}")


def check_config_files(argv: list[str]) -> None:
    """Name a ``-c``/``--config`` file that is empty, not YAML, or not a mapping (jsonargparse names none).

    A grouped ``data`` option set flat (``data.lr_sizes`` in a config file, ``--data.lr_sizes``, ``--data FILE``) is
    named with its group's key (``data.degradation.lr_sizes``), where jsonargparse would only call it unexpected.

    Args:
        argv: the arguments after ``crossres``.

    Raises:
        InputError: for such a file or option.
    """
    import yaml

    from crossres.data.options import check_grouped_keys

    _check_data_arguments(argv)
    for name in _config_files(argv):
        path = Path(name)
        if not path.is_file():
            continue  # jsonargparse says so itself
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise InputError(f"--config {path} is not valid YAML: {err}") from None
        if content is None:
            raise InputError(f"--config {path} is empty; expected a YAML mapping such as experiments/baseline.yaml")
        if not isinstance(content, dict):
            raise InputError(
                f"--config {path} holds a {type(content).__name__}; expected a YAML mapping of options "
                "(model:, data:, trainer:, ...) such as experiments/baseline.yaml"
            )
        data = content.get("data")
        if isinstance(data, dict):
            check_grouped_keys(data, f"--config {path}")


def _bad_input(command: str, message: str) -> NoReturn:
    print(f"crossres {command}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)


def main(args: list[str] | None = None) -> Any:
    """Run the crossres command line.

    Args:
        args: the arguments after ``crossres``; ``None`` reads ``sys.argv`` (the console scripts).

    Returns:
        For ``fit``/``validate``/``test``/``predict`` called with ``args``: the :class:`~crossres.cli.CrossResCLI`;
        for ``report``/``export``/``align`` called with ``args``: their exit status. ``None`` otherwise (a console
        script passes main()'s return value to ``sys.exit``).

    Raises:
        SystemExit: with status 2 on bad input (the message, on stderr, names the file or option), 0 after
            ``--help``.
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or debug_requested()
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else EXIT_BAD_INPUT)
    command = next((a for a in argv if a in LIGHTNING_COMMANDS + COMMANDS), argv[0])
    if argv[0] in COMMANDS:
        from crossres.commands import run

        code = run(argv, debug=debug)
        if args is None:
            sys.exit(code)
        return code
    try:
        check_config_files(argv)
        from crossres.cli import run_lightning

        if args is None:  # LightningCLI reads sys.argv itself (it warns when given both)
            sys.argv[1:] = argv
            run_lightning(None)
            return None
        return run_lightning(argv)
    except Exception as err:
        message = input_error_message(err)
        if message is None or debug:
            raise
        _bad_input(command, message)
