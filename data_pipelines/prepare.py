"""Converts released I3D features (the W-TALC or the ACM-Net format) into the shard folder that
issf-train and issf-eval read: validated TFRecord shards per subset, the ground truth in the
ActivityNet format, and a manifest with the checksums of every file. A video that cannot be used
(wrong width, NaN/Inf, no snippets, an unknown label) stops the conversion with one line naming
the video and the file.

  issf-prepare --format wtalc --src DIR --out SHARDS_DIR        (the command: launch/prepare.py)
  prepare.convert('acmnet', DIR, SHARDS_DIR, classes=class_names.ACTIVITYNET13)

Every video is loaded, validated (width, NaN/Inf, T = 0, labels; T vs duration warns) and written
as one tf.train.Example (`shards.py`). The output is `<subset>-KKKKK-of-NNNNN.tfrecord` per subset,
`ground_truth.json` and, last, `manifest.json` (`manifest.py` lists its keys).

Crash safety: the old manifest is removed first and every file is written to `.partial` then
renamed, so an interrupted conversion leaves no manifest and nothing that loads. A rerun on the same
input writes the same bytes (no timestamps or absolute paths; Examples serialized
deterministically).
"""

from collections.abc import Sequence

from absl import logging

from data_pipelines import acmnet, class_names, source, wtalc
from data_pipelines import manifest as manifest_lib
from issf_common import errors, outputs, paths

SUBSET_RULE = (
  "W-TALC: 'training' -> train, 'test' -> test, 'validation' -> train (THUMOS14) or test "
  "(packages that also have 'training', i.e. ActivityNet); other subsets skipped. "
  'ACM-Net: split_train.txt -> train, split_test.txt -> test.'
)
NAMED_CLASS_LISTS = {'thumos14': class_names.THUMOS14, 'activitynet13': class_names.ACTIVITYNET13}


def resolve_classes(spec: str | None) -> tuple[str, ...] | None:
  """'thumos14' | 'activitynet13' | a text file with one class per line | None."""
  if spec is None:
    return None
  if spec in NAMED_CLASS_LISTS:
    return NAMED_CLASS_LISTS[spec]
  if not paths.is_file(spec):
    raise errors.MissingFileError(
      f'--classes {spec}: neither {sorted(NAMED_CLASS_LISTS)} nor a class-list file'
    )
  with paths.open_file(spec) as f:
    return tuple(line.strip() for line in f if line.strip())


def read_source(fmt: str, src: str, **kwargs) -> source.SourceDataset:
  if not paths.is_dir(src):
    raise errors.MissingFileError(f'--src {src}: no such folder')
  if fmt == 'wtalc':
    classes = kwargs.pop('classes', None)
    dataset = wtalc.read_wtalc(src, **kwargs)
    if classes is not None and tuple(classes) != dataset.classes:
      raise source.DataValidationError(
        f'classlist.npy under {src} does not match the requested class list'
      )
    return dataset
  if fmt == 'acmnet':
    return acmnet.read_acmnet(src, **kwargs)
  raise ValueError(f'unknown format {fmt!r}: expected wtalc or acmnet')


def _clean(out: str) -> None:
  """Removes what makes `out` look valid (the manifest) and leftovers of interrupted runs."""
  manifest = paths.path(out) / manifest_lib.MANIFEST
  if manifest.exists():
    manifest.unlink()
  for child in paths.path(out).iterdir():
    if child.name.endswith(manifest_lib.PARTIAL_SUFFIX):
      child.unlink()


def convert(
  fmt: str,
  src: str,
  out: str,
  *,
  name: str | None = None,
  classes: Sequence[str] | None = None,
  videos_per_shard: int = 64,
  num_shards: int | None = None,
  checks: source.FeatureChecks = source.FeatureChecks(),
) -> dict:
  """Converts one released dataset into a shard directory; returns the manifest.

  Args:
    fmt: 'wtalc' or 'acmnet'.
    src: the released folder (W-TALC: holds `<Name>-I3D-JOINTFeatures.npy`; ACM-Net: gt.json),
      local or a URL (`issf_common/paths.py`).
    out: the shard directory (created; local or a URL).
    name: W-TALC `<Name>` when src holds several features files; the dataset name otherwise.
    classes: expected class list (W-TALC: checked against classlist.npy; ACM-Net: the order).
    videos_per_shard: shard size when num_shards is None (64 THUMOS videos are ~170 MB).
    num_shards: shards per subset (capped at the subset's size).
    checks: the expected D (None: the first video's width) and the T vs floor(duration*25/16)
      warning tolerance.
  """
  kwargs = dict(checks=checks, classes=classes)
  if name is not None:
    kwargs['name'] = name
  dataset = read_source(fmt, src, **kwargs)
  if not dataset.videos:  # nothing would be written but a manifest of 0 videos and D=None
    subsets = sorted({str(v['subset']) for v in dataset.skipped})
    raise source.DataValidationError(
      f'{src}: no video to convert: {len(dataset.skipped)} in subsets outside '
      f'{list(source.SUBSETS)} ({subsets[:5]}), {len(dataset.missing)} without features'
    )
  # Import here: TF costs ~2 s (more on a loaded machine); bad flags and a bad --src fail first.
  from data_pipelines import shards

  if paths.absolute(out) == paths.absolute(src):
    raise errors.InputError(f'--out {out}: must differ from --src')
  created = not paths.exists(out)
  paths.makedirs(out)
  try:
    return _convert(dataset, out, shards, videos_per_shard, num_shards)
  except BaseException as err:
    if created:  # a conversion that fails leaves no folder it made (a video fails validation)
      try:
        paths.path(out).rmtree()
      except OSError:
        pass
    if isinstance(err, OSError) and not isinstance(err, errors.InputError):  # a full disk
      raise outputs.OutputError(f'--out {out}: cannot be written ({err.strerror or err})') from None
    raise


def _convert(dataset, out: str, shards, videos_per_shard: int, num_shards: int | None) -> dict:
  """`convert` into the existing folder `out` (`shards`: the shard writer module)."""
  _clean(out)

  tables, shard_lists, written = {}, {}, set()
  for subset in source.SUBSETS:
    positions = [i for i, v in enumerate(dataset.videos) if v.subset == subset]
    ids = [dataset.videos[i].video_id for i in positions]
    if len(set(ids)) != len(ids):
      dup = sorted({v for v in ids if ids.count(v) > 1})[:5]
      raise source.DataValidationError(f'duplicate video ids in subset {subset}: {dup}')
    table = []

    def make_example(k: int, positions=positions, table=table, subset=subset) -> bytes:
      entry = dataset.videos[positions[k]]
      x = dataset.load_features(positions[k])
      table.append(
        {
          'video_id': entry.video_id,
          'num_snippets': int(x.shape[0]),
          'duration': entry.duration,
          'fps': source.FPS,
          'stride': source.STRIDE,
        }
      )
      return shards.encode_example(
        x,
        dataset.multi_hot(entry),
        video_id=entry.video_id,
        video_index=k,
        duration=entry.duration,
        subset=subset,
        fps=source.FPS,
        stride=source.STRIDE,
      )

    n_shards = num_shards or -(-len(positions) // videos_per_shard)
    shard_lists[subset] = shards.write_subset(out, subset, len(positions), make_example, n_shards)
    written.update(s['file'] for s in shard_lists[subset])
    tables[subset] = table
    logging.info('%s: %d videos in %d shards', subset, len(table), len(shard_lists[subset]))

  for child in paths.path(out).iterdir():  # Shards of an earlier run with another shard count.
    if manifest_lib.SHARD_RE.match(child.name) and child.name not in written:
      child.unlink()

  gt_bytes = manifest_lib.json_bytes(manifest_lib.ground_truth(dataset))
  manifest_lib.atomic_write_bytes(paths.join(out, manifest_lib.GROUND_TRUTH), gt_bytes)
  files = []
  for path in dataset.source_files:
    files.append(
      {
        'path': paths.relative(path, dataset.root),
        'sha256': manifest_lib.sha256_file(path),
        'bytes': paths.size(path),
      }
    )
  manifest = {
    'format_version': manifest_lib.FORMAT_VERSION,
    'name': dataset.name,
    'source_format': dataset.source_format,
    'classes': list(dataset.classes),
    'num_classes': len(dataset.classes),
    'feature_dim': dataset.feature_dim,
    'fps': source.FPS,
    'stride': source.STRIDE,
    'subset_rule': SUBSET_RULE,
    'counts': {subset: len(tables[subset]) for subset in source.SUBSETS},
    'shards': shard_lists,
    'ground_truth': {
      'file': manifest_lib.GROUND_TRUTH,
      'sha256': manifest_lib.sha256_file(paths.join(out, manifest_lib.GROUND_TRUTH)),
    },
    'source_files': files,
    'missing_videos': dataset.missing,
    'skipped_videos': dataset.skipped,
    'length_mismatches': list(dataset.length_mismatches.values()),
    'videos': tables,
  }
  manifest_lib.atomic_write_bytes(
    paths.join(out, manifest_lib.MANIFEST), manifest_lib.json_bytes(manifest)
  )
  logging.info(
    'wrote %s: %s, %d missing, %d length warnings',
    out,
    manifest['counts'],
    len(dataset.missing),
    len(dataset.length_mismatches),
  )
  return manifest
