"""``dflray.runtime.input_blocks``: how many blocks a job's pipeline reads its work items in."""

from __future__ import annotations

import dflray.runtime
from dflray.runtime import input_blocks


def test_one_item_a_block_while_few():
    assert input_blocks(1, 2) == 1
    assert input_blocks(20, 2) == 20
    assert input_blocks(32, 2) == 32


def test_bounded_per_actor_beyond():
    """The driver keeps memory per block, so the count stops growing with the items: 16 per actor."""
    assert dflray.runtime.BLOCKS_PER_ACTOR == 16
    assert input_blocks(33, 2) == 32
    assert input_blocks(100_000, 2) == 32
    assert input_blocks(100_000, 50) == 800


def test_no_items_or_no_actors_still_one_block():
    assert input_blocks(0, 3) == 1
    assert input_blocks(5, 0) == 5
    assert input_blocks(100, 0) == 16
