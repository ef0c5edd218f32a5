"""StackCache: rebuilt exactly when a used adapter's tensors (or the key) changed, never otherwise."""

from __future__ import annotations

import torch

from peft_core.contract import StackCache


class _Counted:
    """A cache over three adapters of two tensors each, counting builds."""

    def __init__(self) -> None:
        self.tensors = [(torch.zeros(2), torch.zeros(3)) for _ in range(3)]
        self.cache = StackCache[int]()
        self.builds = 0

    def get(self, used: tuple[int, ...], key: object = "k") -> int:
        def build() -> int:
            self.builds += 1
            return self.builds

        return self.cache.get(key, used, lambda: self.tensors, build)


def test_built_once_while_nothing_changes_for_any_mix_of_used_adapters() -> None:
    counted = _Counted()
    for used in [(0, 1), (0, 1), (2,), (0, 1, 2), (1,)]:
        counted.get(used)
    assert counted.builds == 1


def test_an_in_place_change_of_a_used_adapter_rebuilds_an_unused_one_does_not() -> None:
    counted = _Counted()
    counted.get((0, 1))
    counted.get((2,))  # a second mix: its check is listed separately
    counted.tensors[2][1].add_(1.0)
    assert counted.get((0, 1)) == 1  # adapter 2 is not used: the value is still right for this call
    assert counted.get((2,)) == 2  # used now: its change is seen
    counted.tensors[0][0].mul_(3.0)
    assert counted.get((0, 2)) == 3
    assert counted.get((0, 2)) == 3


def test_re_pointing_a_tensor_rebuilds() -> None:
    counted = _Counted()
    counted.get((1,))
    counted.tensors[1][0].data = torch.ones(2)  # the version counter does not move; the data pointer does
    assert counted.get((1,)) == 2


def test_a_new_key_or_clear_rebuilds() -> None:
    counted = _Counted()
    counted.get((0,))
    assert counted.get((0,), key="other") == 2
    counted.cache.clear()
    assert counted.get((0,), key="other") == 3
