"""Filter-selection criteria for one-shot structured pruning, and the criteria study's protocol.

Study 2 of the project follows Lajić, Peer and Emeršič, *Exploring the differences in pruning methods
for convolutional neural networks* (ROSUS 2025): train (or load) a model, remove 40 % of the filters of
every convolution in one shot with one of several criteria, fine-tune, and compare the accuracy before
pruning, right after pruning and after fine-tuning.

Units are conv groups (:func:`helpers.pruning.find_structure`; in a ResNet the residual-coupled
convolutions that must lose the same channels). A group of ``C`` channels loses exactly
``round(sparsity * C)`` (:func:`helpers.pruning.units_removed`, at least one kept), in every member:
the channels are zeroed (:func:`helpers.pruning.filters.mask_filters`) and the model compacted
(:func:`helpers.pruning.compact`), so the pruned logits equal the masked ones.

Criteria (:data:`CRITERIA`); a lower score, or an earlier pick, is removed first; scores are summed
over a group's members:

- ``l1``: the filter's L1 norm ``sum |w|`` (Li et al., ICLR 2017).
- ``bn_slimming``: ``|gamma|`` of the BatchNorm after the convolution (Liu et al., *network slimming*,
  ICCV 2017, who first train with the penalty ``1e-4 * sum |gamma|``: pass :func:`bn_l1_penalty` as
  ``penalty`` to :func:`finetune`). No BatchNorm (plain ``vgg16``): :class:`MissingBatchNormError`.
- ``taylor``: first-order Taylor importance (Molchanov et al., CVPR 2019; its BatchNorm-gate variant
  equals the activation form of Molchanov et al., ICLR 2017). Zeroing channel ``c``'s output ``z_c``
  changes the cross-entropy ``L`` of a calibration batch by ``-sum_positions dL/dz_c * z_c`` to first
  order; the score is the square of that sum (over the group's members, which vanish together),
  averaged over calibration batches. With a BatchNorm after the convolution the sum is exactly
  ``dL/dgamma * gamma + dL/dbeta * beta``, without one ``sum dL/dw * w + dL/db * b`` over the filter.
  Gradients are taken in eval mode (running statistics used and left untouched).
- ``random``: uniform scores from a seeded generator (the reference every criterion should beat).
- ``greedy_output_norm``: ThiNet's greedy selection (Luo et al., ICCV 2017), Lajić et al.'s "greedy".
  The layers that read the group's channels are its *consumers* (the next convolution, every ResNet
  block reading the residual stream, the linear layer after the last convolution). They are linear in
  their input, so removing channels ``T`` changes their output by ``sum_{c in T} Y_c``, ``Y_c`` being
  channel ``c``'s contribution alone (bias excluded). From ``T = {}``, the channel ``j`` minimising
  ``||sum_{c in T + {j}} Y_c||^2`` (squared Frobenius norm, summed over consumers) is added until the
  count is reached; with ``G[c, d] = <Y_c, Y_d>`` that is ``cost(T) + 2 sum_{c in T} G[c, j] + G[j, j]``,
  one vector update per step. Removed channels can cancel each other, so this is not ranking
  ``||Y_c||`` once. ``Y`` comes from a calibration batch in eval mode; beyond ``max_positions`` output
  positions (image x pixel) a consumer uses a seeded random subset, ThiNet-style, with ``G`` scaled up.

  ``greedy_rescore`` (:data:`GREEDY_RESCORE`): Lajić et al. score a filter "after the removal of the
  previous filter". ``once`` (default, faster) measures every group's ``Y`` on the unpruned network;
  the Gram update then re-scores exactly wherever consumers read the channels directly (a plain
  convolution; checked against forward passes in the tests), but misses how removals in one layer
  change the activations later layers are scored on. ``each`` prunes groups in model order, each on
  the network with earlier picks masked, every pick scored on activations measured after the previous
  removal: one calibration pass per group for a single convolution (where the Gram update is exact);
  for a residual group, read at several depths of the stream, one pass per removal, channel ``j``
  costing ``||D - Y_j||^2`` over the consumers, with ``D`` the measured change of their outputs since
  the group's first removal and ``Y_j`` taken from the re-measured inputs (first order in the blocks
  between, exact at each consumer).

Protocol (:func:`run_criteria_experiment`): test accuracy before pruning, right after pruning and after
:func:`finetune` -- SGD, momentum 0.9, learning rate 1e-3, 1e-4, 1e-5 over equal thirds of the epochs,
batch 32, random flips and rotations (Lajić et al. do not state the angle; 15 degrees here), 10 epochs
for up to 10 classes and 20 above.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from helpers.pruning import count_macs, find_structure, units_removed
from helpers.pruning.filters import Consumer, find_consumers, mask_filters, prune_filters
from helpers.pruning.masks import group_l1_norm, top_k_mask
from helpers.pruning.structure import Structure, channel_tensors, eval_mode
from helpers.train import Data, evaluate, train_one_epoch
from helpers.transforms import augment_batch

__all__ = [
    "CRITERIA",
    "GREEDY_RESCORE",
    "Consumer",
    "UnknownCriterionError",
    "MissingBatchNormError",
    "find_consumers",
    "filter_scores",
    "greedy_output_norm_order",
    "select_filters",
    "mask_filters",
    "prune_filters",
    "bn_l1_penalty",
    "lr_for_epoch",
    "default_finetune_epochs",
    "finetune",
    "run_criteria_experiment",
]

CRITERIA: tuple[str, ...] = ("greedy_output_norm", "l1", "bn_slimming", "random", "taylor")
#: How often ``greedy_output_norm`` re-measures the activations it scores on (see the module docstring).
GREEDY_RESCORE: tuple[str, ...] = ("once", "each")

# Entries of one chunk of ThiNet contributions (channels x positions x consumer outputs): bounds memory.
_CHUNK_ELEMENTS = 1 << 24


class UnknownCriterionError(ValueError):
    """A criterion name that is not one of :data:`CRITERIA`."""


class MissingBatchNormError(ValueError):
    """``bn_slimming`` asked of a convolution that has no BatchNorm after it."""


def _check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise UnknownCriterionError(f"unknown criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")


# ------------------------------------------------------------------------------------------- scores


def _calibration_parts(calibration: Any, need_labels: bool, criterion: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if calibration is None:
        raise ValueError(f"criterion {criterion!r} needs calibration data; pass calibration=(images, labels)")
    x, y = (calibration, None) if isinstance(calibration, torch.Tensor) else calibration
    if need_labels and y is None:
        raise ValueError(f"criterion {criterion!r} needs labels; pass calibration=(images, labels), not images alone")
    return x, y


def _bn_gamma_scores(model: nn.Module, structure: Structure, model_name: str | None) -> dict[str, torch.Tensor]:
    scores = {}
    for group in structure.conv_groups:
        total = torch.zeros(group.channels)
        for conv_name, norm_name in zip(group.convs, group.norms):
            norm = model.get_submodule(norm_name) if norm_name is not None else None
            if norm is None or norm.weight is None:
                label = model_name or type(model).__name__
                raise MissingBatchNormError(
                    f"bn_slimming ranks filters by the |gamma| of the BatchNorm after each convolution, but conv "
                    f"{conv_name!r} of model {label} has no (affine) BatchNorm after it; use a model with BatchNorm "
                    "(vgg16_bn instead of vgg16) or another criterion (l1, taylor, greedy_output_norm, random)"
                )
            total += norm.weight.detach().abs().float().cpu()
        scores[group.name] = total
    return scores


def _taylor_scores(
    model: nn.Module, structure: Structure, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> dict[str, torch.Tensor]:
    params: list[torch.Tensor] = []
    terms: list[tuple[str, int, int]] = []  # (group, index into params, count)
    for group in structure.conv_groups:
        for conv_name, norm_name in zip(group.convs, group.norms):
            pieces = channel_tensors(model, conv_name, norm_name)
            if norm_name is not None and model.get_submodule(norm_name).weight is not None:
                pieces = pieces[-2:]  # the BatchNorm's gamma and beta
            terms.append((group.name, len(params), len(pieces)))
            params += pieces
    scores = {group.name: torch.zeros(group.channels, dtype=torch.float64) for group in structure.conv_groups}
    batches = 0
    with eval_mode(model), torch.enable_grad():
        for start in range(0, x.shape[0], batch_size):
            loss = F.cross_entropy(model(x[start : start + batch_size]), y[start : start + batch_size])
            grads = torch.autograd.grad(loss, params)
            first_order = {name: torch.zeros_like(s) for name, s in scores.items()}
            for name, index, count in terms:
                total = 0.0
                for p, g in zip(params[index : index + count], grads[index : index + count]):
                    pg = (p.detach() * g).double()
                    total = total + (pg if pg.ndim == 1 else pg.flatten(1).sum(1))
                first_order[name] += total.cpu()
            for name in scores:
                scores[name] += first_order[name].square()
            batches += 1
    return {name: (s / max(batches, 1)).float() for name, s in scores.items()}


def filter_scores(
    model: nn.Module,
    criterion: str,
    *,
    calibration: tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    structure: Structure | None = None,
    batch_size: int = 64,
    model_name: str | None = None,
) -> dict[str, torch.Tensor]:
    """Per conv group, one importance score per channel (the lowest are removed first).

    Args:
        model: the network (not modified).
        criterion: ``l1``, ``bn_slimming``, ``taylor`` or ``random`` (``greedy_output_norm`` is not a
            score but an order: :func:`greedy_output_norm_order`).
        calibration: ``(images, labels)`` on the model's device; needed by ``taylor``.
        seed: seeds ``random``.
        structure: the model's structure; found when ``None``.
        batch_size: calibration images per forward / backward pass (``taylor``).
        model_name: the model's name, for error messages.

    Returns:
        conv group name -> float tensor ``[C]`` on the CPU.
    """
    _check_criterion(criterion)
    if criterion == "taylor":
        x, y = _calibration_parts(calibration, True, criterion)
        return _taylor_scores(model, structure or find_structure(model, x[:2]), x, y, batch_size)
    structure = structure or find_structure(model)
    if criterion == "l1":
        return {g.name: group_l1_norm(model, g).detach().float().cpu() for g in structure.conv_groups}
    if criterion == "bn_slimming":
        return _bn_gamma_scores(model, structure, model_name)
    if criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        return {g.name: torch.rand(g.channels, generator=generator) for g in structure.conv_groups}
    raise ValueError(
        "greedy_output_norm has no per-filter score (each pick depends on the previous ones); "
        "use greedy_output_norm_order or select_filters"
    )


# ----------------------------------------------------------------------------- greedy (ThiNet) order


@torch.no_grad()
def _consumer_inputs(model: nn.Module, names: set[str], x: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    handles = []
    for name in names:
        def hook(_module, inputs, _output, name=name):
            captured[name].append(inputs[0].detach())

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with eval_mode(model):
            for start in range(0, x.shape[0], batch_size):
                model(x[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in captured.items()}


def _consumer_rows(consumer: nn.Module, inputs: torch.Tensor, channels: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A consumer's input as ``rows[m, c, k]`` (positions m = image x output pixel, k taps or features
    per channel) and its weight as ``w[o, c, k]``, so its bias-free output is ``einsum(mck,ock->mo)``."""
    weight = consumer.weight.detach().float()
    if isinstance(consumer, nn.Conv2d):
        k = weight.shape[2] * weight.shape[3]
        cols = F.unfold(inputs.float(), consumer.kernel_size, consumer.dilation, consumer.padding, consumer.stride)
        n, _, p = cols.shape
        rows = cols.view(n, channels, k, p).permute(0, 3, 1, 2).reshape(n * p, channels, k)
        return rows, weight.view(weight.shape[0], channels, k)
    rows = inputs.float().reshape(inputs.shape[0], channels, block)
    return rows, weight.view(weight.shape[0], channels, block)


def _contribution_gram(
    consumer: nn.Module, inputs: torch.Tensor, channels: int, block: int, max_positions: int, generator: torch.Generator
) -> torch.Tensor:
    """``G[c, d] = <Y_c, Y_d>`` of one consumer's per-channel output contributions (float64, CPU)."""
    rows, w = _consumer_rows(consumer, inputs, channels, block)
    total = rows.shape[0]
    scale = 1.0
    if total > max_positions:
        keep = torch.randperm(total, generator=generator)[:max_positions].to(rows.device)
        rows = rows[keep]
        scale = total / max_positions
    gram = torch.zeros(channels, channels, dtype=torch.float64, device=rows.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, channels * w.shape[0]))
    for start in range(0, rows.shape[0], step):
        contrib = torch.einsum("mck,ock->cmo", rows[start : start + step], w).reshape(channels, -1)
        gram += (contrib @ contrib.T).double()
    return (gram * scale).cpu()


def greedy_output_norm_order(
    model: nn.Module,
    calibration: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    counts: Mapping[str, int],
    *,
    structure: Structure | None = None,
    max_positions: int = 4096,
    seed: int = 0,
    batch_size: int = 64,
    rescore: str = "once",
) -> dict[str, list[int]]:
    """ThiNet's greedy removal order per conv group (see the module docstring for the definition).

    Args:
        model: the network (not modified).
        calibration: images (or ``(images, labels)``; labels are unused) on the model's device.
        counts: conv group name -> how many channels to pick.
        structure, batch_size: as in :func:`filter_scores`.
        max_positions: output positions per consumer beyond which a seeded random subset is used.
        seed: seeds that subset.
        rescore: ``once`` -- every group scored on the unpruned network's activations; ``each`` --
            every pick scored on the network with all earlier picks removed (module docstring).

    Returns:
        conv group name -> the picked channels, in the order they were removed.
    """
    if rescore not in GREEDY_RESCORE:
        raise ValueError(f"unknown greedy_rescore {rescore!r}; expected one of {', '.join(GREEDY_RESCORE)}")
    x, _ = _calibration_parts(calibration, False, "greedy_output_norm")
    structure = structure or find_structure(model, x[:2])
    roots = [g.convs[0] for g in structure.conv_groups]
    consumers = find_consumers(model, roots, x[:2])
    each = rescore == "each"
    work = copy.deepcopy(model).eval() if each else model  # each: a working copy, masked as picks are made
    if not each:  # every group's consumers measured once, on the unpruned network
        needed = {c.name for g in structure.conv_groups if counts.get(g.name, 0) > 0 for c in consumers[g.convs[0]]}
        inputs = _consumer_inputs(model, needed, x, batch_size)
    generator = torch.Generator().manual_seed(seed)
    orders: dict[str, list[int]] = {}
    for group in structure.conv_groups:
        n_pick = counts.get(group.name, 0)
        orders[group.name] = []
        if n_pick == 0:
            continue
        group_consumers = consumers[group.convs[0]]
        if not group_consumers:
            raise ValueError(
                f"conv group {group.name} has no layer that reads its channels, so greedy_output_norm cannot "
                "measure the change its removal makes; use another criterion"
            )
        if each:  # groups in model order, on the network with all earlier groups' picks removed
            inputs = _consumer_inputs(work, {c.name for c in group_consumers}, x, batch_size)
        if not each or len(group.convs) == 1:  # each: consumers read the channels directly, the Gram update is exact
            gram = sum(
                _contribution_gram(work.get_submodule(c.name), inputs[c.name], group.channels, c.block, max_positions,
                                   generator)
                for c in group_consumers
            )  # fmt: skip
            orders[group.name] = _greedy_pick(gram, n_pick)
        else:
            orders[group.name] = _greedy_remeasured(work, x, group, group_consumers, inputs, n_pick, structure,
                                                    max_positions, generator, batch_size)  # fmt: skip
        if each:
            mask_filters(work, {group.name: orders[group.name]}, structure)
    return orders


def _greedy_remeasured(work: nn.Module, x: torch.Tensor, group: Any, group_consumers: Sequence[Consumer],
                       inputs: Mapping[str, torch.Tensor], n_pick: int, structure: Structure, max_positions: int,
                       generator: torch.Generator, batch_size: int) -> list[int]:  # fmt: skip
    """Pick ``n_pick`` channels of a residual group, re-measuring the consumers' inputs after each removal."""
    keep: dict[str, torch.Tensor | None] = {}
    reference: dict[str, torch.Tensor] = {}
    for c in group_consumers:
        rows, w = _consumer_rows(work.get_submodule(c.name), inputs[c.name], group.channels, c.block)
        keep[c.name] = None
        if rows.shape[0] > max_positions:
            keep[c.name] = torch.randperm(rows.shape[0], generator=generator)[:max_positions].to(rows.device)
            rows = rows[keep[c.name]]
        reference[c.name] = torch.einsum("mck,ock->mo", rows, w)
    removed = torch.zeros(group.channels, dtype=torch.bool)
    order: list[int] = []
    for step in range(n_pick):
        if step > 0:
            inputs = _consumer_inputs(work, set(reference), x, batch_size)
        cost = torch.zeros(group.channels, dtype=torch.float64)
        for c in group_consumers:
            rows, w = _consumer_rows(work.get_submodule(c.name), inputs[c.name], group.channels, c.block)
            if keep[c.name] is not None:
                rows = rows[keep[c.name]]
            change = torch.einsum("mck,ock->mo", rows, w) - reference[c.name]  # D
            # ||D - Y_j||^2 = ||D||^2 - 2 <D, Y_j> + ||Y_j||^2, for every channel j at once
            cross = ((change @ w.reshape(w.shape[0], -1)).view_as(rows) * rows).sum(dim=(0, 2))
            kernel_gram = torch.einsum("ock,ocl->ckl", w, w)
            own = torch.einsum("mck,ckl,mcl->c", rows, kernel_gram, rows)
            cost += (change.square().sum() - 2.0 * cross + own).double().cpu()
        cost[removed] = math.inf
        j = int(torch.argmin(cost))
        removed[j] = True
        order.append(j)
        mask_filters(work, {group.name: [j]}, structure)
    return order


def _greedy_pick(gram: torch.Tensor, n_pick: int) -> list[int]:
    """Grow ``T`` by the channel minimising ``1^T G[T, T] 1``; ties go to the lower index."""
    cross = torch.zeros(gram.shape[0], dtype=torch.float64)  # sum_{c in T} G[c, j]
    cost = 0.0
    removed = torch.zeros(gram.shape[0], dtype=torch.bool)
    picked = []
    diag = gram.diagonal()
    for _ in range(n_pick):
        candidate = cost + 2.0 * cross + diag
        candidate[removed] = math.inf
        j = int(torch.argmin(candidate))
        cost = float(candidate[j])
        cross += gram[j]
        removed[j] = True
        picked.append(j)
    return picked


# -------------------------------------------------------------------------------- select and remove


def select_filters(
    model: nn.Module,
    criterion: str,
    *,
    sparsity: float = 0.4,
    calibration: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    seed: int = 0,
    structure: Structure | None = None,
    max_positions: int = 4096,
    batch_size: int = 64,
    model_name: str | None = None,
    greedy_rescore: str = "once",
) -> dict[str, list[int]]:
    """The channels each conv group loses: exactly ``round(sparsity * C)``, at least one kept.

    Args:
        model: the network (not modified).
        criterion: one of :data:`CRITERIA`.
        sparsity: fraction of each group's channels removed, in ``[0, 1)``.
        calibration: ``(images, labels)`` on the model's device, for ``taylor`` and
            ``greedy_output_norm`` (which also accepts images alone).
        seed: seeds ``random`` and greedy's position sampling.
        structure, batch_size, model_name: as in :func:`filter_scores`.
        max_positions: see :func:`greedy_output_norm_order`.
        greedy_rescore: ``once`` or ``each``, for ``greedy_output_norm`` (see the module docstring).

    Returns:
        conv group name -> sorted removed channel indices.
    """
    _check_criterion(criterion)
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    example = None
    if calibration is not None:
        example = (calibration if isinstance(calibration, torch.Tensor) else calibration[0])[:2]
    structure = structure or find_structure(model, example)
    counts = {g.name: units_removed(g.channels, sparsity, keep_one=True) for g in structure.conv_groups}
    if criterion == "greedy_output_norm":
        orders = greedy_output_norm_order(
            model, calibration, counts, structure=structure, max_positions=max_positions, seed=seed, batch_size=batch_size,
            rescore=greedy_rescore,
        )
        return {name: sorted(order) for name, order in orders.items()}
    scores = filter_scores(
        model, criterion, calibration=calibration, seed=seed, structure=structure, batch_size=batch_size,
        model_name=model_name,
    )  # fmt: skip
    return {
        g.name: torch.nonzero(~top_k_mask(scores[g.name], g.channels - counts[g.name])).reshape(-1).tolist()
        for g in structure.conv_groups
    }


def bn_l1_penalty(model: nn.Module, lam: float = 1e-4) -> torch.Tensor:
    """Network slimming's sparsity penalty ``lam * sum |gamma|`` over every BatchNorm (Liu et al. 2017).

    Add it to the loss during training (e.g. ``finetune(..., penalty=bn_l1_penalty)``) so that
    ``bn_slimming`` later finds near-zero scales to remove.
    """
    gammas = [m.weight for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
    if not gammas:
        raise MissingBatchNormError(
            f"model {type(model).__name__} has no affine BatchNorm, so the slimming penalty is undefined; use a "
            "model with BatchNorm (vgg16_bn instead of vgg16)"
        )
    return lam * sum(g.abs().sum() for g in gammas)


# ---------------------------------------------------------------------------------------- fine-tuning


def lr_for_epoch(epoch: int, epochs: int, lrs: Sequence[float] = (1e-3, 1e-4, 1e-5)) -> float:
    """The learning rate of 0-based ``epoch``: ``lrs`` over equal parts of ``epochs`` (earlier parts get the extra epoch).

    For 10 epochs and three rates: epochs 0-3 at ``lrs[0]``, 4-6 at ``lrs[1]``, 7-9 at ``lrs[2]``.
    """
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch {epoch} is outside [0, {epochs})")
    return float(lrs[min(len(lrs) - 1, epoch * len(lrs) // epochs)])


def default_finetune_epochs(num_classes: int) -> int:
    """Lajić et al.'s fine-tuning length: 10 epochs for up to 10 classes, 20 above (CIFAR-100)."""
    return 10 if num_classes <= 10 else 20


def finetune(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    lrs: Sequence[float] = (1e-3, 1e-4, 1e-5),
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    hflip: bool = True,
    rotation_degrees: float = 15.0,
    seed: int = 0,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place with SGD and a stepwise learning rate (the criteria study's protocol).

    Each epoch is one :func:`helpers.train.train_one_epoch` at that epoch's learning rate, over the images
    in a random order drawn from a generator seeded by ``(seed, epoch)``, which also draws the flips and
    rotations. A final batch of one image is skipped (BatchNorm).

    Args:
        model: the network (trained in place, left in train mode).
        images: float images ``[N, C, H, W]`` on the model's device (already normalised).
        labels: int64 labels ``[N]``.
        epochs: number of epochs (0 does nothing).
        lrs: learning rates over equal parts of the epochs (:func:`lr_for_epoch`).
        batch_size, momentum, weight_decay: SGD's images per step, momentum and weight decay.
        hflip, rotation_degrees: random horizontal flips; largest random rotation (0 disables).
        seed: seeds the batch order and augmentation.
        penalty: optional ``f(model) -> scalar`` added to the loss (e.g. :func:`bn_l1_penalty`).
        after_step: optional ``f(model)`` called after every optimizer step (e.g. to re-apply masks).

    Returns:
        One dict per epoch: ``epoch`` (1-based), ``lr``, ``loss`` (mean cross-entropy), ``accuracy``.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if epochs == 0:
        return []
    optimizer = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=momentum, weight_decay=weight_decay)

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment_batch(x, generator=generator, hflip=hflip, rotation_degrees=rotation_degrees)

    history = []
    for epoch in range(epochs):
        lr = lr_for_epoch(epoch, epochs, lrs)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        metrics = train_one_epoch(
            model, optimizer, None, images, labels, batch_size=batch_size, num_classes=_num_classes(model),
            generator=generator, augment=augment, penalty=penalty, after_step=after_step,
        )  # fmt: skip
        history.append({"epoch": epoch + 1, "lr": lr, "loss": metrics["loss"], "accuracy": metrics["accuracy"]})
    return history


# ------------------------------------------------------------------------------------- the protocol


def _splits(data: Data | Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, Data):
        return {"train": (data.train_x, data.train_y), "val": (data.val_x, data.val_y), "test": (data.test_x, data.test_y)}
    if {"train", "test"} - set(data):
        raise ValueError(
            f"data has splits {sorted(data)} but needs train and test; pass a helpers.train.Data or a mapping "
            "{'train': (images, labels), 'test': (images, labels)}"
        )
    return {name: (x, y) for name, (x, y) in data.items()}


def _num_classes(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"model {type(model).__name__} has no linear output layer to read the number of classes from")
    return linears[-1].out_features


def _filter_counts(model: nn.Module) -> int:
    return sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def run_criteria_experiment(
    model: nn.Module,
    data: Data | Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    criterion: str,
    *,
    sparsity: float = 0.4,
    finetune_epochs: int | None = None,
    lrs: Sequence[float] = (1e-3, 1e-4, 1e-5),
    batch_size: int = 32,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    rotation_degrees: float = 15.0,
    hflip: bool = True,
    calibration_size: int = 64,
    eval_batch_size: int = 256,
    max_positions: int = 4096,
    seed: int = 0,
    model_name: str | None = None,
    return_model: bool = False,
    greedy_rescore: str = "once",
) -> dict[str, Any] | tuple[dict[str, Any], nn.Module]:
    """Prune a trained model in one shot with ``criterion``, fine-tune it, and score each stage.

    Args:
        model: the trained network (not modified; a copy is pruned), on the data's device.
        data: a :class:`helpers.train.Data`, or ``{"train": (x, y), "test": (x, y)}`` of float images
            (prepared, normalised) and int64 labels.
        criterion: one of :data:`CRITERIA`.
        sparsity: fraction of each conv group's filters removed (Lajić et al.: 0.4).
        finetune_epochs: fine-tuning epochs; ``None`` uses :func:`default_finetune_epochs`.
        lrs, batch_size, momentum, weight_decay, rotation_degrees, hflip: fine-tuning settings (:func:`finetune`).
        calibration_size: training images (a seeded random subset) that ``taylor`` and
            ``greedy_output_norm`` score on.
        eval_batch_size: batch size for scoring.
        max_positions: see :func:`greedy_output_norm_order`.
        seed: seeds calibration subset, ``random``, and fine-tuning.
        model_name: the model's name, for error messages and the result.
        return_model: also return the pruned, fine-tuned model.
        greedy_rescore: ``once`` or ``each``, for ``greedy_output_norm`` (see the module docstring).

    Returns:
        A dict with ``criterion``, ``model``, ``sparsity``, ``finetune_epochs``; ``accuracy_before``,
        ``accuracy_pruned``, ``accuracy_finetuned`` (test split) and the matching ``loss_*`` and ``f1_*``;
        ``filters_total`` / ``filters_removed`` (summed over conv layers), ``params_before`` /
        ``params_after``, ``macs_before`` / ``macs_after`` (one image), ``selection_time_s``,
        ``finetune_time_s`` and ``history`` (one row per fine-tuning epoch; the last row also has
        ``val_accuracy`` when the data has a validation split). With ``return_model``, ``(result, pruned_model)``.
    """
    _check_criterion(criterion)
    splits = _splits(data)
    train_x, train_y = splits["train"]
    test_x, test_y = splits["test"]
    num_classes = data.num_classes if isinstance(data, Data) else _num_classes(model)
    epochs = default_finetune_epochs(num_classes) if finetune_epochs is None else finetune_epochs
    model = copy.deepcopy(model)

    def score(m: nn.Module) -> dict[str, float]:
        return evaluate(m, test_x, test_y, batch_size=eval_batch_size, num_classes=num_classes)[0]

    before = score(model)
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(train_x.shape[0], generator=generator)[: max(2, calibration_size)].to(train_x.device)
    calibration = (train_x[pick], train_y[pick])
    example = train_x[:1]
    structure = find_structure(model, calibration[0][:2])

    start = time.perf_counter()
    removed = select_filters(
        model, criterion, sparsity=sparsity, calibration=calibration, seed=seed, structure=structure,
        max_positions=max_positions, model_name=model_name, greedy_rescore=greedy_rescore,
    )  # fmt: skip
    pruned = prune_filters(model, removed, calibration[0][:2], structure)
    selection_time = time.perf_counter() - start
    after_prune = score(pruned)

    start = time.perf_counter()
    history = finetune(
        pruned, train_x, train_y, epochs=epochs, lrs=lrs, batch_size=batch_size, momentum=momentum,
        weight_decay=weight_decay, hflip=hflip, rotation_degrees=rotation_degrees, seed=seed,
    )  # fmt: skip
    finetune_time = time.perf_counter() - start
    if "val" in splits and epochs > 0:
        val_metrics, _ = evaluate(pruned, *splits["val"], batch_size=eval_batch_size, num_classes=num_classes)
        history[-1]["val_accuracy"] = val_metrics["accuracy"]
    after = score(pruned)

    result: dict[str, Any] = {
        "criterion": criterion,
        "model": model_name,
        "sparsity": sparsity,
        "greedy_rescore": greedy_rescore if criterion == "greedy_output_norm" else "",
        "finetune_epochs": epochs,
        "accuracy_before": before["accuracy"],
        "accuracy_pruned": after_prune["accuracy"],
        "accuracy_finetuned": after["accuracy"],
        "loss_before": before["loss"],
        "loss_pruned": after_prune["loss"],
        "loss_finetuned": after["loss"],
        "f1_before": before["f1"],
        "f1_pruned": after_prune["f1"],
        "f1_finetuned": after["f1"],
        "filters_total": _filter_counts(model),
        "filters_removed": _filter_counts(model) - _filter_counts(pruned),
        "params_before": sum(p.numel() for p in model.parameters()),
        "params_after": sum(p.numel() for p in pruned.parameters()),
        "macs_before": count_macs(model, example),
        "macs_after": count_macs(pruned, example),
        "selection_time_s": selection_time,
        "finetune_time_s": finetune_time,
        "history": history,
    }
    return (result, pruned) if return_model else result
