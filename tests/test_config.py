"""params.yaml is validated before any work, and errors name the key and the expected form."""

from pathlib import Path

import pytest
import yaml

from roadwork.config import ConfigError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_are_valid():
    load_params(REPO / "params.yaml")


def test_every_section_of_the_schema_is_in_params_yaml():
    # params.yaml is the documentation of the knobs: nothing configurable hides in code defaults.
    from roadwork.config import Params

    def leaves(model_cls, data, prefix=""):
        for name, field in model_cls.model_fields.items():
            key = f"{prefix}{name}"
            assert name in data, f"params.yaml lacks {key}"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, __import__("pydantic").BaseModel):
                leaves(annotation, data[name], key + ".")

    leaves(Params, repo_params())


@pytest.mark.parametrize(
    "patch, key, expected",
    [
        ({"data": {"sourse": "synthetic"}}, "data.sourse", "unknown key"),
        ({"dedup": {"max_hamming": "ten"}}, "dedup.max_hamming", "valid integer"),
        ({"dedup": {"max_hamming": 65}}, "dedup.max_hamming", "less than or equal to 64"),
        ({"data": {"synthetic": {"width": -5}}}, "data.synthetic.width", "greater than or equal to 32"),
        ({"data": {"limit": 0}}, "data.limit", "greater than 0"),
        ({"data": {"source": "s3"}}, "data.source", "'synthetic', 'local' or 'natix'"),
        ({"split": {"ratios": {"train": 0.7}}}, "split.ratios", "must sum to 1, got 1.1"),
        ({"dedup": {"label_conflict": "keep"}}, "dedup.label_conflict", "'drop' or 'majority'"),
        ({"data": {"source": "local", "local": {"path": ""}}}, "data.local.path", "at least 1 character"),
        ({"model": {"img_size": 72, "overrides": {}}}, "model", "multiple of the patch size 16, got 72"),
        ({"model": {"img_size": 68, "overrides": {"patch_size": 8}}}, "model", "multiple of the patch size 8, got 68"),
        ({"explora": {"epochs": 1, "warmup_epochs": 1}}, "explora", "explora.warmup_epochs (1) must be smaller than explora.epochs (1)"),
    ],
)
def test_invalid_values_fail_naming_the_key(patch, key, expected):
    with pytest.raises(ConfigError) as caught:
        parse_params(patch, "params.yaml")
    message = str(caught.value)
    assert f"  {key}" in message and expected in message, message


def test_img_size_follows_the_patch_size_override():
    assert parse_params({"model": {"img_size": 72, "overrides": {"patch_size": 8}}}).model.img_size == 72


def test_yaml_exponent_floats_are_accepted():
    # PyYAML reads 3e-4 as a string; DVC's -S writes exactly that. It must still validate as a number.
    parsed = parse_params(yaml.safe_load("data: {synthetic: {positive_fraction: 2e-1}}"))
    assert parsed.data.synthetic.positive_fraction == pytest.approx(0.2)


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(bad)


def test_code_defaults_are_the_params_yaml_values():
    """One source of defaults: a section built in code (Params(), TrainParams(), ...) is the embedded
    default that params.yaml spells out, key for key."""
    from roadwork.config import Params

    assert Params() == load_params(REPO / "params.yaml")
