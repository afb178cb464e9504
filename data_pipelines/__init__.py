"""Data for issf-jax: released formats -> validated shards -> numpy batches (docs/design.md §6).

Below the library, above `issf_common` (errors, TensorFlow): docs/design.md §1. Modules (only
those marked TF import TensorFlow, through `issf_common/tensorflow_cpu.py`, which hides every GPU
from it):
  source.py           the reader-independent view (VideoEntry, SourceDataset), validation errors,
                      the subset rule, the 25 fps / 16-frame time base
  wtalc.py            W-TALC reader (both layouts) and writer
  acmnet.py           ACM-Net reader and writer
  manifest.py         manifest.json / ground_truth.json, checksums, atomic writes
  shards.py           tf.train.Example encoding, shard writer, random-access record index (TF
                      only for the tf.data decode and, where installed, the faster writer)
  tfrecord.py         the Example wire format and TFRecord framing without TensorFlow
  prepare.py          the converter behind `issf-prepare` (launch/prepare.py)
  sampling.py         numpy index plans: epoch order, buckets, T_s sampling
  input_pipeline.py TF the tf.data pipeline: create_train_iterator, create_eval_iterator (TF is
                      imported when a pipeline is built; the planning, plan_steps, is numpy)
  numpy_pipeline.py   the same batches in numpy, where TensorFlow is not installed
  pipelines.py        which of the two feeds the trainer (select)
  resident.py         training features kept on the devices, batches gathered there
  tfds_builders.py TF TFDS builders issf_thumos14 / issf_activitynet13 over manual_dir
  synthetic.py        the synthetic THUMOS-shaped benchmark (the embedded default)
  synthetic_features.py  its feature renderer
  class_names.py      THUMOS14 and ActivityNet 1.3 class lists

Importing this package imports nothing else, so model code and tests never pay for TensorFlow;
without TensorFlow installed everything but the tf.data pipeline and the TFDS builders works
(docs/design.md §6.4).
"""
