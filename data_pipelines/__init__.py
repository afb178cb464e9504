"""Data for issf-jax: released formats -> validated shards -> numpy batches (docs/design.md §6).

Below the library, above `issf_common` (errors, TensorFlow): docs/design.md §1. Modules (only
those marked TF import TensorFlow, through `issf_common/tensorflow_cpu.py`, which hides every GPU
from it):
  source.py           the reader-independent view (VideoEntry, SourceDataset), validation errors,
                      the subset rule, the 25 fps / 16-frame time base
  wtalc.py            W-TALC reader (both layouts) and writer
  acmnet.py           ACM-Net reader and writer
  manifest.py         manifest.json / ground_truth.json, checksums, atomic writes
  shards.py      TF   tf.train.Example encoding, shard writer, random-access record index
  prepare.py     TF   the converter behind `issf-prepare` (launch/prepare.py)
  sampling.py         numpy index plans: epoch order, buckets, T_s sampling
  input_pipeline.py TF the tf.data pipeline: create_train_iterator, create_eval_iterator
  tfds_builders.py TF TFDS builders issf_thumos14 / issf_activitynet13 over manual_dir
  synthetic.py        the synthetic THUMOS-shaped benchmark (the embedded default)
  synthetic_features.py  its feature renderer
  class_names.py      THUMOS14 and ActivityNet 1.3 class lists

Importing this package imports nothing else, so model code and tests never pay for TensorFlow.
"""
