"""Per-row adapters in one batch (BGMV, as in Punica/S-LoRA): batched products, no loop over adapters.

A layer stacks its adapters once (cached until a weight changes): ``A^T`` as
``(n + 1, in, r_max)`` and the scaled ``B^T`` as ``(n + 1, r_max, out)``, ranks zero-padded
to the largest (the padding adds exact zeros) and slot 0 all zeros (rows without an
adapter). Each call then takes the cheaper of two exact schedules:

- per row: gather each row's ``A``/``B`` and run ``bmm`` over rows. Moves
  ``rows * r * (in + out)`` weights; best when rows hold many tokens (prefill).
- grouped: sort rows by adapter into zero-padded groups and run ``bmm`` over the
  adapters in use, reading each adapter's weights once. Moves the activations a few
  times; best for few tokens per row (decode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from peft_core.contract import RowRouting, compiling, records_grad


@dataclass(frozen=True)
class LoraStack:
    """A layer's adapters stacked for batched products; slot ``i + 1`` is adapter ``i``."""

    a: Tensor  # (n + 1, in, r_max): A^T, zero rows past each adapter's rank
    b: Tensor  # (n + 1, r_max, out): (scaling * B)^T


def stack_adapters(a: Sequence[Tensor], b: Sequence[Tensor], scalings: Sequence[float | Tensor]) -> LoraStack:
    """Stack ``A`` (r_i, in) and ``B`` (out, r_i) with scalings folded into B (differentiable)."""
    r_max = max(t.shape[0] for t in a)
    zeros_a = a[0].new_zeros(a[0].shape[1], r_max)
    zeros_b = b[0].new_zeros(r_max, b[0].shape[0])
    stack_a = [zeros_a] + [F.pad(t, (0, 0, 0, r_max - t.shape[0])).t() for t in a]
    stack_b = [zeros_b] + [(F.pad(t, (0, r_max - t.shape[1])) * s).t() for t, s in zip(b, scalings, strict=True)]
    return LoraStack(torch.stack(stack_a), torch.stack(stack_b))


@dataclass(frozen=True)
class GroupPlan:
    """Rows with an adapter, sorted into equal-size groups (one group per adapter slot read).

    Place ``p`` of the flattened ``(groups * group_size)`` layout holds batch row
    ``source[p]``; places past a group's rows are padding: they read row 0 masked to zero,
    so their products are exact zeros and adding them back to row 0 changes nothing.
    """

    source: Tensor  # (places,) batch row of each place (0 for padding)
    padding: Tensor | None  # (places, 1, 1) 1 for real places, 0 for padding; None without padding
    first_slot: int  # groups are the stack slots first_slot.. (a view), unless gathered
    gathered_slots: Tensor | None  # (groups,) stack slots to gather, when a slot range would read too much
    groups: int
    group_size: int


def group_plan(slots: Tensor, device: torch.device) -> GroupPlan | None:
    """Plan for ``slots`` (batch,) CPU int64; None when no row has an adapter."""
    rows = torch.nonzero(slots, as_tuple=True)[0]
    if rows.numel() == 0:
        return None
    rows = rows[torch.argsort(slots[rows], stable=True)]
    row_slots = slots[rows]
    used, group, counts = torch.unique_consecutive(row_slots, return_inverse=True, return_counts=True)
    position = torch.arange(rows.numel()) - (torch.cumsum(counts, 0) - counts)[group]
    first, last = int(used[0]), int(used[-1])
    # A range of stack slots is a view: reading it beats gathering (read, write, read) the used ones.
    if last - first + 1 <= 3 * used.numel():
        group, gathered, groups = row_slots - first, None, last - first + 1
    else:
        gathered, groups = used.to(device), int(used.numel())
    size = int(counts.max())
    places = group * size + position
    source = torch.zeros(groups * size, dtype=torch.long)
    source[places] = rows
    padding = None
    if places.numel() < source.numel():
        padding = torch.zeros(groups * size, 1, 1)
        padding[places] = 1.0
        padding = padding.to(device)
    return GroupPlan(source.to(device), padding, first, gathered, groups, size)


def _plan(routing: RowRouting, names: tuple[str, ...], device: torch.device) -> GroupPlan | None:
    key = ("lora-group-plan", names, device)
    if key not in routing.cache:
        routing.cache[key] = group_plan(routing.layer_slots(names), device)
    plan: GroupPlan | None = routing.cache[key]
    return plan


def prefer_grouped(rows: int, tokens: int, rank: int, width_in: int, a_in: int, out: int, groups: int) -> bool:
    """Whether grouping moves fewer values than gathering weights per row (both are exact).

    ``width_in`` is the width of the per-row input (``in``, or ``r`` after a lookup) and
    ``a_in`` the columns of ``A`` still to multiply (``in``, or 0 after a lookup).
    """
    per_row = 2 * rows * rank * (a_in + out)
    grouped = rows * tokens * (2 * width_in + 3 * out) + groups * rank * (a_in + out)
    return grouped < per_row


def _group_weights(stacked: Tensor, plan: GroupPlan) -> Tensor:
    if plan.gathered_slots is not None:
        return stacked.index_select(0, plan.gathered_slots)
    return stacked[plan.first_slot : plan.first_slot + plan.groups]


def _to_groups(rows_3d: Tensor, plan: GroupPlan) -> Tensor:
    """(batch, tokens, d) -> (groups, group_size * tokens, d), zero padded."""
    _, tokens, width = rows_3d.shape
    grouped = rows_3d.index_select(0, plan.source)
    if plan.padding is not None:
        grouped = grouped.mul_(plan.padding.to(grouped.dtype))
    return grouped.view(plan.groups, plan.group_size * tokens, width)


def _add_places(result_3d: Tensor, plan: GroupPlan, delta: Tensor) -> Tensor:
    """Add each place's delta (places, tokens, out) to its batch row (padding adds exact zeros)."""
    if records_grad(result_3d, delta):
        return result_3d.index_add(0, plan.source, delta)
    return result_3d.index_add_(0, plan.source, delta)


def rows_delta(
    result: Tensor,
    routing: RowRouting,
    names: tuple[str, ...],
    stack: LoraStack,
    x: Tensor | None = None,
    hidden: Tensor | None = None,
) -> Tensor:
    """``result`` plus each row's own adapter update.

    Give ``x`` (batch, ..., in) for a linear layer, or ``hidden`` (batch, ..., r_max) when
    ``x A^T`` is already computed per row (embedding lookups). ``result`` is (batch, ..., out).
    """
    batch = result.shape[0]
    routing.check_rows(batch)
    out_features = result.shape[-1]
    result_3d = result.reshape(batch, -1, out_features)
    tokens = result_3d.shape[1]
    # Under torch.compile the grouping (its shapes depend on the data) would break the graph:
    # the per-row schedule has static shapes.
    compiled = compiling()
    plan = None if compiled else _plan(routing, names, result.device)
    if plan is None and not compiled:
        return result  # no row has an adapter here
    inputs = x if x is not None else hidden
    assert inputs is not None
    inputs_3d = inputs.reshape(batch, tokens, inputs.shape[-1]).to(stack.a.dtype)
    summed = result_3d if result.dtype == stack.b.dtype else result_3d.to(stack.b.dtype)
    if plan is None:
        summed = _per_row(summed, inputs_3d, routing.layer_index(names, result.device), stack, project=x is not None)
    elif plan.groups == 1 and plan.group_size == batch:  # every row has the same adapter: one plain product
        summed = _one_adapter(summed, inputs_3d, plan, stack, project=x is not None)
    elif prefer_grouped(
        batch,
        tokens,
        stack.a.shape[2],
        inputs.shape[-1],
        stack.a.shape[1] if x is not None else 0,
        out_features,
        plan.groups,
    ):
        summed = _grouped(summed, inputs_3d, plan, stack, project=x is not None)
    else:
        summed = _per_row(summed, inputs_3d, routing.layer_index(names, result.device), stack, project=x is not None)
    return summed.to(result.dtype).view(result.shape)


def _one_adapter(result_3d: Tensor, inputs_3d: Tensor, plan: GroupPlan, stack: LoraStack, project: bool) -> Tensor:
    flat = inputs_3d.reshape(-1, inputs_3d.shape[-1])
    hidden = flat @ _group_weights(stack.a, plan)[0] if project else flat
    b = _group_weights(stack.b, plan)[0]
    result_2d = result_3d.view(-1, result_3d.shape[-1])
    if records_grad(result_2d, hidden, b):
        return torch.addmm(result_2d, hidden, b).view(result_3d.shape)
    return result_2d.addmm_(hidden, b).view(result_3d.shape)


def _grouped(result_3d: Tensor, inputs_3d: Tensor, plan: GroupPlan, stack: LoraStack, project: bool) -> Tensor:
    grouped = _to_groups(inputs_3d, plan)
    if project:
        grouped = torch.bmm(grouped, _group_weights(stack.a, plan))
    delta = torch.bmm(grouped, _group_weights(stack.b, plan))
    return _add_places(result_3d, plan, delta.view(-1, *result_3d.shape[1:]))


def _per_row(result_3d: Tensor, inputs_3d: Tensor, slots: Tensor, stack: LoraStack, project: bool) -> Tensor:
    hidden = torch.bmm(inputs_3d, stack.a.index_select(0, slots)) if project else inputs_3d
    b_rows = stack.b.index_select(0, slots)
    if records_grad(result_3d, hidden, b_rows):
        return torch.baddbmm(result_3d, hidden, b_rows)
    return result_3d.baddbmm_(hidden, b_rows)
