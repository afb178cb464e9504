"""TFDS builders over W-TALC files in manual_dir: `issf_thumos14` and `issf_activitynet13`.

For users who prefer `tfds.load`; the trainer reads the shards of `prepare.py`. Nothing is
downloaded: put the W-TALC files (either layout, see `wtalc.py`) in a folder and pass it as
manual_dir:

  import data_pipelines.tfds_builders  # registers the builders
  ds = tfds.load('issf_thumos14/i3d', split='train', data_dir=DATA_DIR,
                 download_and_prepare_kwargs={'download_config':
                     tfds.download.DownloadConfig(manual_dir=W_TALC_DIR)})

Configs set the feature width: 'i3d' (D = 2048, the released features) and, for issf_thumos14,
'synthetic_tiny' / 'synthetic_small' / 'synthetic_full' (D = 64 / 256 / 2048, the scales of
`synthetic.py`). Another width:
`builder_kwargs={'config': WtalcConfig(name='d32', feature_dim=32)}`.

Splits 'train' / 'test' follow the subset rule of `source.py`. Each example:
  video_id           Text
  features           float32 [T, D]   (Encoding.BYTES: ~8x faster to prepare than the default)
  num_snippets       int32
  duration           float32 seconds
  labels             Sequence(ClassLabel)     video-level labels (labels_all)
  labels_multi_hot   float32 [C]
  segments           Sequence({segment: float32 [2] seconds, label: ClassLabel})   detection GT
"""

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines import class_names, source, wtalc
from issf_common import tensorflow_cpu  # noqa: F401  (hides GPUs from TF before TFDS touches it)


class WtalcConfig(tfds.core.BuilderConfig):
  """A feature width (and optionally which `<Name>-I3D-JOINTFeatures.npy` to read)."""

  def __init__(self, *, feature_dim: int, features_name: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self.feature_dim = feature_dim
    self.features_name = features_name


class _WtalcBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared body; subclasses set CLASS_NAMES and BUILDER_CONFIGS."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'W-TALC features read from manual_dir.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    'Place `<Name>-I3D-JOINTFeatures.npy` and its annotation .npy files (in `<Name>-Annotations/` '
    'or beside it) in manual_dir.'
  )
  CLASS_NAMES: tuple[str, ...] = ()
  # Set both paths: inferring them makes tfds 4.9.10 import `importlib_resources`, which Python
  # >= 3.9 environments need not have (ModuleNotFoundError in `code_path`).
  pkg_dir_path = epath.Path(__file__).parent
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    d = self.builder_config.feature_dim
    label = tfds.features.ClassLabel(names=list(self.CLASS_NAMES))
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          'video_id': tfds.features.Text(),
          'features': tfds.features.Tensor(
            shape=(None, d), dtype=np.float32, encoding=tfds.features.Encoding.BYTES
          ),
          'num_snippets': tfds.features.Scalar(dtype=np.int32),
          'duration': tfds.features.Scalar(dtype=np.float32),
          'labels': tfds.features.Sequence(label),
          'labels_multi_hot': tfds.features.Tensor(
            shape=(len(self.CLASS_NAMES),), dtype=np.float32
          ),
          'segments': tfds.features.Sequence(
            {
              'segment': tfds.features.Tensor(shape=(2,), dtype=np.float32),
              'label': tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
            }
          ),
        }
      ),
      homepage='https://github.com/sujoyp/wtalc-pytorch',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    checks = source.FeatureChecks(feature_dim=cfg.feature_dim)
    dataset = wtalc.read_wtalc(str(dl_manager.manual_dir), name=cfg.features_name, checks=checks)
    if dataset.classes != tuple(self.CLASS_NAMES):
      raise source.DataValidationError(
        f'classlist.npy under {dl_manager.manual_dir} does not match the {self.name} class list'
      )
    return {subset: self._generate_examples(dataset, subset) for subset in source.SUBSETS}

  def _generate_examples(self, dataset: source.SourceDataset, subset: str):
    for i, v in enumerate(dataset.videos):
      if v.subset != subset:
        continue
      x = dataset.load_features(i)
      yield (
        v.video_id,
        {
          'video_id': v.video_id,
          'features': x,
          'num_snippets': x.shape[0],
          'duration': v.duration,
          'labels': list(v.labels),
          'labels_multi_hot': dataset.multi_hot(v),
          'segments': [{'segment': [s, e], 'label': lab} for s, e, lab in v.segments],
        },
      )


class IssfThumos14(_WtalcBuilder):
  """THUMOS14 (W-TALC Thumos14reduced: 200 train / 212 test videos, 20 classes)."""

  CLASS_NAMES = class_names.THUMOS14
  BUILDER_CONFIGS = [
    WtalcConfig(name='i3d', feature_dim=2048, description='Released I3D features (D = 2048).'),
    WtalcConfig(name='synthetic_tiny', feature_dim=64, description='synthetic.py --scale tiny'),
    WtalcConfig(name='synthetic_small', feature_dim=256, description='synthetic.py --scale small'),
    WtalcConfig(name='synthetic_full', feature_dim=2048, description='synthetic.py --scale full'),
  ]


class IssfActivitynet13(_WtalcBuilder):
  """ActivityNet 1.3 in the W-TALC format (train = 'training', test = 'validation')."""

  CLASS_NAMES = class_names.ACTIVITYNET13
  BUILDER_CONFIGS = [
    WtalcConfig(name='i3d', feature_dim=2048, description='I3D features (D = 2048).'),
  ]
