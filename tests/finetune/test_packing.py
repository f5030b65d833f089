"""Windows hold whole records and train only answers: no target is ever predicted from another record."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jenova_fast.finetune import defaults, render

PAD = -1


def _records(lengths: list[int], seed: int) -> list[render.Record]:
    """Record i is made of the token i (so a window shows which record each token came from), with a random
    answer mask."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        trained = rng.random(n) < 0.5
        trained[0] = False
        out.append(render.Record(np.full(n, i, np.int32), trained))
    return out


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 700), min_size=1, max_size=12), seed=st.integers(0, 2**16),
       n_ctx=st.sampled_from([256, 512]))
def test_pack_trains_every_answer_token_once_and_never_across_records(lengths, seed, n_ctx):
    records = _records(lengths, seed)
    tokens, trained = render.pack(records, n_ctx, PAD)
    assert tokens.shape == trained.shape == (len(tokens), n_ctx + 1)
    assert not trained[:, 0].any()
    assert int(trained.sum()) == sum(int(r.trained.sum()) for r in records)
    rows, cols = np.nonzero(trained)
    assert (tokens[rows, cols] == tokens[rows, cols - 1]).all()  # each target follows a token of its own record
    assert (tokens[rows, cols] != PAD).all()
    # every token of every record is in some window, in order
    seen = tokens[tokens != PAD]
    assert sorted(np.unique(seen)) == list(range(len(records)))
    # a record that fits a window is never cut
    for i, n in enumerate(lengths):
        if n <= n_ctx + 1:
            assert int(((tokens == i).sum(axis=1) > 0).sum()) == 1


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 400), min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_stream_windows_carry_the_mask_with_the_tokens(lengths, seed):
    records = _records(lengths, seed)
    tokens, trained = render.stream_windows(records, 256, 128)
    stream = np.concatenate([r.tokens for r in records])
    assert len(tokens) == render.n_windows(len(stream), 256, 128)
    if len(tokens):
        assert not trained[:, 0].any()
        # record starts carry no target, so a stream never trains one record's end into the next either
        rows, cols = np.nonzero(trained)
        assert (tokens[rows, cols] == tokens[rows, cols - 1]).all()


def test_epoch_windows_reshuffle_records_each_epoch():
    records = _records([100] * 10, 0)
    a = render.epoch_windows(records, 256, pad=PAD, seed=0, epoch=0)[0]
    b = render.epoch_windows(records, 256, pad=PAD, seed=0, epoch=1)[0]
    again = render.epoch_windows(records, 256, pad=PAD, seed=0, epoch=0)[0]
    assert (a == again).all() and a.shape == b.shape == (5, 257) and not (a == b).all()
    assert render.steps_per_epoch(records, 256) == 5
    assert render.steps_per_epoch(records, 256, packing="stream", stride=128) == render.n_windows(1000, 256, 128)


@pytest.mark.parametrize(("n", "fraction", "held"), [(12, None, 0), (19, None, 0), (20, None, 1), (400, None, 20),
                                                      (12, 0.1, 1), (50, 0.1, 5)])
def test_heldout_count_adapts_to_small_stores(n, fraction, held):
    assert render.heldout_count(n, fraction) == held


def test_an_explicit_split_that_leaves_nothing_to_train_is_refused():
    with pytest.raises(render.FinetuneError, match="too few to hold out"):
        render.heldout_count(1, 0.5)


def test_context_is_the_smallest_multiple_of_256_holding_the_longest_record():
    assert defaults.context(143, 8192)[0] == 256
    assert defaults.context(257, 8192)[0] == 256  # a window is n_ctx + 1 tokens
    assert defaults.context(258, 8192)[0] == 512
    ctx, why = defaults.context(5000, 2048)
    assert ctx == 2048 and "cut" in why


def test_epochs_and_learning_rate_from_steps_and_parameters():
    assert defaults.epochs(6)[0] == 8 and defaults.epochs(1)[0] == defaults.MAX_EPOCHS
    assert defaults.epochs(5000)[0] == defaults.MIN_EPOCHS
    assert defaults.learning_rate(135_000_000)[0] == pytest.approx(1e-4)
    assert defaults.learning_rate(1_200_000_000)[0] < 5e-5
    assert defaults.learning_rate(100_000)[0] == defaults.MAX_LR

    # an adapter's rate follows its base's size, not its own: 10x the base's whole-model rate
    assert defaults.lora_learning_rate(135_000_000, 48)[0] == pytest.approx(1e-3)
    assert defaults.lora_learning_rate(1_200_000_000, 48)[0] < defaults.lora_learning_rate(135_000_000, 48)[0]
    assert "135.0M" in defaults.lora_learning_rate(135_000_000, 48)[1]
    # a longer run takes smaller steps, as 1/sqrt(steps): 153 steps of the demo store's 240 records
    lr, why = defaults.lora_learning_rate(135_000_000, 153)
    assert lr == pytest.approx(6e-4) and "x sqrt(48/153) for 153 planned steps" in why
    assert defaults.lora_learning_rate(135_000_000, 10**9)[0] == defaults.MIN_LR


def test_early_stop_when_learned_or_flat():
    stop = defaults.EarlyStop()
    assert stop(3.0) is None and stop(1.0) is None
    assert "learned" in (stop(defaults.STOP_LOSS / 2) or "")
    flat = defaults.EarlyStop()
    assert [flat(x) for x in (2.0, 1.0, 0.99)] == [None, None, None]
    assert "fell less than" in (flat(0.985) or "")


@given(total=st.integers(1, 500), chunks=st.lists(st.integers(1, 64), min_size=1, max_size=400),
       lr=st.floats(1e-6, 1e-2), end=st.floats(0.0, 1.0))
def test_the_learning_rate_of_a_step_never_depends_on_where_chunks_end(total, chunks, lr, end):
    """train_inprocess sets the rate between chunks, whose sizes follow the measured step time: each step
    must get the rate of its fixed block whatever the chunks, falling linearly from lr to lr * end."""
    from types import SimpleNamespace

    from jenova_fast.finetune.train_inprocess import _LinearDecay

    params = SimpleNamespace(adamw=SimpleNamespace(alpha=0.0), sgd=SimpleNamespace(alpha=0.0))
    schedule = _LinearDecay(params, lr, lr * end)
    schedule.plan(total)
    rates: list[float] = []
    for want in (chunks * (total // len(chunks) + 2)):
        if schedule.step >= total:
            break
        n = min(want, schedule.set(), total - schedule.step)
        rates += [params.adamw.alpha] * n
        schedule.step += n
    block = -(-total // _LinearDecay.BLOCKS)
    expected = [lr + (lr * end - lr) * (s - s % block) / total for s in range(total)]
    assert rates == pytest.approx(expected, rel=1e-12, abs=0)
    assert rates[0] == lr and all(a >= b for a, b in itertools.pairwise(rates))
    assert len(set(rates)) <= _LinearDecay.BLOCKS
