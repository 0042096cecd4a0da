"""The one BOS policy: which position an analysis starts from, and what text shows."""

import torch

from lens_inversion import bos


def test_leading_bos_is_left_out_unless_included():
    tokens = torch.tensor([[7, 3, 4]])
    assert bos.starts_with_bos(tokens, 7) and not bos.starts_with_bos(tokens, 3)
    assert bos.first_content_position(tokens, 7, include_bos=False) == 1
    assert bos.first_content_position(tokens, 7, include_bos=True) == 0
    assert bos.first_content_position(tokens, None, include_bos=False) == 0
    assert bos.content_mask(tokens, 7, include_bos=False).tolist() == [False, True, True]


def test_every_row_must_start_with_bos():
    assert not bos.starts_with_bos(torch.tensor([[7, 1], [2, 1]]), 7)
    assert not bos.starts_with_bos(torch.zeros(1, 0, dtype=torch.long), 7)


def test_text_ids_drop_one_leading_bos():
    assert bos.without_leading_bos([7, 7, 2], 7) == [7, 2]
    assert bos.without_leading_bos([2, 7], 7) == [2, 7]
    assert bos.with_bos([2], 7) == [7, 2] and bos.with_bos([2], None) == [2]
    assert bos.with_bos([2], 7, prepend_bos=False) == [2]
