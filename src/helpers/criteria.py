"""Filter-selection criteria for one-shot structured pruning, and the criteria study's protocol.

Study 2 of the project follows Lajić, Peer and Emeršič, *Exploring the differences in pruning methods
for convolutional neural networks* (ROSUS 2025): train (or load) a model, remove 40 % of the filters of
every convolution in one shot with one of several criteria, fine-tune, and compare the accuracy before
pruning, right after pruning and after fine-tuning.

Units. Filters are chosen per *conv group* (:func:`helpers.pruning.find_structure`): a convolution on
its own, or -- in a ResNet -- the convolutions whose outputs meet in a residual add and must lose the
same channels (torch-pruning's dependency groups; Fang et al., *DepGraph*, CVPR 2023). Every group of
``C`` channels loses exactly ``round(sparsity * C)`` of them (:func:`helpers.pruning.units_removed`,
at least one kept). A removed channel is removed in every member of its group.

Criteria (:data:`CRITERIA`); a lower score, or an earlier pick, is removed first:

- ``l1``: the filter's L1 norm ``sum |w|`` (Li et al., *Pruning filters for efficient ConvNets*, ICLR
  2017), summed over the group's members (:func:`helpers.pruning.masks.group_l1_norm`).
- ``bn_slimming``: ``|gamma|`` of the BatchNorm after the convolution (Liu et al., *Learning efficient
  convolutional networks through network slimming*, ICCV 2017), summed over the group's members.
  Liu et al. train with an L1 penalty ``lambda * sum |gamma|`` first (``lambda = 1e-4``); pass
  :func:`bn_l1_penalty` as ``penalty`` to :func:`finetune` to train that way. Convolutions without a
  BatchNorm (torchvision's plain ``vgg16``) have no ``gamma``: :class:`MissingBatchNormError`.
- ``taylor``: first-order Taylor importance (Molchanov et al., *Importance estimation for neural
  network pruning*, CVPR 2019, whose BatchNorm-gate variant equals the activation form of Molchanov et
  al., *Pruning convolutional neural networks for resource efficient inference*, ICLR 2017). On a
  calibration batch with cross-entropy loss ``L``, removing channel ``c`` sets its output ``z_c`` to zero
  and changes ``L`` by ``-sum_positions dL/dz_c * z_c`` to first order. The score is the square of that
  sum, summed over the group's members (whose outputs all vanish together) and averaged over
  calibration batches. With a BatchNorm after the convolution the sum is computed exactly as
  ``dL/dgamma * gamma + dL/dbeta * beta``; without one as ``sum dL/dw * w + dL/db * b`` over the filter.
  Gradients are taken in eval mode (BatchNorm uses its running statistics, which stay untouched).
- ``random``: uniform scores from a seeded generator (the reference every criterion should beat).
- ``greedy_output_norm``: ThiNet's greedy selection (Luo et al., *ThiNet: a filter level pruning
  method for deep neural network compression*, ICCV 2017), the "greedy" criterion of Lajić et al.
  Every layer that reads the group's channels (the next convolution; in a ResNet every block that reads
  the residual stream; the linear layer after the last convolution) is a *consumer*. Consumers are
  linear in their input, so a consumer's output changes, when a set ``T`` of channels is removed, by
  ``sum_{c in T} Y_c`` with ``Y_c`` the contribution of channel ``c`` alone (its input slice times its
  weight slice, bias excluded). The removal set is grown one filter at a time: starting from
  ``T = {}``, add the channel ``j`` that minimises the change left in the consumers' outputs,

      ||sum_{c in T + {j}} Y_c||^2  (squared Frobenius norm, summed over all consumers),

  recomputed after each removal, until the target count is reached. With the Gram matrix
  ``G[c, d] = <Y_c, Y_d>`` the cost of ``T + {j}`` is ``cost(T) + 2 sum_{c in T} G[c, j] + G[j, j]``,
  so each step is one vector update. Because removed channels can cancel each other, this is not the
  same as ranking ``||Y_c||`` once. ``Y`` is computed on a calibration batch in eval mode; when a
  consumer has more than ``max_positions`` output positions (image x pixel), ThiNet-style a seeded
  random subset is used and the Gram matrix scaled up to the full count.

  Re-scoring (``greedy_rescore``, :data:`GREEDY_RESCORE`). Lajić et al. score a filter "after the
  removal of the previous filter". Read literally, every pick is scored on the network with every
  earlier pick already removed. Two readings are implemented:

  - ``once`` (default; the faster): the contributions ``Y`` of every group are measured once, on the
    unpruned network, and each group is grown with the Gram update above. Within a group this already
    re-scores after each removal exactly wherever the consumers read the group's channels directly (a
    plain convolution: checked against forward passes in the tests); what it does not see is that
    removing filters in one layer changes the activations that later layers are scored on.
  - ``each``: groups are pruned in model order, each on the network with all earlier groups' filters
    already removed (masked), and every pick is scored on activations measured after the previous
    pick was removed. For a single convolution the Gram update is exact, so one calibration pass per
    group suffices. A residual group's channels are read at several depths of the residual stream,
    where removing one channel also changes the blocks in between; there a new calibration pass follows
    every removal, and channel ``j`` costs ``||D - Y_j||^2`` summed over the consumers, with ``D`` the
    measured change of the consumers' outputs since the group's first removal and ``Y_j`` channel
    ``j``'s contribution in the re-measured inputs (first order in the blocks between, exact at each
    consumer). It costs one calibration pass per removed residual channel.

Physical removal: the chosen channels are zeroed (filter weight and bias, and the following
BatchNorm's affine weight and bias, in every member) and the model is compacted with
:func:`helpers.pruning.compact` (torch-pruning), so the pruned model's logits equal the masked one's.

Protocol (:func:`run_criteria_experiment`): accuracy before pruning; select and remove the filters;
accuracy right after pruning; fine-tune with :func:`finetune` -- SGD, momentum 0.9, learning rate
1e-3, 1e-4, 1e-5 over equal thirds of the epochs (:func:`lr_for_epoch`), batch 32, random horizontal
flips and rotations (:func:`helpers.transforms.augment_batch`; Lajić et al. do not state the angle, 15
degrees here), 10 epochs for data with up to 10 classes and 20 above (:func:`default_finetune_epochs`);
accuracy after fine-tuning. Accuracies are on the test split.
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
from helpers.pruning.structure import Structure
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
    if isinstance(calibration, torch.Tensor):
        x, y = calibration, None
    else:
        x, y = calibration
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
    terms: list[tuple[str, int, int, str]] = []  # (group, index into params, count, kind)
    for group in structure.conv_groups:
        for conv_name, norm_name in zip(group.convs, group.norms):
            norm = model.get_submodule(norm_name) if norm_name is not None else None
            if norm is not None and norm.weight is not None:
                terms.append((group.name, len(params), 2, "bn"))
                params += [norm.weight, norm.bias]
            else:
                conv = model.get_submodule(conv_name)
                pieces = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
                terms.append((group.name, len(params), len(pieces), "conv"))
                params += pieces
    scores = {group.name: torch.zeros(group.channels, dtype=torch.float64) for group in structure.conv_groups}
    modes = {module: module.training for module in model.modules()}
    model.eval()
    batches = 0
    try:
        with torch.enable_grad():
            for start in range(0, x.shape[0], batch_size):
                loss = F.cross_entropy(model(x[start : start + batch_size]), y[start : start + batch_size])
                grads = torch.autograd.grad(loss, params)
                first_order = {name: torch.zeros_like(s) for name, s in scores.items()}
                for name, index, count, kind in terms:
                    total = 0.0
                    for p, g in zip(params[index : index + count], grads[index : index + count]):
                        pg = (p.detach() * g).double()
                        total = total + (pg if pg.ndim == 1 else pg.flatten(1).sum(1))
                    first_order[name] += total.cpu()
                for name in scores:
                    scores[name] += first_order[name].square()
                batches += 1
    finally:
        for module, training in modes.items():
            module.training = training
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
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        for start in range(0, x.shape[0], batch_size):
            model(x[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
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
    equation = "mck,ock->cmo"
    total = rows.shape[0]
    scale = 1.0
    if total > max_positions:
        keep = torch.randperm(total, generator=generator)[:max_positions].to(rows.device)
        rows = rows[keep]
        scale = total / max_positions
    gram = torch.zeros(channels, channels, dtype=torch.float64, device=rows.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, channels * w.shape[0]))
    for start in range(0, rows.shape[0], step):
        contrib = torch.einsum(equation, rows[start : start + step], w).reshape(channels, -1)
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
        structure: the model's structure; found when ``None``.
        max_positions: output positions per consumer beyond which a seeded random subset is used.
        seed: seeds that subset.
        batch_size: calibration images per forward pass.
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
    if rescore == "each":
        return _greedy_each(model, x, counts, structure, consumers, max_positions, seed, batch_size)
    needed = {c.name for g in structure.conv_groups if counts.get(g.name, 0) > 0 for c in consumers[g.convs[0]]}
    inputs = _consumer_inputs(model, needed, x, batch_size)
    generator = torch.Generator().manual_seed(seed)
    orders = {}
    for group in structure.conv_groups:
        n_pick = counts.get(group.name, 0)
        if n_pick == 0:
            orders[group.name] = []
            continue
        group_consumers = consumers[group.convs[0]]
        if not group_consumers:
            raise _no_consumer_error(group.name)
        gram = sum(
            _contribution_gram(model.get_submodule(c.name), inputs[c.name], group.channels, c.block, max_positions, generator)
            for c in group_consumers
        )
        orders[group.name] = _greedy_pick(gram, n_pick)
    return orders


def _no_consumer_error(group_name: str) -> ValueError:
    return ValueError(
        f"conv group {group_name} has no layer that reads its channels, so greedy_output_norm cannot "
        "measure the change its removal makes; use another criterion"
    )


def _greedy_each(
    model: nn.Module,
    x: torch.Tensor,
    counts: Mapping[str, int],
    structure: Structure,
    consumers: Mapping[str, tuple[Consumer, ...]],
    max_positions: int,
    seed: int,
    batch_size: int,
) -> dict[str, list[int]]:
    """``greedy_rescore: each``: groups in model order on a working copy masked as picks are made."""
    work = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    orders: dict[str, list[int]] = {}
    for group in structure.conv_groups:
        n_pick = counts.get(group.name, 0)
        orders[group.name] = []
        if n_pick == 0:
            continue
        group_consumers = consumers[group.convs[0]]
        if not group_consumers:
            raise _no_consumer_error(group.name)
        names = {c.name for c in group_consumers}
        inputs = _consumer_inputs(work, names, x, batch_size)
        if len(group.convs) == 1:  # consumers read the channels directly: the Gram update is exact
            gram = sum(
                _contribution_gram(work.get_submodule(c.name), inputs[c.name], group.channels, c.block, max_positions,
                                   generator)
                for c in group_consumers
            )  # fmt: skip
            order = _greedy_pick(gram, n_pick)
        else:
            order = _greedy_remeasured(work, x, group, group_consumers, inputs, n_pick, structure, max_positions,
                                       generator, batch_size)  # fmt: skip
        mask_filters(work, {group.name: order}, structure)
        orders[group.name] = order
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
        structure: the model's structure; found when ``None``.
        max_positions: see :func:`greedy_output_norm_order`.
        batch_size: calibration images per pass.
        model_name: the model's name, for error messages.
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
    removed = {}
    for group in structure.conv_groups:
        keep = top_k_mask(scores[group.name], group.channels - counts[group.name])
        removed[group.name] = torch.nonzero(~keep).reshape(-1).tolist()
    return removed


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
        batch_size: images per step.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        hflip: random horizontal flips.
        rotation_degrees: largest random rotation (0 disables).
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
    missing = {"train", "test"} - set(data)
    if missing:
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


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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
        lrs: the learning-rate steps.
        batch_size: fine-tuning batch size.
        momentum: SGD momentum during fine-tuning.
        weight_decay: SGD weight decay during fine-tuning.
        rotation_degrees: largest random rotation during fine-tuning.
        hflip: random horizontal flips during fine-tuning.
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
        metrics, _ = evaluate(m, test_x, test_y, batch_size=eval_batch_size, num_classes=num_classes)
        return metrics

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
        "params_before": _params(model),
        "params_after": _params(pruned),
        "macs_before": count_macs(model, example),
        "macs_after": count_macs(pruned, example),
        "selection_time_s": selection_time,
        "finetune_time_s": finetune_time,
        "history": history,
    }
    return (result, pruned) if return_model else result
