"""The ground floor of issf-jax: what the data layer and the library both need (docs/design.md §1).

  errors.py           the user-input error types (one line and exit status 2 in the commands)
  paths.py            run and shard folders as local paths or URLs (gs://...), through etils.epath
  tensorflow_cpu.py   the one place TensorFlow is imported, with every GPU hidden from it
  tensorflow_optional.py  that TensorFlow, or None where it is not installed (the TF-free paths)

It imports nothing of the project, and importing this package imports nothing else (TensorFlow
loads only when `tensorflow_cpu` is imported).
"""
