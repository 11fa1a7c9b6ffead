"""The validators' synthetic challenges (SDXL t2i and i2i from BLIP-2 + LLM prompts), reproduced per split.

Its params: :class:`roadwork.synthesize_params.SynthesizeParams` (defaults = the validators' values, in the
config layer so that :mod:`roadwork.config` need not import this package). ``plan`` (which source gives which
child: a pure function of the split table), ``models`` (hub or tiny random-weight models), ``generate`` (the
resumable, rank-sharded run and the manifest).
"""
