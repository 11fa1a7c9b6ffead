"""The validators' synthetic challenges (SDXL t2i and i2i from BLIP-2 + LLM prompts), reproduced per split.

``params`` (:class:`SynthesizeParams`, defaults = the validators' values), ``plan`` (which source
gives which child: a pure function of the split table), ``models`` (hub or tiny random-weight
models), ``generate`` (the resumable, rank-sharded run and the manifest).
"""
