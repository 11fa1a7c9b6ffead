"""Tests for roadwork.models: DINOv3 backbones, q/v adapters, heads, classifier (tiny CPU models)."""

from __future__ import annotations

import copy
import json

import pytest
import safetensors.torch
import torch
from torch import nn

from roadwork.models.adapters import (
    QVAdapterQKV,
    add_qv_adapters,
    explora_trainable,
    has_adapters,
    merge_adapters,
)
from roadwork.models.backbone import (
    allowed_backbones,
    apply_freeze_policy,
    count_parameters,
    count_trainable,
    create_backbone,
)
from roadwork.models.classifier import RoadworkClassifier, build_classifier, data_config
from roadwork.models.heads import DoRANHead, LinearHead

PLAIN = "vit_small_patch16_dinov3"
QKVB = "vit_small_patch16_dinov3_qkvb"
NAMES = [PLAIN, QKVB]
IMG = 32
D, DEPTH = 64, 3
TINY = dict(embed_dim=D, depth=DEPTH, num_heads=2)
# LayerScale starts at 1e-5 in DINOv3, which makes a random tiny model's attention branch almost
# invisible in the output; init_values=1 keeps the adapter tests sensitive.
TINY_LS = dict(TINY, init_values=1.0)


def tiny(name=PLAIN, seed=0, overrides=TINY, pooling="token", pretrained=None):
    torch.manual_seed(seed)
    return create_backbone(name, pretrained, overrides, pooling, IMG).eval()


def images(n=2, seed=123):
    return torch.randn(n, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))


def projection_loss(y):
    # A fixed random projection: sum() would be blind to anything before the final LayerNorm.
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    return (y * r).sum()


def assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------------------------
# backbone
# ---------------------------------------------------------------------------------------------


def test_rejects_non_dinov3_names():
    with pytest.raises(ValueError, match="vit_huge_plus_patch16_dinov3") as err:
        create_backbone("vit_base_patch16_224", None, {}, "token", IMG)
    assert "only timm DINOv3" in str(err.value)
    with pytest.raises(ValueError, match="pretrained"):  # tag given in the name
        create_backbone("vit_small_patch16_dinov3.lvd1689m", None, TINY, "token", IMG)
    assert {"vit_small_patch16_dinov3", "vit_huge_plus_patch16_dinov3_qkvb"} <= set(allowed_backbones())


@pytest.mark.parametrize("pooling", ["token", "avg", "max"])
def test_random_backbone_pooled_features(pooling):
    bb = tiny(pooling=pooling)
    assert bb.num_features == D and len(bb.blocks) == DEPTH
    assert bb.global_pool == pooling
    x = images()
    pooled = bb(x)
    assert pooled.shape == (2, D)
    tokens = bb.forward_features(x)  # (B, CLS + registers + patches, D)
    patches = tokens[:, bb.num_prefix_tokens :]
    # avg: timm skips the final norm in forward_features and norms the mean instead (fc_norm)
    expected = {"token": tokens[:, 0], "avg": bb.fc_norm(patches.mean(dim=1)), "max": patches.amax(dim=1)}[pooling]
    torch.testing.assert_close(pooled, expected)
    with pytest.raises(ValueError, match="pooling"):
        create_backbone(PLAIN, None, TINY, "mean", IMG)


def _meta_layout(sd: dict) -> dict:
    """Rewrite a timm DINOv3 state dict in Meta's original layout (what facebookresearch ships)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("attn.q_bias"):
            v_bias = sd[k.replace("q_bias", "v_bias")]
            out[k.replace("q_bias", "qkv.bias")] = torch.cat([v, torch.zeros_like(v), v_bias])
            continue
        if k.endswith("attn.v_bias"):
            continue
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v
    if not any(k.endswith("qkv.bias") for k in out):  # Meta's distilled models carry zero qkv biases
        for i in range(DEPTH):
            out[f"blocks.{i}.attn.qkv.bias"] = torch.zeros(3 * D)
    out["mask_token"] = torch.zeros(1, D)  # pretraining only, dropped by timm's converter
    out["rope_embed.periods"] = torch.ones(D // 2 // 4)  # recomputed buffer, dropped
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fmt", ["safetensors", "pth_timm", "pth_meta"])
def test_loads_local_weights_file(tmp_path, monkeypatch, name, fmt):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = tiny(name, seed=1)
    with torch.no_grad():  # non-zero biases so the q/v bias split is checked too
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        safetensors.torch.save_file(sd, str(path))
    elif fmt == "pth_timm":
        path = tmp_path / "w.pth"
        torch.save(sd, path)
    else:
        path = tmp_path / "meta.pth"
        torch.save(_meta_layout(sd), path)

    loaded = tiny(name, seed=2, pretrained=str(path))
    fresh = tiny(name, seed=2)
    assert_same_state(loaded, src)
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, loaded.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(loaded(images()), src(images()))


class _NotAllowlisted:  # pickled object that weights_only=True must refuse
    pass


def test_local_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=PLAIN) as err:
        create_backbone(PLAIN, str(tmp_path / "missing.safetensors"), TINY, "token", IMG)
    assert "huggingface-cli download" in str(err.value)

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny().state_dict(), "payload": _NotAllowlisted()}, evil)
    with pytest.raises(RuntimeError, match="weights_only"):
        create_backbone(PLAIN, str(evil), TINY, "token", IMG)

    wrong = tmp_path / "wrong.safetensors"  # weights of another size: strict load refuses
    safetensors.torch.save_file(tiny(overrides=dict(TINY, embed_dim=32)).state_dict(), str(wrong))
    with pytest.raises(RuntimeError, match="Could not load weights file"):
        create_backbone(PLAIN, str(wrong), TINY, "token", IMG)


def test_hub_download_failure_is_explained(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    hub_id = f"{PLAIN}.lvd1689m"
    with pytest.raises(RuntimeError) as err:
        create_backbone(PLAIN, hub_id, TINY, "token", IMG)
    msg = str(err.value)
    assert hub_id in msg and f"huggingface-cli download timm/{hub_id}" in msg and "local weights file" in msg
    with pytest.raises(RuntimeError, match=f"huggingface-cli download timm/{hub_id}"):  # True: default tag
        create_backbone(PLAIN, True, TINY, "token", IMG)
    with pytest.raises(ValueError, match="neither a local weights file"):
        create_backbone(PLAIN, "vit_base_patch16_dinov3.lvd1689m", TINY, "token", IMG)


@pytest.mark.parametrize("spec", [None, False, "none", "None", ""])
def test_no_pretrained_means_random_init(spec):
    a, b = tiny(seed=3, pretrained=spec), tiny(seed=3)
    assert_same_state(a, b)


def _dinov3_param_formula(dim, depth, hidden, swiglu, qkv_bias, patch=16, reg=4):
    mlp = 2 * (dim * hidden + hidden) + hidden * dim + dim if swiglu else dim * hidden + hidden + hidden * dim + dim
    block = 2 * dim + 4 * dim + 3 * dim * dim + dim * dim + dim + mlp + (2 * dim if qkv_bias else 0)
    #       gammas   norm1+2  qkv              proj
    return 3 * patch * patch * dim + dim + (1 + reg) * dim + depth * block + 2 * dim


def test_count_parameters_on_meta_device():
    n = count_parameters("vit_huge_plus_patch16_dinov3", {})
    assert n == 840_509_440 == _dinov3_param_formula(1280, 32, 5120, swiglu=True, qkv_bias=False)
    assert count_parameters("vit_huge_plus_patch16_dinov3_qkvb") == n + 32 * 2 * 1280
    assert count_parameters(PLAIN, TINY) == sum(p.numel() for p in tiny().parameters())
    assert count_parameters(PLAIN, TINY) == _dinov3_param_formula(D, DEPTH, 4 * D, swiglu=False, qkv_bias=False)


def test_freeze_policies():
    bb = tiny(QKVB)
    total = sum(p.numel() for p in bb.parameters())
    assert apply_freeze_policy(bb, "frozen", 0) == (0, total)
    assert apply_freeze_policy(bb, "full", 0) == (total, total)
    counts = apply_freeze_policy(bb, "last_n", 1)
    expected = {n for n, _ in bb.named_parameters() if n.startswith(f"blocks.{DEPTH - 1}.") or n.startswith("norm.")}
    assert {n for n, p in bb.named_parameters() if p.requires_grad} == expected
    assert counts.trainable == sum(p.numel() for n, p in bb.named_parameters() if n in expected)
    with pytest.raises(ValueError):
        apply_freeze_policy(bb, "last_n", DEPTH + 1)
    with pytest.raises(ValueError):
        apply_freeze_policy(bb, "partial", 1)


# ---------------------------------------------------------------------------------------------
# adapters
# ---------------------------------------------------------------------------------------------


def _perturb_B(bb, std=0.3):
    """LoRA-style inits start with B = 0 (no-op adapter); move B away from zero."""
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, QVAdapterQKV):
                if m.kind == "doran":
                    m.hyper.gen_b[-1].weight.normal_(0, std)
                else:
                    m.lora_B.normal_(0, std)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["lora", "dora", "doran"])
def test_qv_adapters_really_act(name, kind):
    bb = tiny(name, overrides=TINY_LS)
    x = images()
    base_model = copy.deepcopy(bb)
    y0 = bb(x)
    stock_keys = set(bb.state_dict())

    add_qv_adapters(bb, kind, rank=4, alpha=8, blocks=[0, 2])
    assert isinstance(bb.blocks[0].attn.qkv, QVAdapterQKV) and not isinstance(bb.blocks[1].attn.qkv, QVAdapterQKV)
    torch.testing.assert_close(bb(x), y0, atol=1e-6, rtol=0)  # B = 0: identity at init

    _perturb_B(bb)
    y1 = bb(x)
    assert (y1 - y0).abs().max() > 1e-2, "adapter does not change the output (bypassed?)"

    # only q and v rows move; k rows equal the base projection
    wrapper = bb.blocks[0].attn.qkv
    t = torch.randn(2, 5, D)
    out, ref = wrapper(t), wrapper.base(t)
    torch.testing.assert_close(out[..., D : 2 * D], ref[..., D : 2 * D])
    assert (out[..., :D] - ref[..., :D]).abs().max() > 1e-3 and (
        out[..., 2 * D :] - ref[..., 2 * D :]
    ).abs().max() > 1e-3

    # gradients: every adapter parameter gets a non-zero gradient, nothing else is trainable
    adapter_params = {
        f"blocks.{i}.attn.qkv.{n}"
        for i in (0, 2)
        for n, _ in bb.blocks[i].attn.qkv.named_parameters()
        if not n.startswith("base.")
    }
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable == adapter_params and adapter_params
    frozen_before = {n: p.detach().clone() for n, p in bb.named_parameters() if not p.requires_grad}
    adapter_before = {n: p.detach().clone() for n, p in bb.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in bb.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    projection_loss(bb(x)).backward()
    for n, p in bb.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"zero gradient for {n}"
        else:
            assert p.grad is None
    opt.step()
    for n, p in bb.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), f"frozen {n} changed"
        else:
            assert not torch.equal(p, adapter_before[n]), f"adapter {n} did not move"
    if kind == "doran":
        assert all((m.tau() > 0).all() for m in bb.modules() if isinstance(m, QVAdapterQKV))

    # merge: a stock timm model with the same function
    with torch.no_grad():
        y_adapted = bb(x)
    merge_adapters(bb)
    assert not has_adapters(bb)
    assert all(type(b.attn.qkv) is nn.Linear for b in bb.blocks)
    assert set(bb.state_dict()) == stock_keys
    assert all(b.attn.qkv_bias_separate == o.attn.qkv_bias_separate for b, o in zip(bb.blocks, base_model.blocks))
    torch.testing.assert_close(bb(x), y_adapted, atol=1e-5, rtol=0)
    fresh = tiny(name, overrides=TINY_LS, seed=5)  # merged weights load into a stock model
    fresh.load_state_dict(bb.state_dict())
    torch.testing.assert_close(fresh(x), y_adapted, atol=1e-5, rtol=0)


def test_qkvb_direct_weight_path_fails_loudly():
    """timm's _qkvb path F.linear(x, qkv.weight, bias) would bypass a wrapper: the adapter must not
    expose .weight, so that path raises instead of silently ignoring the adapter."""
    bb = add_qv_adapters(tiny(QKVB), "lora", rank=2, alpha=2, blocks=[0])
    attn = bb.blocks[0].attn
    assert attn.qkv_bias_separate is True and attn.q_bias is not None
    attn.qkv_bias_separate = False  # what timm does by default
    with pytest.raises(AttributeError):
        bb(images())


def test_adapters_survive_freeze_policy():
    bb = add_qv_adapters(tiny(QKVB), "dora", rank=2, alpha=2, blocks=[1])
    n_adapter = sum(p.numel() for p in bb.blocks[1].attn.qkv.adapter_parameters())
    assert apply_freeze_policy(bb, "frozen", 0).trainable == n_adapter
    assert not bb.blocks[1].attn.qkv.base.weight.requires_grad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("unfrozen, rank", [(1, 4), (2, 8)])
def test_explora_trainable_count(name, unfrozen, rank):
    bb = tiny(name)
    n = explora_trainable(bb, unfrozen_blocks=unfrozen, lora_rank=rank, alpha=rank)

    hidden = 4 * D
    qkv_bias = name == QKVB
    full_block = (
        (2 * D)
        + (2 * 2 * D)
        + (3 * D * D)
        + (D * D + D)
        + (D * hidden + hidden)
        + (hidden * D + D)
        + (2 * D if qkv_bias else 0)
    )
    #             gammas     norm1, norm2    qkv           proj          fc1                   fc2
    lora_block = 2 * (rank * D + D * rank) + 2 * 2 * D  # A, B for q and v; norm1 + norm2
    final_norm = 2 * D
    assert n == unfrozen * full_block + (DEPTH - unfrozen) * lora_block + final_norm
    assert n == count_trainable(bb).trainable

    named = dict(bb.named_parameters())
    for frozen in [
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "cls_token",
        "reg_token",
        "blocks.0.attn.qkv.base.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.mlp.fc1.weight",
        "blocks.0.gamma_1",
    ] + (["blocks.0.attn.q_bias", "blocks.0.attn.v_bias"] if qkv_bias else []):
        assert not named[frozen].requires_grad, frozen
    for trainable in [
        "norm.weight",
        "blocks.0.norm1.weight",
        "blocks.0.norm2.bias",
        "blocks.0.attn.qkv.lora_A",
        f"blocks.{DEPTH - 1}.attn.qkv.weight",
        f"blocks.{DEPTH - 1}.mlp.fc2.weight",
    ]:
        assert named[trainable].requires_grad, trainable


# ---------------------------------------------------------------------------------------------
# heads and classifier
# ---------------------------------------------------------------------------------------------


def test_linear_head_single_logit():
    head = LinearHead(D)
    x = torch.randn(4, D)
    assert head(x).shape == (4, 1)
    torch.testing.assert_close(head.as_linear()(x), head(x))


def test_doran_head():
    torch.manual_seed(0)
    head = DoRANHead(D, rank=4, hidden=16, noise_std=0.2, dropout=0.1)
    x = torch.randn(8, D)

    head.eval()
    with torch.no_grad():
        y_eval = head(x)
        assert y_eval.shape == (8, 1)
        assert torch.equal(head(x), y_eval)
        torch.testing.assert_close(head.as_linear()(x), y_eval)
        # magnitude initialised so that W == W0 + B A at init
        torch.testing.assert_close(head.weight(), head.base_weight + head.low_rank_update())

    head.train()
    assert not torch.equal(head(x), head(x))

    head.zero_grad()
    projection_loss(head(x)).backward()
    names = [n for n, _ in head.named_parameters()]
    assert {"magnitude", "tau_raw", "embed", "bias"} <= set(names)
    assert "base_weight" not in names  # frozen base direction is a buffer
    for n, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"zero gradient for {n}"

    # tau stays positive even when pushed hard towards zero
    opt = torch.optim.SGD([head.tau_raw], lr=100.0)
    for _ in range(5):
        opt.zero_grad()
        head.tau().sum().backward()
        opt.step()
        assert head.tau().item() > 0


HEAD_PARAMS = dict(rank=4, hidden=16, noise_std=0.1, dropout=0.0)  # one params section for both heads


@pytest.mark.parametrize("head_type, head_kwargs", [("linear", {}), ("linear", HEAD_PARAMS), ("doran", HEAD_PARAMS)])
def test_build_classifier(head_type, head_kwargs):
    torch.manual_seed(0)
    model = build_classifier(PLAIN, None, TINY, "token", IMG, head_type, head_kwargs).eval()
    x = images(3)
    logits = model(x)
    assert logits.shape == (3,)
    assert model.features(x).shape == (3, D)
    torch.testing.assert_close(logits, model.head(model.features(x))[:, 0])

    cfg = data_config(model)
    assert cfg["input_size"] == (3, IMG, IMG)
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 1.0
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406)) and cfg["std"] == pytest.approx((0.229, 0.224, 0.225))
    assert data_config(model.backbone) == cfg
    if head_type == "doran":
        assert isinstance(model.head, DoRANHead) and model.head.rank == 4 and model.head.noise_std == 0.1
    else:
        assert isinstance(model.head, LinearHead)


def test_classifier_rejects_multi_logit_heads():
    with pytest.raises(ValueError, match="single logit"):
        RoadworkClassifier(tiny(), LinearHead(D, num_classes=2))
    with pytest.raises(ValueError, match="head_type"):
        build_classifier(PLAIN, None, TINY, "token", IMG, "mlp", {})
    with pytest.raises(TypeError):
        build_classifier(PLAIN, None, TINY, "token", IMG, "linear", {"widht": 3})


@pytest.mark.parametrize("adapter", [None, {"kind": "dora", "rank": 2}])
def test_model_dir_round_trip(tmp_path, adapter):
    """save_model_dir -> load_trained rebuilds the same function (adapters included); model.json's
    preprocessing is the classifier's timm data config; backbone_weights load into a stock timm model."""
    import timm

    from roadwork.config import parse_params
    from roadwork.models.classifier import architecture, build_model
    from roadwork.models.model_dir import (
        backbone_weights,
        eval_data_config,
        load_trained,
        model_description,
        save_model_dir,
    )

    params = parse_params(
        {"model": {"backbone": PLAIN, "overrides": TINY_LS, "img_size": IMG, "head_type": "doran", "head": HEAD_PARAMS}}
    ).model
    torch.manual_seed(0)
    model = build_model(params)
    extra = {"best_epoch": 3}
    if adapter:
        add_qv_adapters(model.backbone, **adapter)
        _perturb_B(model.backbone)
        extra["adapter"] = adapter
    description = model_description(params, model, **extra)
    save_model_dir(tmp_path / "model", model, description, [{"split": "val_test", "id": "a", "label": 1, "logit": 0.5}])
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["logits.csv", "model.json", "model.safetensors"]

    loaded, read = load_trained(tmp_path / "model")
    assert read == json.loads(json.dumps(description))
    assert {k: read[k] for k in architecture(params)} == architecture(params)
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert eval_data_config(read) == data_config(model)

    stock = timm.create_model(PLAIN, num_classes=0, global_pool=params.pooling, img_size=IMG, **TINY_LS)
    if adapter:
        with pytest.raises(RuntimeError):  # unmerged adapter tensors are not timm's
            stock.load_state_dict(backbone_weights(tmp_path / "model"))
    else:
        stock.load_state_dict(backbone_weights(tmp_path / "model"))
        torch.testing.assert_close(stock.eval()(x), model.backbone(x), rtol=0, atol=0)
