"""The error types of bad user input, shared by the library, the data pipeline and the commands.

A command (`launch/cli.py`) prints an `InputError` as one line, `<command>: error: <message>`,
and exits with status 2, without a traceback: the message must name the file, video, flag or
config key and say what is wrong. Any other exception is a bug and keeps its traceback.

The subclasses also derive from the built-in type that callers already catch, so
`except FileNotFoundError` / `except ValueError` keep working.
"""

from __future__ import annotations


class InputError(Exception):
  """Bad user input: a path, a file's format, a flag or config value."""


class MissingFileError(InputError, FileNotFoundError):
  """A file or folder the user named (or that a run folder should hold) does not exist."""


class ConfigError(InputError, ValueError):
  """A config value that cannot work (with the data, the checkpoint, or another value)."""
