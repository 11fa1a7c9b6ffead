"""Deployment into the NATIX miner as it really runs (transformers ~4.45, timm 1.0.22, CPU):

* :mod:`roadwork.miner.detector`: the self-contained detector class the miner registers
  (``RoadworkTimmDetector``, registry name ``RoadworkTimm``) and its YAML (``configs/``);
* :mod:`roadwork.miner.decision`: the multi-view threshold and the paired single- vs multi-view
  comparison, decided on val_select (``multiview_decision``, ``multiview_report``, ``inference_config``,
  ``write_inference_config``);
* :mod:`roadwork.miner.manifest`: the bundle's manifest (names, ``model_sha256``, ``verify_manifest``),
  shared with the export;
* :mod:`roadwork.miner.latency`: per-query latency against the 9 s deadline
  (``measure_latency``, ``latency_warning``);
* :mod:`roadwork.miner.publish`: ``roadwork publish``.
"""
