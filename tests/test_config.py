"""params.yaml is validated before any work, and errors name the key and the expected form."""

import pytest
import yaml
from kit.repo import REPO

from roadwork.config import ConfigError, load_params, parse_params


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
        (
            {"explora": {"epochs": 1, "warmup_epochs": 1}},
            "explora",
            "explora.warmup_epochs (1) must be smaller than explora.epochs (1)",
        ),
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


@pytest.mark.parametrize(
    "patch, line",
    [
        ({"data": {"limit": True}}, "  data.limit: Input should be a valid integer (got True)"),
        ({"train": {"batch_size": True}}, "  train.batch_size: Input should be a valid integer (got True)"),
        ({"train": {"epochs": 2.5}}, "  train.epochs: Input should be a valid integer (got 2.5)"),
        ({"train": {"lr": float("inf")}}, "  train.lr: Input should be a finite number (got inf)"),
        ({"train": {"lr": "inf"}}, "  train.lr: Input should be a finite number (got 'inf')"),
        ({"train": {"weight_decay": float("nan")}}, "  train.weight_decay: Input should be a finite number (got nan)"),
        ({"train": {"lr": True}}, "  train.lr: Value error, expected a number, not a boolean (true) (got True)"),
        ({"train": {"balanced_sampler": 1}}, "  train.balanced_sampler: Input should be a valid boolean (got 1)"),
        (
            {"data": {"local": {"class_folders": {"maybe": 2}}}},
            "  data.local.class_folders.maybe: Input should be 0 or 1 (got 2)",
        ),
        (
            {"data": {"local": {"class_folders": {"yes": True}}}},
            "  data.local.class_folders.yes: Value error, expected a number, not a boolean (true) (got True)",
        ),
        ({"model": {"overrides": {"depth": True}}}, "model.overrides.depth"),
    ],
)
def test_booleans_infinities_and_stray_labels_are_refused(patch, line):
    """YAML `true` used to pass as 1 (data.limit, train.batch_size), `.inf` as a learning rate, and a
    class folder mapped to 2 failed only when download met it."""
    with pytest.raises(ConfigError) as caught:
        parse_params(patch, "params.yaml")
    assert line in str(caught.value), str(caught.value)


def test_a_huge_string_param_is_refused_with_a_short_message():
    """A 10 MB string used to land in dvc.lock; the message shows its start and length, not the string."""
    with pytest.raises(ConfigError) as caught:
        parse_params({"export": {"submitted_by": "x" * 10_000_000}}, "params.yaml")
    message = str(caught.value)
    assert "export.submitted_by: String should have at most 4096 characters" in message
    assert "(10000000 characters)" in message and len(message) < 400


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    """A "billion laughs" params.yaml: nine levels of aliases expand to 10^9 strings. DVC itself parses
    params.yaml before any stage runs (see README, Reliability); our own loader refuses aliases at once."""
    import time

    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = tmp_path / "params.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_params(bomb)
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"{bomb}: not valid YAML: line 2: alias *a0 refused; params.yaml may not use YAML "
        "anchors and aliases (write the value out)"
    )


def test_a_parameter_file_that_is_not_a_regular_file_is_refused(tmp_path):
    import os

    os.mkfifo(tmp_path / "params.yaml")  # reading it would block
    with pytest.raises(ConfigError, match="parameter file is not a regular file"):
        load_params(tmp_path / "params.yaml")
