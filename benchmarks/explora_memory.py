"""Per-GPU memory estimate of ExPLoRA self-supervised pre-training (train/ssl.py, train/student_teacher.py).

    python benchmarks/explora_memory.py                      # ViT-H/16+ preset, DINOv3 crops
    python benchmarks/explora_memory.py --global-size 224 --local-size 96 --batches 8,16,32

How the numbers are obtained (no GPU needed):

1. Parameter counts on the meta device (nothing allocated): the backbone with
   ``explora_trainable(unfrozen_blocks, lora_rank)`` applied, and the DINO head. Static bytes per
   GPU (every DDP rank holds all of them):
   - student weights, fp32 (frozen + trainable), and the DINO head;
   - EMA teacher: only its trainable tensors are copies (frozen ones are the student's own);
   - gradients, AdamW's two moments and DDP's gradient buckets: fp32, trainable tensors only.
2. Activations: the bytes autograd *saves for backward* during one student forward (DINO head
   and its fp32 log-softmax included), counted with ``torch.autograd.graph.saved_tensors_hooks``
   on the CPU under bf16 autocast, on 1- and 2-block models of the real width at the real crop
   sizes, at batch 1 and 2. Differences separate per-block from the rest and per-image bytes from
   per-forward constants (bf16 casts of frozen weights that linear layers save for backward). Each
   storage is counted once. Checkpointing (timm ``set_grad_checkpointing``: every block
   recomputed in backward) keeps only each block's fp32 input, plus one block's activations and
   weight casts while it is recomputed.
3. Peak ~= static + saved activations of the 2 global + N local crops (one forward each) + one
   block's activations again as backward workspace. The teacher forward (no grad) is transient
   and ends before the student's. Not included: the CUDA context and allocator fragmentation
   (budget ~1-3 GiB), NCCL buffers, the data loader. Attention is assumed flash/memory-efficient
   (no tokens^2 matrix), true on the GPUs the presets use.
"""

from __future__ import annotations

import argparse

import timm
import torch

from roadwork.models.adapters import explora_trainable
from roadwork.models.dino_head import DINOHead

GIB = 1024**3


def build(name: str, overrides: dict, unfrozen: int, rank: int, img_size: int) -> torch.nn.Module:
    backbone = timm.create_model(
        name, pretrained=False, num_classes=0, global_pool="token", img_size=img_size, **overrides
    )
    explora_trainable(backbone, unfrozen, rank)
    return backbone


def overrides(args) -> dict:
    """timm overrides of the architecture (``args.overrides``, e.g. gpu_check.py's tiny width); none on the command line."""
    return dict(getattr(args, "overrides", None) or {})


def counts(args) -> dict:
    with torch.device("meta"):
        backbone = build(args.backbone, overrides(args), args.unfrozen_blocks, args.lora_rank, args.global_size)
        head = DINOHead(backbone.num_features, args.prototypes, args.head_hidden, args.bottleneck, args.head_layers)
    params = list(backbone.parameters())
    return {
        "dim": backbone.num_features,
        "depth": len(backbone.blocks),
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "head": sum(p.numel() for p in head.parameters()),
    }


def saved_bytes(args, depth: int, unfrozen: int, size: int, batch: int) -> int:
    """Bytes autograd saves for backward in one student forward (backbone + head + log-softmax)."""
    torch.manual_seed(0)
    backbone = build(args.backbone, {**overrides(args), "depth": depth}, unfrozen, args.lora_rank, size)
    head = DINOHead(backbone.num_features, args.prototypes, args.head_hidden, args.bottleneck, args.head_layers)
    storages: dict[tuple[int, int], int] = {}
    parameters = {p.untyped_storage().data_ptr() for p in [*backbone.parameters(), *head.parameters()]}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:  # weights are counted with the static bytes
            storages[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    x = torch.randn(batch, 3, size, size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        tokens = backbone.forward_features(x)
        logits = head(tokens[:, 0])
        torch.log_softmax(logits.float() / 0.1, dim=-1).sum().backward()
    return sum(storages.values())


def activation_model(args, size: int) -> dict:
    """Per-image and per-forward saved bytes for one crop size, split into blocks and the rest."""
    m = {(d, u, b): saved_bytes(args, d, u, size, b) for d, u in ((1, 0), (2, 0), (1, 1)) for b in (1, 2)}
    per_image = {key: m[key + (2,)] - m[key + (1,)] for key in ((1, 0), (2, 0), (1, 1))}
    const = {key: m[key + (1,)] - per_image[key] for key in ((1, 0), (2, 0), (1, 1))}
    lora_img, lora_const = per_image[(2, 0)] - per_image[(1, 0)], const[(2, 0)] - const[(1, 0)]
    rest_img, rest_const = per_image[(1, 0)] - lora_img, const[(1, 0)] - lora_const
    full_img, full_const = per_image[(1, 1)] - rest_img, const[(1, 1)] - rest_const
    tokens = (size // 16) ** 2 + 5
    return {
        "tokens": tokens,
        "lora_block_img": lora_img,
        "lora_block_const": lora_const,
        "full_block_img": full_img,
        "full_block_const": full_const,
        "rest_img": rest_img,
        "rest_const": rest_const,
    }


def forward_bytes(model: dict, c: dict, args, images: int, checkpointing: bool) -> tuple[int, int]:
    """(saved bytes of one student forward over `images` crops, that forward's largest block)."""
    depth, unfrozen = c["depth"], args.unfrozen_blocks
    block_img = max(model["lora_block_img"], model["full_block_img"])
    block_const = max(model["lora_block_const"], model["full_block_const"])
    if checkpointing:  # each block keeps only its fp32 input
        saved = depth * images * model["tokens"] * c["dim"] * 4
    else:
        saved = (
            images * ((depth - unfrozen) * model["lora_block_img"] + unfrozen * model["full_block_img"])
            + (depth - unfrozen) * model["lora_block_const"]
            + unfrozen * model["full_block_const"]
        )
    saved += images * model["rest_img"] + model["rest_const"]
    return saved, images * block_img + block_const


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="vit_huge_plus_patch16_dinov3")
    ap.add_argument("--unfrozen-blocks", type=int, default=1)
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--global-size", type=int, default=256)
    ap.add_argument("--local-size", type=int, default=112)
    ap.add_argument("--local-crops", type=int, default=8)
    ap.add_argument("--prototypes", type=int, default=65536)
    ap.add_argument("--head-hidden", type=int, default=2048)
    ap.add_argument("--bottleneck", type=int, default=256)
    ap.add_argument("--head-layers", type=int, default=3)
    ap.add_argument("--batches", default="8,16,32,48,64", help="micro-batch sizes per GPU (images)")
    ap.add_argument("--gpu-gib", type=float, default=48.0)
    ap.add_argument("--reserve-gib", type=float, default=3.0, help="CUDA context, fragmentation, NCCL")
    args = ap.parse_args(argv)

    c = counts(args)
    trainable = c["trainable"] + c["head"]
    static = {
        "student weights (fp32)": (c["total"] + c["head"]) * 4,
        "EMA teacher (trainable copies)": trainable * 4,
        "gradients (fp32)": trainable * 4,
        "AdamW moments (fp32)": 2 * trainable * 4,
        "DDP gradient buckets": trainable * 4,
    }
    print(
        f"{args.backbone}: dim {c['dim']}, depth {c['depth']}, {c['total']:,} backbone parameters, "
        f"{c['trainable']:,} trainable with ExPLoRA (unfrozen_blocks={args.unfrozen_blocks}, "
        f"lora_rank={args.lora_rank}); DINO head {c['head']:,} ({args.prototypes} prototypes)"
    )
    for key, value in static.items():
        print(f"  {key:32s} {value / GIB:7.2f} GiB")
    static_total = sum(static.values())
    print(f"  {'static total':32s} {static_total / GIB:7.2f} GiB")

    models = {"global": activation_model(args, args.global_size), "local": activation_model(args, args.local_size)}
    print("\nactivations saved for backward, per image per crop (bf16 autocast; measured, see the docstring):")
    for kind, size in (("global", args.global_size), ("local", args.local_size)):
        m = models[kind]
        full = (
            (c["depth"] - args.unfrozen_blocks) * m["lora_block_img"]
            + args.unfrozen_blocks * m["full_block_img"]
            + m["rest_img"]
        )
        ckpt = c["depth"] * m["tokens"] * c["dim"] * 4 + m["rest_img"]
        print(
            f"  {kind} {size}px ({m['tokens']} tokens): {full / 2**20:8.1f} MiB, with checkpointing "
            f"{ckpt / 2**20:6.1f} MiB  (LoRA block {m['lora_block_img'] / 2**20:.2f}, "
            f"unfrozen block {m['full_block_img'] / 2**20:.2f} MiB)"
        )
    weight_casts = (c["depth"] - args.unfrozen_blocks) * models["global"][
        "lora_block_const"
    ] + args.unfrozen_blocks * models["global"]["full_block_const"]
    print(
        f"  + per student forward: bf16 weight casts saved for backward {weight_casts / GIB:.2f} GiB "
        f"(x2 forwards: globals, locals; not with checkpointing)"
    )

    print(
        f"\nper-GPU peak estimate ({args.local_crops} local crops; budget {args.gpu_gib:g} GiB, "
        f"{args.reserve_gib:g} GiB reserved):"
    )
    print(f"  {'micro-batch':>11s} {'checkpointing':>13s} {'activations':>12s} {'total':>9s}  fits")
    for batch in (int(b) for b in args.batches.split(",")):
        for checkpointing in (False, True):
            g, g_block = forward_bytes(models["global"], c, args, 2 * batch, checkpointing)
            lo, l_block = (
                forward_bytes(models["local"], c, args, args.local_crops * batch, checkpointing)
                if args.local_crops
                else (0, 0)
            )
            activations = g + lo + max(g_block, l_block)  # + one block recomputed / backward workspace
            total = static_total + activations
            fits = total / GIB + args.reserve_gib <= args.gpu_gib
            print(
                f"  {batch:11d} {'on' if checkpointing else 'off':>13s} {activations / GIB:9.2f} GiB "
                f"{total / GIB:6.2f} GiB  {'yes' if fits else 'no'}"
            )
    print(
        "\nGlobal batch = micro-batch x GPUs x explora.grad_accum_steps (the loss is averaged over the "
        "micro-batches, so accumulation reproduces a larger batch)."
    )


if __name__ == "__main__":
    main()
