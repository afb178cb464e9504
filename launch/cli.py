"""What every command shares: `--help`, one-line user errors with exit status 2, quiet libraries.

`run_absl(main, module, prog)` runs an absl `main` the way `app.run` does, with three changes:
  * `--help` (`-h`, `--helpshort`) prints the module's docstring and the module's own flags and
    exits 0. absl's own short help lists the flags of `sys.argv[0]`'s module, which for a
    console script (`.venv/bin/issf-train`, a generated wrapper) is no module at all, so it
    printed only "USAGE: ... [flags]". `--helpfull` still lists every flag (absl's).
  * a bad flag, a config file that does not load, a `--config.a.b=v` override naming no
    config field, or a config value out of its range (`issf_jax/config_validation.py`) prints
    one line and exits 2 (absl: a multi-line "FATAL Flags parsing error" and exit 1, or a
    traceback for config overrides; an out-of-range value would crash later or train anyway);
  * an `errors.InputError` raised by `main` prints one line and exits 2. Other exceptions are
    bugs and keep their traceback.
`run_argparse(main, parser, argv)` gives the argparse commands (`issf-prepare`,
`issf-eval score`, `python -m launch.synthetic`) the same behaviour: a bad argument or an
`errors.InputError` prints one line and exits 2. Every command reaches exit status 2 through
`report` here, and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import NoReturn

from absl import app, flags

from issf_common import errors

EXIT_USER_ERROR = 2
HELP_ARGS = ('-h', '--help', '-help', '--helpshort', '-?')
# The `--compilation_cache` flag of every command that compiles (issf_jax/compile_cache.py).
COMPILATION_CACHE_HELP = (
  "Persistent XLA compilation cache: a folder, or 'off'. Default: $JAX_COMPILATION_CACHE_DIR "
  'if set, else $XDG_CACHE_HOME/issf-jax/xla (~/.cache/issf-jax/xla); programs compiled once '
  'are loaded by later runs.'
)


def report(prog: str, message) -> int:
  """Prints `<prog>: error: <message>` as one line on stderr; returns EXIT_USER_ERROR."""
  text = ' '.join(str(message).split())
  print(f'{prog}: error: {text}', file=sys.stderr, flush=True)
  return EXIT_USER_ERROR


def fail(prog: str, message) -> NoReturn:
  """`report(prog, message)`, then exits with status 2."""
  sys.exit(report(prog, message))


@contextlib.contextmanager
def user_errors(prog: str) -> Iterator[None]:
  """Turns an `errors.InputError` raised inside the block into `fail(prog, ...)`."""
  try:
    yield
  except errors.InputError as err:
    fail(prog, err)


class ArgumentParser(argparse.ArgumentParser):
  """argparse with the commands' error line: one `<prog>: error: ...` line, exit status 2
  (argparse's own prints the usage first)."""

  def error(self, message: str) -> NoReturn:
    fail(self.prog, f'{message} (see --help)')


def run_argparse(
  main: Callable[[argparse.Namespace], int | None],
  parser: argparse.ArgumentParser,
  argv: Sequence[str] | None = None,
) -> int:
  """Parses `argv` (default: sys.argv[1:]) and runs `main(args)`; returns the exit status.

  An `errors.InputError` from `main` is reported as one line, status 2; a bad argument exits 2
  from the parser (`ArgumentParser`).
  """
  args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
  try:
    return main(args) or 0
  except errors.InputError as err:
    return report(parser.prog, err)


class _DropLibraryInfo(logging.Filter):
  """Orbax/tensorstore INFO records, and JAX's "Unable to initialize backend 'tpu'" line."""

  _NOISY_PATHS = ('/orbax/', '/tensorstore/', '/etils/')

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.WARNING:
      return True
    if record.name.startswith('jax._src.xla_bridge'):
      return False
    return not any(n in record.pathname for n in self._NOISY_PATHS)


def quiet_libraries() -> None:
  """Drops the libraries' INFO records that every command would print; warnings stay."""
  logging.getLogger('absl').addFilter(_DropLibraryInfo())
  # JAX logs the backends it could not start (TPU on every CPU machine) at INFO on its own
  # logger, which absl's handler on the root logger prints.
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def module_flags_help(module: ModuleType) -> str:
  """The help text of the flags that `module` defines (absl's per-module listing)."""
  key = sys.argv[0] if module.__name__ == '__main__' else module.__name__
  # A config flag without a default would read "(default: 'None')", as if 'None' were a file.
  lines = flags.FLAGS.module_help(key).splitlines()
  return '\n'.join(line for line in lines if line.strip() != "(default: 'None')")


def help_text(module: ModuleType, prog: str) -> str:
  """The module's docstring (description, then usage) and its flags."""
  doc = (module.__doc__ or '').strip('\n')
  return f'{doc}\n\nflags:\n{module_flags_help(module)}\n\nTry --helpfull for every flag.'


def _exception_chain(err: BaseException) -> Iterator[BaseException]:
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    yield err
    err = err.__cause__ or err.__context__


def argv_value(argv, name: str) -> str | None:
  """The value of `--name V` or `--name=V` in argv (the last one)."""
  value = None
  for i, arg in enumerate(argv):
    if arg in (f'--{name}', f'-{name}') and i + 1 < len(argv):
      value = argv[i + 1]
    elif arg.startswith((f'--{name}=', f'-{name}=')):
      value = arg.split('=', 1)[1]
  return value


RUN_FOLDER_CONFIG = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'run_folder.py'
)


def with_run_config(argv: list[str]) -> list[str]:
  """`argv` with `--config configs/run_folder.py:WORKDIR` added when it has `--config.a.b=v`
  overrides and a --workdir but no --config: the overrides then apply to the run's own
  config.json (absl defines the override flags only for a config flag that is given)."""
  args = argv[1:]
  overrides = any(a.startswith('--config.') for a in args)
  has_config = any(a in ('--config', '-config') or a.startswith(('--config=', '-config='))
                   for a in args)  # fmt: skip
  workdir = argv_value(args, 'workdir')
  if not overrides or has_config or not workdir:
    return argv
  return [argv[0], f'--config={RUN_FOLDER_CONFIG}:{workdir}', *args]


def config_file_message(chain: list[BaseException]) -> str | None:
  """What is wrong with a config file that does not load (syntax, an import, no or a bad
  `get_config`), from the chain of the error raised while loading it; else None."""
  for e in chain:
    if isinstance(e, SyntaxError):
      return f'syntax error at line {e.lineno}: {e.msg}'
    if isinstance(e, ImportError):
      return f'cannot be loaded ({type(e).__name__}: {e})'
    if isinstance(e, AttributeError) and "'get_config'" in str(e):
      return 'defines no get_config() (a config file defines get_config(arg=None))'
    if isinstance(e, TypeError) and 'get_config()' in str(e):
      return f'{e} (a config file defines get_config(arg=None))'
    if isinstance(e, flags.Error) and 'other than None' in str(e):
      return 'get_config() returned None (a missing return?)'
  return None


class _DropConfigNoneWarning(logging.Filter):
  """ml_collections warns that get_config() returned None before the flag error says so."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'returned None' not in record.getMessage()


def flag_error_message(err: BaseException, argv) -> str | None:
  """A one-line message for an error raised while parsing flags, or None (a bug)."""
  chain = list(_exception_chain(err))
  inputs = [e for e in chain if isinstance(e, errors.InputError)]
  if inputs:
    # The deepest one: ml_collections re-raises a config file's error as the same type, with
    # the traceback in its message.
    config = argv_value(argv, 'config')
    return f'--config {config}: {inputs[-1]}' if config else str(inputs[-1])
  config = argv_value(argv, 'config')
  if config is not None:
    message = config_file_message(chain)
    if message:
      return f'--config {config}: {message}'
  if isinstance(err, flags.Error):
    return str(err).split('\n', 1)[0]
  missing_fields = [e for e in chain if isinstance(e, KeyError)]
  if isinstance(err, AttributeError | KeyError) and missing_fields:
    # ml_collections: an override --config.a.b=v whose path names no field (a locked config).
    # Its KeyError message is "'b'", optionally followed by a "Did you mean" line.
    message = str(missing_fields[-1].args[0]) if missing_fields[-1].args else ''
    field, _, hint = message.partition('\n')
    field = field.strip('\'"')
    overrides = [a.split('=', 1)[0] for a in argv if a.startswith('--config.')]
    # The override whose path holds the missing field (`--config.nosuch.key`: 'nosuch').
    named = [a for a in overrides if field in a.split('.')[1:]] or overrides
    where = named[0] if named else '--config.*'
    if not hint.strip():  # ml_collections puts its suggestion in one of the chained messages
      hints = [m for e in chain for m in [str(e)] if 'Did you mean' in m]
      hint = (
        hints[0][hints[0].index('Did you mean') :].split('\n')[0].rstrip('\'"') if hints else ''
      )
    return f'{where}: the config has no field {field!r}. {hint.strip()}'.strip()
  if isinstance(err, OSError):
    config = argv_value(argv, 'config')
    if config is not None:
      return f'--config {config}: the config file cannot be loaded (no such file?)'
  return None


def unloadable_config_message(name: str) -> str | None:
  """A one-line message when config flag `name` names a file that did not load, else None.

  ml_collections defers that error to the first use of the config (a traceback in `main`).
  """
  if name not in flags.FLAGS:
    return None
  value = flags.FLAGS[name].value
  if type(value).__name__ != '_ErrorConfig':
    return None
  error = str(object.__getattribute__(value, '_error'))
  reasons = [line.strip() for line in error.splitlines() if 'Errno' in line]
  reason = reasons[-1] if reasons else error.splitlines()[0]
  return f'--{name} {flags.FLAGS[name].config_filename}: cannot load the config file ({reason})'


def invalid_config_message(name: str, argv) -> str | None:
  """A one-line message when config flag `name` holds a value out of its range, else None.

  Names the override that set the value (`--config.train.batch_size=0: must be >= 1`), or the
  config file when the value is the file's own.
  """
  if name not in flags.FLAGS:
    return None
  config = flags.FLAGS[name].value
  if config is None or not hasattr(config, 'to_dict'):
    return None
  from issf_jax import config_validation

  for key, value, rule in config_validation.problems(config):
    flag = f'--{name}.{key}'
    if any(arg.split('=', 1)[0] == flag for arg in argv):
      return f'{flag}={value}: {rule}'
    filename = flags.FLAGS[name].config_filename
    return f'--{name} {filename}: {config_validation.describe(key, value, rule)}'
  return None


def _parse_flags(module: ModuleType, prog: str) -> Callable:
  def parse(argv):
    if any(arg in HELP_ARGS for arg in argv[1:]):
      print(help_text(module, prog))
      sys.exit(0)
    logging.getLogger('absl').addFilter(_DropConfigNoneWarning())
    try:
      rest = flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001  (decided by flag_error_message)
      message = flag_error_message(err, argv)
      if message is None:
        raise
      fail(prog, message)
    message = unloadable_config_message('config') or invalid_config_message('config', argv)
    if message:
      fail(prog, message)
    return rest

  return parse


def run_absl(main: Callable, module: ModuleType, prog: str) -> None:
  """`app.run(main)` with the module's own --help and one-line user errors (module doc)."""

  def guarded(argv):
    quiet_libraries()
    if len(argv) > 1:
      fail(prog, f'unexpected arguments {argv[1:]} (flags are --name=value; see --help)')
    with user_errors(prog):
      return main(argv)

  app.run(guarded, flags_parser=_parse_flags(module, prog))
