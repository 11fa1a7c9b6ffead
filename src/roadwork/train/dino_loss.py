"""The self-distillation losses of DINO / DINOv2 (facebookresearch/dinov2 ``dinov2/loss``).

* DINO: cross-entropy between the centred, sharpened teacher softmax of each global view and the
  student softmax of every *other* view (:func:`teacher_softmax`, :func:`updated_center`,
  :func:`dino_loss`);
* iBOT: the same per masked patch (:func:`ibot_loss`);
* KoLeo: the Kozachenko-Leonenko entropy regulariser on the student's embeddings (:func:`koleo_loss`).

Every loss is computed in float32 whatever the autocast precision of the forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def teacher_softmax(teacher_logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """Centering and sharpening: softmax((t - center) / temperature)."""
    return F.softmax((teacher_logits.float() - center) / temperature, dim=-1)


def updated_center(
    center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float, world_size: int = 1
) -> torch.Tensor:
    """center * m + batch_mean * (1 - m), the batch mean taken over all ranks."""
    batch_sum = teacher_logits.float().sum(dim=0, keepdim=True)
    if world_size > 1:
        torch.distributed.all_reduce(batch_sum)
    return center * momentum + batch_sum / (len(teacher_logits) * world_size) * (1 - momentum)


def dino_loss(
    student_logits: list[torch.Tensor], teacher_probs: list[torch.Tensor], student_temp: float
) -> torch.Tensor:
    """Mean over (student view v, teacher view t != v) of -sum(p_t * log_softmax(s_v / student_temp)),
    each term averaged over the batch. Student views: globals first (same order as the teacher's)."""
    total, terms = 0.0, 0
    for v, logits in enumerate(student_logits):
        log_p = F.log_softmax(logits.float() / student_temp, dim=-1)
        for t, probs in enumerate(teacher_probs):
            if t != v:
                total = total - (probs * log_p).sum(dim=-1).mean()
                terms += 1
    return total / terms


def ibot_loss(
    student_patch_logits: torch.Tensor, teacher_patch_probs: torch.Tensor, masks: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """iBOT (DINOv2 ``forward_masked``): per masked patch cross-entropy, averaged within each image,
    summed over images, divided by the number of global views (unmasked views count as 0).
    Patch rows are the masked patches in ``masks[masks]`` order."""
    ce = -(teacher_patch_probs * F.log_softmax(student_patch_logits.float() / student_temp, dim=-1)).sum(dim=-1)
    weight = (1 / masks.sum(dim=-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    return (ce * weight).sum() / masks.shape[0]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator (Sablayrolles et al. 2018), as DINOv2's KoLeoLoss:
    -mean_i log(||x_i - x_nn(i)|| + eps) over L2-normalised rows, nn = nearest other row."""
    x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-2.0)  # never one's own neighbour
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()
