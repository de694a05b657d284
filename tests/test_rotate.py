"""The packed rotation equals a plain per-sequence torch.roll, forward and backward."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.rotate import RotationPlan, rotate_reference, rotation_source_rows, track_shifts


def _offsets(lengths):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()), dtype=torch.int64)


def _roll_one(sequence: torch.Tensor, n_tracks: int, track_size: int) -> torch.Tensor:
    """Independent reference for one sequence: roll each track's channels on their own."""
    out = sequence.clone()
    for k in range(1, n_tracks):
        channels = slice(k * track_size, (k + 1) * track_size)
        out[:, channels] = torch.roll(sequence[:, channels], shifts=-(2 ** (k - 1)), dims=0)
    return out


def test_track_shifts_are_powers_of_two():
    assert track_shifts(5).tolist() == [0, 1, 2, 4, 8]
    assert track_shifts(1).tolist() == [0]


@pytest.mark.parametrize("lengths", [[1], [2], [3], [1, 2, 3], [3, 1, 1, 2], [17, 1, 64, 5]])
@pytest.mark.parametrize("n_tracks", [1, 2, 4, 8])
def test_rotation_matches_roll_for_short_sequences(lengths, n_tracks, device):
    # n_tracks = 8 gives shifts up to 64, far beyond L = 1, 2, 3: shifts wrap mod L.
    track_size = 3
    offsets = _offsets(lengths).to(device)
    x = torch.randn(sum(lengths), n_tracks * track_size, device=device)
    rotated = RotationPlan.build(offsets, n_tracks).rotate(x)
    expected = torch.cat(
        [_roll_one(x[a:b], n_tracks, track_size) for a, b in zip(offsets[:-1], offsets[1:])]
    )
    assert torch.equal(rotated, expected)


def test_rotation_direction_follows_paper_equation_2():
    # z_j = x_{(j + 2^(k-1)) mod L}: position 0 of track 1 holds what was at position 1.
    offsets = _offsets([4])
    x = torch.arange(4, dtype=torch.float32)[:, None].repeat(1, 3)  # (4, 3): 3 tracks of 1
    rotated = RotationPlan.build(offsets, 3).rotate(x)
    assert rotated[:, 0].tolist() == [0, 1, 2, 3]
    assert rotated[:, 1].tolist() == [1, 2, 3, 0]
    assert rotated[:, 2].tolist() == [2, 3, 0, 1]


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=6),
    n_tracks=st.integers(min_value=1, max_value=9),
    track_size=st.integers(min_value=1, max_value=4),
)
def test_rotation_matches_reference_for_random_lengths(lengths, n_tracks, track_size):
    offsets = _offsets(lengths)
    x = torch.randn(sum(lengths), n_tracks * track_size)
    plan = RotationPlan.build(offsets, n_tracks)
    assert torch.equal(plan.rotate(x), rotate_reference(x, offsets, n_tracks))


@pytest.mark.parametrize("lengths", [[5, 1, 12, 3], [12], [1], [300]])
def test_backward_is_the_inverse_rotation(device, lengths):
    # One sequence takes the slice-copy fast path; several take the packed permutation.
    n_tracks, track_size = 5 if lengths != [300] else 12, 2
    offsets = _offsets(lengths).to(device)
    x = torch.randn(sum(lengths), n_tracks * track_size, device=device, requires_grad=True)
    upstream = torch.randn_like(x)
    (RotationPlan.build(offsets, n_tracks).rotate(x) * upstream).sum().backward()
    ours = x.grad.clone()
    x.grad = None
    (rotate_reference(x, offsets.cpu(), n_tracks) * upstream).sum().backward()
    assert torch.equal(ours, x.grad)


def test_source_rows_form_a_permutation():
    rows = rotation_source_rows(_offsets([7, 2, 9]), 4)
    assert sorted(rows.tolist()) == list(range(18 * 4))


def test_packed_plan_keeps_int32_rows_and_their_inverse():
    plan = RotationPlan.build(_offsets([7, 2, 9]), 4)
    assert plan.source_rows.dtype == plan.inverse_rows.dtype == torch.int32
    assert torch.equal(plan.source_rows.long(), rotation_source_rows(_offsets([7, 2, 9]), 4))
    composed = plan.source_rows.long()[plan.inverse_rows.long()]
    assert torch.equal(composed, torch.arange(18 * 4))


def test_huge_shift_does_not_overflow():
    # Track 40 shifts by 2^39: reduce modulo L before adding the position.
    rows = rotation_source_rows(_offsets([3]), 41)
    assert rows.min() >= 0 and rows.max() < 3 * 41


def test_one_sequence_takes_the_fast_path_and_a_huge_shift_wraps():
    plan = RotationPlan.build(_offsets([3]), 41)
    assert plan.source_rows is None and plan.single_shifts[40] == 2**39
    x = torch.randn(3, 82)
    assert torch.equal(plan.rotate(x), rotate_reference(x, _offsets([3]), 41))


def test_one_sequence_rotation_accepts_a_non_contiguous_tensor():
    x = torch.randn(4 * 3, 50).t()  # (50, 12), transposed: not contiguous
    plan = RotationPlan.build(_offsets([50]), 4)
    assert torch.equal(plan.rotate(x), rotate_reference(x, _offsets([50]), 4))


@pytest.mark.parametrize("lengths", [[5, 1, 64, 17], [50]])
def test_rotation_into_an_existing_tensor_writes_the_same_values(lengths):
    x = torch.randn(sum(lengths), 4 * 3)
    plan = RotationPlan.build(_offsets(lengths), 4)
    out = torch.full_like(x, float("nan"))
    assert plan.rotate(x, out=out) is out
    assert torch.equal(out, rotate_reference(x, _offsets(lengths), 4))
