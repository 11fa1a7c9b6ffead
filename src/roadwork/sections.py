"""The base of every params section and the split names: shared by :mod:`roadwork.config` and the
sections defined in their own modules (:mod:`roadwork.synthesize_params`), which config imports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

MAX_STRING = 4096  # longest string param: params are copied into dvc.lock, a 10 MB one would be too

SPLITS = ("train", "val_select", "val_calib", "val_test")


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False, str_max_length=MAX_STRING
    )
