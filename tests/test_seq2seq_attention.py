"""seq2seq_attention.py: attention masking, decoding (batched, one by one, beam), BLEU (cased and
lowercased) against sacreBLEU, the date task, the TSV corpus path, the byte-level BPE, length-bucketed
batches, errors, short learning runs, evaluating a checkpoint on another TSV, --translate, and the
Multi30k benchmark."""

import datetime
import gzip
import importlib.util
import itertools
import math
import random
import re
import string
import sys
import time
import zipfile

import pytest
import torch
from conftest import ALGOS, SHARED_DATA, load_script, no_data, run

s2s = load_script("seq2seq_attention")
KINDS = ["bahdanau", "dot", "general"]


def tiny_model(kind: str, src_vocab: int = 12, tgt_vocab: int = 9, seed: int = 0):
    torch.manual_seed(seed)
    return s2s.Seq2Seq(src_vocab, tgt_vocab, embed_dim=8, hidden=6, kind=kind, dropout=0.0).eval()


def random_batch(lengths, vocab: int = 12, seed: int = 0):
    """Right-padded source ids (tokens 4..vocab-1, never a special) and their lengths."""
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths)), s2s.PAD)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, vocab, (n,), generator=g)
    return src, torch.tensor(lengths)


def until_eos(ids) -> list[int]:
    ids = list(ids)
    return ids[:ids.index(s2s.EOS) + 1] if s2s.EOS in ids else ids


# ----------------------------------------------------------------------------- attention
@pytest.mark.parametrize("kind", KINDS)
def test_attention_weights_sum_to_one_and_are_zero_on_padding(kind):
    model = tiny_model(kind)
    src, src_len = random_batch([5, 2, 7, 1])
    state, feed, keys, values, mask = model.encode(src, src_len)
    y = torch.full((4,), s2s.BOS)
    for _ in range(4):  # several steps, so the query is a real decoder state
        logits, state, feed, weights = model.decoder.step(y, state, feed, keys, values, mask)
        y = logits.argmax(-1)
        torch.testing.assert_close(weights.sum(-1), torch.ones(4))
        assert (weights[~mask] == 0).all(), "padding got attention weight"
        assert (weights[mask] > 0).all()
    # The encoder's outputs at padded positions are zero too (packed sequences).
    h = model.encoder(src, src_len)[0]
    assert (h[~mask] == 0).all()


def reference_attention(att, kind, s, h, lengths):
    """e_j, a_j and c of the module docstring, one sentence and one position at a time."""
    weights, contexts = torch.zeros(h.shape[:2]), torch.zeros(h.size(0), h.size(2))
    for b, n in enumerate(lengths):
        scores = []
        for j in range(n):  # real positions only: padding takes no part
            if kind == "bahdanau":  # v^T tanh(W s + U h_j)
                e = att.v.weight[0] @ torch.tanh(att.W.weight @ s[b] + att.U.weight @ h[b, j] + att.U.bias)
            elif kind == "dot":  # s^T h_j
                e = s[b] @ h[b, j]
            else:  # s^T W_a h_j
                e = s[b] @ (att.W_a.weight @ h[b, j])
            scores.append(e)
        a = torch.exp(torch.stack(scores))
        weights[b, :n] = a / a.sum()
        contexts[b] = sum(weights[b, j] * h[b, j] for j in range(n))
    return contexts, weights


@pytest.mark.parametrize("kind", KINDS)
def test_attention_scores_softmax_and_context_match_the_formulas(kind):
    """Each score function against e_j written out (additive, dot, general), the softmax over
    the real source positions of each sentence, and c = sum_j a_j h_j. Padded positions hold
    large junk: the mask must keep it out of the weights and the context."""
    torch.manual_seed(0)
    dim, lengths = 6, [5, 2, 4]
    att = s2s.Attention(kind, dim)
    with torch.no_grad():
        for p in att.parameters():
            p.copy_(torch.randn_like(p))  # larger than the default init: the scores differ clearly
    s, h = 0.5 * torch.randn(3, dim), 0.5 * torch.randn(3, 5, dim)
    mask = torch.arange(5) < torch.tensor(lengths).unsqueeze(1)
    h[~mask] = 50.0  # junk where the padding is
    with torch.no_grad():
        context, weights = att(s, att.keys(h), h, mask)
        expected_context, expected_weights = reference_attention(att, kind, s, h, lengths)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(context, expected_context)
    assert weights.max() < 0.98 and (weights[mask] > 0.01).sum() >= 10  # a real mix, not one-hot


@pytest.mark.parametrize("kind", KINDS)
def test_decoder_step_attends_in_its_papers_order(kind):
    """Bahdanau: s_{t-1} queries, the GRU reads [E y; c_t]. Luong: the GRU reads [E y; h~_{t-1}]
    (input feeding) first, s_t queries, h~_t = tanh(W_c [c_t; s_t]) is the next step's feed."""
    model = tiny_model(kind, seed=7)
    src, src_len = random_batch([5, 2, 7], seed=7)
    state, feed, keys, values, mask = model.encode(src, src_len)
    dec, y = model.decoder, torch.tensor([s2s.BOS, 5, 6])
    with torch.no_grad():
        for _ in range(3):  # later steps too, where the feed is not zero
            logits, new_state, new_feed, weights = dec.step(y, state, feed, keys, values, mask)
            e = dec.embed(y)
            if kind == "bahdanau":
                context, expected_weights = dec.attention(state, keys, values, mask)
                expected_state = dec.cell(torch.cat([e, context], -1), state)
                h_tilde = torch.tanh(dec.combine(torch.cat([expected_state, context, e], -1)))
            else:
                expected_state = dec.cell(torch.cat([e, feed], -1), state)
                context, expected_weights = dec.attention(expected_state, keys, values, mask)
                h_tilde = torch.tanh(dec.combine(torch.cat([context, expected_state], -1)))
            torch.testing.assert_close(weights, expected_weights)
            torch.testing.assert_close(new_state, expected_state)
            torch.testing.assert_close(new_feed, h_tilde)
            torch.testing.assert_close(logits, dec.out(h_tilde))
            state, feed, y = new_state, new_feed, logits.argmax(-1)


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("kind", KINDS)
def test_batched_greedy_equals_one_by_one(kind):
    model = tiny_model(kind)
    lengths = [6, 1, 3, 9, 4, 9, 2]
    src, src_len = random_batch(lengths, seed=1)
    batched, attn = s2s.greedy_decode(model, src, src_len, max_len=12)
    for i, n in enumerate(lengths):
        alone, alone_attn = s2s.greedy_decode(model, src[i:i + 1, :n], src_len[i:i + 1], max_len=12)
        assert until_eos(batched[i].tolist()) == until_eos(alone[0].tolist())
        steps = alone_attn.size(1)
        torch.testing.assert_close(attn[i, :steps, :n], alone_attn[0])


@pytest.mark.parametrize("kind", KINDS)
def test_beam_size_one_equals_greedy(kind):
    model = tiny_model(kind, seed=3)
    src, src_len = random_batch([3, 8, 5, 1, 6], seed=2)
    greedy, _ = s2s.greedy_decode(model, src, src_len, max_len=10)
    for alpha in (0.0, 0.6, 2.0):
        beam = s2s.beam_search(model, src, src_len, beam_size=1, max_len=10, alpha=alpha)
        for g, b in zip(greedy.tolist(), beam.tolist()):
            assert until_eos(g) == until_eos(b)


def sequence_score(model, src, src_len, seq, alpha):
    """log P(seq | src) / lp(|seq|) by teacher forcing."""
    tgt_in = torch.tensor([[s2s.BOS] + seq[:-1]])
    logp = model(src, src_len, tgt_in).log_softmax(-1)[0]
    total = sum(logp[t, token].item() for t, token in enumerate(seq))
    return total / ((5 + len(seq)) / 6) ** alpha


def test_length_penalty_is_gnmt():
    """lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016, eq. 14): 1 at |Y| = 1, 2^alpha at |Y| = 7."""
    lp = s2s.length_penalty(torch.tensor([1.0, 7.0, 19.0]), 0.6)
    torch.testing.assert_close(lp, torch.tensor([1.0, 2 ** 0.6, 4 ** 0.6]))
    torch.testing.assert_close(s2s.length_penalty(torch.tensor([3.0, 9.0]), 0.0), torch.ones(2))


def test_wide_beam_finds_the_exhaustive_best():
    """With a beam wider than the number of hypotheses, beam search is exhaustive: its answer
    must be the best-scoring of all sequences (ending in </s>, or cut at max_len) by
    log P / lp. </s> is made less likely here, so that the length penalty changes the answer:
    [</s>] is best by log P alone (alpha 0), a three-token sequence from alpha 1 on."""
    model = tiny_model("general", tgt_vocab=6, seed=5)
    with torch.no_grad():
        model.decoder.out.bias[s2s.EOS] -= 1.5
    src, src_len = random_batch([4], seed=4)
    max_len, V = 3, 6
    candidates = [list(seq) for n in range(1, max_len + 1) for seq in itertools.product(range(V), repeat=n)
                  if s2s.EOS not in seq[:-1] and (seq[-1] == s2s.EOS or n == max_len)]
    with torch.no_grad():
        log_p = [sequence_score(model, src, src_len, seq, 0.0) for seq in candidates]
    bests = []
    for alpha in (0.0, 0.6, 1.0, 2.0):
        best = max(zip(log_p, candidates), key=lambda x: x[0] / ((5 + len(x[1])) / 6) ** alpha)[1]
        found = s2s.beam_search(model, src, src_len, beam_size=V ** max_len, max_len=max_len, alpha=alpha)
        assert until_eos(found[0].tolist()) == best, alpha
        bests.append(best)
    assert bests[0] == [s2s.EOS] and len(bests[2]) == 3  # the length penalty mattered


def reference_beam(model, src, src_len, K, max_len, alpha, prune_alpha):
    """Beam search for one sentence, written plainly: every live hypothesis extended by every
    token, a finished one kept as it is; the K best by log P / lp(length, prune_alpha) survive;
    the answer is the best by log P / lp(length, alpha)."""
    lp = lambda n, a: ((5 + n) / 6) ** a  # noqa: E731
    beams = [([], 0.0, False)]
    for _ in range(max_len):
        candidates = []
        for seq, log_p, done in beams:
            if done:
                candidates.append((seq, log_p, True))
                continue
            logits = model(src, src_len, torch.tensor([[s2s.BOS] + seq]))[0, -1]
            for token, x in enumerate(logits.log_softmax(-1).tolist()):
                candidates.append((seq + [token], log_p + x, token == s2s.EOS))
        beams = sorted(candidates, key=lambda c: c[1] / lp(len(c[0]), prune_alpha), reverse=True)[:K]
        if all(done for _, _, done in beams):
            break
    return max(beams, key=lambda c: c[1] / lp(len(c[0]), alpha))[0]


def test_narrow_beam_keeps_the_best_by_length_penalised_score():
    """Beam 2 against the plain reference: the K hypotheses kept at each step are the best by
    log P / lp, not by log P (which gives another answer for one sentence here: checked below)."""
    model = tiny_model("bahdanau", seed=11)
    with torch.no_grad():
        model.decoder.out.bias[s2s.EOS] += 0.5  # hypotheses finish early and compete with live ones
    src, src_len = random_batch([3, 6, 4, 5, 2, 6, 3, 4], seed=11)
    alpha, differs = 3.0, 0
    found = s2s.beam_search(model, src, src_len, beam_size=2, max_len=6, alpha=alpha)
    with torch.no_grad():
        for i, n in enumerate(src_len.tolist()):
            one = (src[i:i + 1, :n], src_len[i:i + 1])
            expected = reference_beam(model, *one, 2, 6, alpha, prune_alpha=alpha)
            assert until_eos(found[i].tolist()) == expected, i
            differs += expected != reference_beam(model, *one, 2, 6, alpha, prune_alpha=0.0)
    assert differs >= 1


def test_teacher_forcing_zero_feeds_own_predictions():
    """With teacher forcing 0 the training forward pass feeds back its own argmax: its
    predictions are exactly greedy decoding's, whatever the target says."""
    model = tiny_model("bahdanau", seed=6)
    src, src_len = random_batch([5, 3], seed=6)
    greedy, _ = s2s.greedy_decode(model, src, src_len, max_len=6)
    junk_target = torch.full((2, 6), 7)
    junk_target[:, 0] = s2s.BOS
    free_running = model(src, src_len, junk_target, teacher_forcing=0.0).argmax(-1)
    for g, f in zip(greedy.tolist(), free_running.tolist()):
        assert until_eos(g) == until_eos(f)[:len(until_eos(g))]


def record_decoder_inputs(model, monkeypatch) -> list:
    """Make model.decoder.step record the token each step reads (and its logits)."""
    calls, step = [], model.decoder.step

    def recording(y_prev, *rest):
        logits, *out = step(y_prev, *rest)
        calls.append((y_prev.clone(), logits.detach()))
        return (logits, *out)

    monkeypatch.setattr(model.decoder, "step", recording)
    return calls


def test_teacher_forcing_one_reads_the_true_previous_token(monkeypatch):
    """Step t reads <s> then y_1 .. y_{t-1}: the logits of forward() are the decoder's step by step
    on the true prefix, and position t's logits do not depend on y_t or later tokens."""
    model = tiny_model("dot", seed=8)
    src, src_len = random_batch([4, 6], seed=8)
    tgt_in = torch.tensor([[s2s.BOS, 5, 6, 7, 8], [s2s.BOS, 8, 4, 4, 5]])
    calls = record_decoder_inputs(model, monkeypatch)
    with torch.no_grad():
        logits = model(src, src_len, tgt_in)
    assert torch.equal(torch.stack([y for y, _ in calls], 1), tgt_in)
    changed = tgt_in.clone()
    changed[:, 3:] = 4
    with torch.no_grad():
        torch.testing.assert_close(model(src, src_len, changed)[:, :3], logits[:, :3])
        assert not torch.allclose(model(src, src_len, changed)[:, 3:], logits[:, 3:])


def test_teacher_forcing_feeds_own_guesses_at_the_right_rate(monkeypatch):
    """--teacher-forcing 0.7: each step after the first reads the true token with probability 0.7
    and the model's own argmax of the previous step otherwise (0.3 of 1800 draws here)."""
    model = tiny_model("bahdanau", seed=9)
    src, src_len = random_batch([3, 5] * 100, seed=9)
    junk = 8  # a token the model never predicts: a step that reads it reads the true token
    with torch.no_grad():
        model.decoder.out.bias[junk] = -100.0
    tgt_in = torch.full((200, 10), junk)
    tgt_in[:, 0] = s2s.BOS
    calls = record_decoder_inputs(model, monkeypatch)
    torch.manual_seed(0)
    with torch.no_grad():
        model(src, src_len, tgt_in, teacher_forcing=0.7)
    own = 0
    for t in range(1, 10):
        y, previous_guess = calls[t][0], calls[t - 1][1].argmax(-1)
        assert (previous_guess != junk).all()
        assert ((y == junk) | (y == previous_guess)).all()
        own += int((y != junk).sum())
    assert 0.27 < own / 1800 < 0.33, own / 1800


def test_loss_ignores_padding():
    logits = torch.randn(2, 4, 9)
    target = torch.tensor([[5, 6, s2s.EOS, s2s.PAD], [5, 6, 7, s2s.EOS]])
    changed = logits.clone()
    changed[0, 3] = 100 * torch.randn(9)  # the padded position's logits do not matter
    assert s2s.sequence_loss(logits, target) == s2s.sequence_loss(changed, target)


# ----------------------------------------------------------------------------- BLEU
SENTENCES = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("the cat is on a mat", "There is a cat on the mat."),
    ("It costs $3.50, or 3,50 EUR -- cheap!", "It costs $3.50 (3,50 EUR): cheap!"),
    ("He said &quot;no&quot; &amp; left", 'He said "no" & left.'),
    ("1998-03-03", "1998-03-03"),
    ("well-known 1990-1999 results", "well-known results from 1990-1999"),
    ("Hello", "Hello world, this is a much longer reference sentence."),
    ("", "An empty hypothesis."),
    ("L'homme a dit: <oui> {non} [peut-être] @home #1 ~ ^ _ |", "L'homme a dit : oui ou non ?"),
    ("Ça va très bien, merci.", "Ça va bien, merci !"),
]


SACREBLEU_MISSING = "sacreBLEU is a test dependency: pip install -r requirements.txt"


def test_13a_tokenizer_matches_sacrebleu():
    pytest.importorskip("sacrebleu", reason=SACREBLEU_MISSING)
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    reference = Tokenizer13a()
    rng = random.Random(0)
    alphabet = string.printable + "éß€–"
    lines = [h for pair in SENTENCES for h in pair]
    lines += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    for line in lines:
        assert s2s.tokenize_13a(line) == reference(line.rstrip()).split(), repr(line)


def test_bleu_formula_by_hand():
    """Worked by hand, so a wrong formula fails without sacreBLEU too: clipped n-gram counts
    summed over the corpus, the geometric mean of p_1..p_4, and the brevity penalty."""
    # "a" twice in the hypothesis, once in the reference: clipped to 1. p_n = 5/6, 4/5, 3/4, 2/3.
    assert s2s.corpus_bleu(["a a b c d e"], ["a b c d e f"]) == pytest.approx(100 * (1 / 3) ** 0.25)
    # All n-grams match but the hypothesis is 6 tokens for 8: BP = exp(1 - 8/6).
    assert s2s.corpus_bleu(["a b c d e f"], ["a b c d e f g h"]) == pytest.approx(100 * math.exp(-1 / 3))
    # Longer than the reference: no bonus, BP = 1; p_n = 6/8, 5/7, 4/6, 3/5.
    assert s2s.corpus_bleu(["a b c d e f g h"], ["a b c d e f"]) == pytest.approx(
        100 * (6 / 8 * 5 / 7 * 4 / 6 * 3 / 5) ** 0.25)
    # A corpus sums counts before dividing: (5+6)/(6+6), (4+5)/(5+5), (3+4)/(4+4), (2+3)/(3+3), BP = 1.
    assert s2s.corpus_bleu(["a a b c d e", "u v w x y z"], ["a b c d e f", "u v w x y z"]) == pytest.approx(
        100 * (11 / 12 * 9 / 10 * 7 / 8 * 5 / 6) ** 0.25)


def test_bleu_equals_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu", reason=SACREBLEU_MISSING)
    hyps, refs = [h for h, _ in SENTENCES], [r for _, r in SENTENCES]
    cases = [(hyps, refs), (hyps[:1], refs[:1]), (hyps[1:3], refs[1:3]), (["a b c d e"], ["a b x d e"]),
             (["the the the the"], ["the cat"]), (["a b"], ["c d"]), (["x y z"], ["x y z w"])]
    rng = random.Random(1)
    words = "a the cat dog sat on mat , . is".split()
    for _ in range(50):  # random corpora: partial matches, brevity, missing n-gram orders
        n = rng.randint(1, 6)
        cases.append(([" ".join(rng.choices(words, k=rng.randint(0, 9))) for _ in range(n)],
                      [" ".join(rng.choices(words, k=rng.randint(1, 9))) for _ in range(n)]))
    for h, r in cases:
        expected = sacrebleu.corpus_bleu(h, [r]).score
        assert s2s.corpus_bleu(h, r) == pytest.approx(expected, abs=1e-9), (h, r)
    assert s2s.corpus_bleu(refs, refs) == pytest.approx(100.0)


def test_lowercased_bleu_equals_sacrebleu_lc():
    """lowercase=True is sacreBLEU's -lc: both sides lowercased, then 13a; it differs from the cased score."""
    sacrebleu = pytest.importorskip("sacrebleu", reason=SACREBLEU_MISSING)
    hyps, refs = [h for h, _ in SENTENCES], [r for _, r in SENTENCES]
    cases = [(hyps, refs), (["THE Cat sat on The MAT ."], ["The cat sat on the mat."]),
             (["Ein Mann fährt ÜBER die Straße."], ["ein mann fährt über die straße ."])]
    rng = random.Random(2)
    words = "A a The the CAT cat Dog dog , . Is is Über über".split()
    for _ in range(50):
        n = rng.randint(1, 6)
        cases.append(([" ".join(rng.choices(words, k=rng.randint(0, 9))) for _ in range(n)],
                      [" ".join(rng.choices(words, k=rng.randint(1, 9))) for _ in range(n)]))
    for h, r in cases:
        expected = sacrebleu.corpus_bleu(h, [r], lowercase=True).score
        assert s2s.corpus_bleu(h, r, lowercase=True) == pytest.approx(expected, abs=1e-9), (h, r)
    shouted = ["THE CAT SAT ON THE MAT."]
    assert s2s.corpus_bleu(shouted, ["The cat sat on the mat."], lowercase=True) == pytest.approx(100.0)
    assert s2s.corpus_bleu(shouted, ["The cat sat on the mat."]) < 20


# ----------------------------------------------------------------------------- data
def test_ordinals():
    assert [s2s.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"]


def test_date_formats_are_unambiguous():
    """Every format of a date names that date: the day, the month and the year can be read off."""
    for d in (datetime.date(1998, 3, 3), datetime.date(1950, 1, 1), datetime.date(2049, 12, 31),
              datetime.date(2012, 11, 22)):
        texts = s2s.date_formats(d)
        assert len(set(texts)) == len(texts) == 13
        for text in texts:
            numbers = [int(x) for x in re.findall(r"\d+", text)]
            assert d.day in numbers and (d.year in numbers or d.year % 100 in numbers), text
    assert s2s.date_formats(datetime.date(1998, 3, 3))[:5] == [
        "3 March 1998", "03/03/98", "March 3rd, 1998", "Tuesday, 3 Mar 1998", "1998-3-3"]


def test_date_task_is_deterministic_with_held_out_dates():
    data = s2s.date_task(num_train=3000, num_heldout=300)
    assert data == s2s.date_task(num_train=3000, num_heldout=300)
    assert {k: len(v) for k, v in data.items()} == {"train": 3000, "val": 300, "test": 300}
    train_dates = {t for _, t in data["train"]}
    test_dates, val_dates = {t for _, t in data["test"]}, {t for _, t in data["val"]}
    assert len(test_dates) == len(val_dates) == 300
    assert not (train_dates & test_dates) and not (train_dates & val_dates) and not (val_dates & test_dates)
    for source, target in data["test"]:
        assert target in {datetime.date.fromisoformat(target).isoformat()}
        assert source in s2s.date_formats(datetime.date.fromisoformat(target))
    assert len({s for s, _ in data["train"]}) > 2500  # many formats, not one
    with pytest.raises(SystemExit, match="--num-heldout"):
        s2s.date_task(num_train=10, num_heldout=20_000)


def test_tokenizers_round_trip():
    word = s2s.Tokenizer("word")
    assert word.split("Il a dit : « non », d'accord?! C'est peut-être 3,50 $ -- U.S.A.") == [
        "Il", "a", "dit", ":", "«", "non", "»", ",", "d'accord", "?", "!", "C'est", "peut-être", "3,50", "$", "--",
        "U.S.A", "."]
    # A perfect word-level translation scores exact match 1 and BLEU 100, whatever its punctuation
    # (score() compares with the reference split and joined alike; 13a alone would not split « ¿ „ …).
    refs = [r for _, r in SENTENCES] + ["Don't go -- it's 5 p.m. now...", "Wait!! What?!", "Tom's (Mary's) cat/dog.",
                                        "Tom est là.", "¿Cómo estás?", "Il a dit «non».", "Er sagte „ja“.",
                                        "Wait…"]
    vocab = s2s.Vocab([t for r in refs for t in word.split(r)])
    perfect = [vocab.encode(word.split(r)) + [s2s.EOS] for r in refs]
    scores = s2s.score(perfect, refs, vocab, word)
    assert scores["exact_match"] == 1.0 and scores["bleu"] == pytest.approx(100.0)
    assert s2s.score(perfect[::-1], refs, vocab, word)["exact_match"] < 0.2  # and it can fail
    assert s2s.Tokenizer("char").join(s2s.Tokenizer("char").split("a b.")) == "a b."
    vocab = s2s.Vocab(list("abca"))
    assert vocab.itos[:5] == ["<pad>", "<s>", "</s>", "<unk>", "a"]
    assert vocab.encode(["a", "z"]) == [4, s2s.UNK]
    assert vocab.decode([4, 5, s2s.EOS, 6]) == ["a", vocab.itos[5]]


UNICODE_CASES = ["", " ", "Ein Mann fährt Fahrrad.", "Größe, Übermaß, Äpfel, Öl, Straße", "Emoji 👩‍👩‍👧 🚲🇩🇪!",
                 "中文和日本語のテキスト", "한국어", "e\u0301 a\u0308 combining marks", "tabs\tand\nnewlines\r\n",
                 "  leading and trailing  ", "\u200b\ufeff\U0001f600\x00\x7f", "مرحبا بالعالم", "Ελληνικά"]


def test_bpe_round_trips_any_unicode():
    """Byte-level BPE learned from a little German and English: every string (umlauts, emoji, CJK,
    combining marks, control characters, the empty string, random code points) splits and joins back
    exactly, and the merges do their work (a frequent word becomes one token)."""
    train = [("Ein Mann fährt Fahrrad.", "A man rides a bike."), ("Zwei Männer fahren Fahrrad.", "Two men ride bikes."),
             ("Ein Hund läuft über das Gras.", "A dog runs across the grass.")] * 20
    tok = s2s.Tokenizer("bpe", train_texts=[t for pair in train for t in pair], bpe_merges=60)
    assert len(tok.bpe.ranks) == 60
    assert " Fahrrad" in tok.split("Ein Mann fährt Fahrrad.")  # merged whole
    assert len(tok.split("Ein Mann fährt Fahrrad.")) < len("Ein Mann fährt Fahrrad.".encode()) / 2
    rng = random.Random(0)
    fuzz = ["".join(chr(rng.choice([rng.randrange(32, 0x250), rng.randrange(0x250, 0xD7FF),
                                    rng.randrange(0xE000, 0x10FFFF)])) for _ in range(rng.randint(0, 20)))
            for _ in range(500)]
    for text in UNICODE_CASES + fuzz:
        assert tok.join(tok.split(text)) == text, repr(text)
    assert tok.split("") == []
    untrained = s2s.Tokenizer("bpe", train_texts=[], bpe_merges=100)  # no merges: bytes, still exact
    assert all(untrained.join(untrained.split(t)) == t for t in UNICODE_CASES)


def test_epoch_order_buckets_by_length():
    """--bucket-pool 0 is the plain permutation (bit for bit what the date task always drew); a pool
    gives a permutation of whole batches whose pairs have similar lengths, in a shuffled batch order."""
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(2, 40, (1000,), generator=g)
    assert torch.equal(s2s.epoch_order(lengths, 32, 0, torch.Generator().manual_seed(7)),
                       torch.randperm(1000, generator=torch.Generator().manual_seed(7)))
    order = s2s.epoch_order(lengths, 32, 5, torch.Generator().manual_seed(7))
    assert len(order) == 1000 // 32 * 32 and len(set(order.tolist())) == len(order)  # full batches, no repeat
    batches = lengths[order].view(-1, 32)
    plain = lengths[torch.randperm(1000, generator=torch.Generator().manual_seed(7))[:len(order)]].view(-1, 32)
    def padding(b):  # the pad tokens a batch of these lengths needs
        return int((b.max(1).values.unsqueeze(1) - b).sum())
    assert padding(batches) < padding(plain) / 3, (padding(batches), padding(plain))
    assert (batches.max(1).values - batches.min(1).values).float().mean() < 10  # spread 37 unbucketed
    firsts = batches[:, 0].tolist()
    assert firsts != sorted(firsts)  # the batches are shuffled, not served shortest first
    assert not torch.equal(order, s2s.epoch_order(lengths, 32, 5, torch.Generator().manual_seed(8)))


@pytest.mark.parametrize("bf16", [False, True])
def test_cpu_bf16_autocast_keeps_the_loss(bf16):
    """--cpu-bf16 runs the forward pass in bfloat16 autocast; the loss stays within 2% of float32."""
    model, (src, src_len) = tiny_model("bahdanau", src_vocab=50, tgt_vocab=40), random_batch([7, 5, 3], vocab=50)
    tgt = torch.randint(4, 40, (3, 6), generator=torch.Generator().manual_seed(1))
    tgt_in = torch.cat([torch.full((3, 1), s2s.BOS), tgt[:, :-1]], 1)
    reference = s2s.sequence_loss(model(src, src_len, tgt_in), tgt)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(src, src_len, tgt_in)
    assert logits.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert s2s.sequence_loss(logits, tgt).item() == pytest.approx(reference.item(), rel=0.02 if bf16 else 1e-6)


def test_tiktoken_tokenizer(monkeypatch):
    if not (SHARED_DATA / "tiktoken_cache").is_dir():
        pytest.skip(f"tiktoken cannot load gpt2 offline: {no_data('tiktoken_cache')}")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))
    tok = s2s.Tokenizer("tiktoken", "gpt2")
    assert tok.split("hello world") == ["31373", "995"]
    assert tok.join(tok.split("Où est la gare ?")) == "Où est la gare ?"
    assert tok.join(tok.split("a <|endoftext|> b")) == "a <|endoftext|> b"  # a special token's text in a sentence is plain text


def write_corpus(path, n: int, seed: int = 0):
    """A synthetic word-level 'translation': digits spelled in English -> in French, reversed."""
    en = "zero one two three four five six seven eight nine".split()
    fr = "zéro un deux trois quatre cinq six sept huit neuf".split()
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            digits = [rng.randrange(10) for _ in range(rng.randint(1, 5))]
            f.write(" ".join(en[d] for d in digits) + "\t" + " ".join(fr[d] for d in reversed(digits)) + "\n")


def test_tsv_corpus_split_and_folder(tmp_path):
    write_corpus(tmp_path / "pairs.tsv", 200)
    data = s2s.tsv_corpus(str(tmp_path / "pairs.tsv"), 0.1)
    assert {k: len(v) for k, v in data.items()} == {"test": 20, "val": 20, "train": 160}
    assert data["train"][0][1].split()[0] in "zéro un deux trois quatre cinq six sept huit neuf".split()
    folder = tmp_path / "split"
    folder.mkdir()
    for name, n in (("train", 50), ("val", 5), ("test", 7)):
        write_corpus(folder / f"{name}.tsv", n, seed=len(name))
    assert {k: len(v) for k, v in s2s.tsv_corpus(str(folder), 0.1).items()} == {"train": 50, "val": 5, "test": 7}
    (tmp_path / "bad.tsv").write_text("one\tun\nno tab here\n")
    with pytest.raises(SystemExit, match="line 2"):
        s2s.tsv_corpus(str(tmp_path / "bad.tsv"), 0.1)
    with pytest.raises(SystemExit, match="without"):
        s2s.tsv_corpus(str(tmp_path), 0.1)


def test_tsv_headers_extra_columns_and_encodings(tmp_path):
    """A first line of column names is skipped, not counted as a pair; a first line of what may be
    language codes is refused (it may be a pair); a third column, an empty field and a non-UTF-8
    byte are refused with the file and the line."""
    pairs = [("one two", "deux un"), ("three", "trois")]
    body = "".join(f"{a}\t{b}\n" for a, b in pairs)
    for header in ("source\ttarget", "SRC\tTGT", "Source\tTarget"):
        (tmp_path / "h.tsv").write_text(f"\n{header}\n{body}", encoding="utf-8")
        assert s2s.read_tsv(str(tmp_path / "h.tsv")) == pairs, header
    for header in ("en\tfr", "de\ten", "en-US\tpt_BR", "is\tes"):
        (tmp_path / "h.tsv").write_text(f"{header}\n{body}", encoding="utf-8")
        with pytest.raises(SystemExit, match="h.tsv line 1 .* may be a header of language codes or a pair"):
            s2s.read_tsv(str(tmp_path / "h.tsv"))
    (tmp_path / "h.tsv").write_text(f"source\ttarget\n{body}", encoding="utf-8-sig")  # a BOM first (Notepad, Excel)
    assert s2s.read_tsv(str(tmp_path / "h.tsv")) == pairs
    (tmp_path / "h.tsv").write_text("three\ttrois\nen\tfr\nsource\ttarget\n", encoding="utf-8")  # later: pairs
    assert s2s.read_tsv(str(tmp_path / "h.tsv")) == [("three", "trois"), ("en", "fr"), ("source", "target")]
    for first in ("Go\tVa", "one\tun", "source\tsource code"):  # not column names, not two 2-letter codes
        (tmp_path / "h.tsv").write_text(f"{first}\n", encoding="utf-8")
        assert s2s.read_tsv(str(tmp_path / "h.tsv")) == [tuple(first.split("\t"))]
    for text, line in (("one\tun\ntwo\tdeux\tCC-BY #2\n", 2), ("one\tun\n\ntwo\t \n", 3)):
        (tmp_path / "bad.tsv").write_text(text, encoding="utf-8")
        with pytest.raises(SystemExit, match=f"bad.tsv line {line} has .* not 'source<TAB>target'"):
            s2s.read_tsv(str(tmp_path / "bad.tsv"))
    (tmp_path / "latin1.tsv").write_bytes("one\tun\ncafé\tcoffee\n".encode("latin-1"))
    with pytest.raises(SystemExit, match="latin1.tsv line 2 is not UTF-8"):
        s2s.read_tsv(str(tmp_path / "latin1.tsv"))
    (tmp_path / "only_header.tsv").write_text("source\ttarget\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="has 0 pairs"):
        s2s.tsv_corpus(str(tmp_path / "only_header.tsv"), 0.1)


def test_prepare_script_writes_tsv(tmp_path):
    """data/parallel/prepare.py on a small zip in manythings.org's layout and Multi30k-style files."""
    spec = importlib.util.spec_from_file_location("prepare", ALGOS.parent / "data" / "parallel" / "prepare.py")
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    lines = "Go.\tVa !\tCC-BY 2.0 (France) #1 & #2\nGo.\tVa !\tCC-BY #3\nHi.\tSalut\t !\tCC-BY #4\n"
    with zipfile.ZipFile(tmp_path / "fra-eng.zip", "w") as z:
        z.writestr("_about.txt", "about")
        z.writestr("fra.txt", lines)
    prepare.main(["anki", str(tmp_path / "fra-eng.zip"), "--out", str(tmp_path / "eng-fra.tsv")])
    assert (tmp_path / "eng-fra.tsv").read_text(encoding="utf-8") == "Go.\tVa !\nHi.\tSalut\n"
    prepare.main(["anki", str(tmp_path / "fra-eng.zip"), "--out", str(tmp_path / "r.tsv"), "--reverse"])
    assert s2s.read_tsv(str(tmp_path / "r.tsv")) == [("Va !", "Go."), ("Salut", "Hi.")]
    raw = tmp_path / "raw"
    raw.mkdir()
    for stem in ("train", "val", "test_2016_flickr"):
        (raw / f"{stem}.en").write_text("A dog.\nTwo  men\tsit.\n", encoding="utf-8")
        with gzip.open(raw / f"{stem}.de.gz", "wt", encoding="utf-8") as f:
            f.write("Ein Hund.\nZwei Männer sitzen.\n")
    prepare.main(["multi30k", str(raw), "--out", str(tmp_path / "m30k")])
    data = s2s.tsv_corpus(str(tmp_path / "m30k"), 0.05)
    assert data["test"] == [("A dog.", "Ein Hund."), ("Two men sit.", "Zwei Männer sitzen.")]


def test_bad_flags_fail_with_one_sentence(tmp_path):
    proc = run([sys.executable, str(ALGOS / "seq2seq_attention.py"), "--teacher-forcing", "1.5"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "--teacher-forcing 1.5 is not allowed: it must be at least 0 and at most 1." in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run([sys.executable, str(ALGOS / "seq2seq_attention.py"), "--data-path", "nowhere.tsv"], cwd=tmp_path)
    assert proc.returncode != 0 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    for flag, value, rule in (("length_penalty", math.nan, "at least 0 and at most 5"), ("grad_clip", 0.0, "above 0"),
                              ("dropout", 1.0, "at least 0 and at most 0.99"),
                              ("heldout_fraction", 0.5, "above 0 and at most 0.49")):
        with pytest.raises(SystemExit, match=re.escape(f"--{flag.replace('_', '-')} {value} is not allowed: "
                                                       f"it must be {rule}.")):
            s2s.check_args(s2s.Args(**{flag: value}))
    with pytest.raises(SystemExit, match=r"^--translate needs a trained model: add --eval-checkpoint"):
        s2s.main(s2s.Args(translate=("Ein Mann fährt Fahrrad.",)))
    with pytest.raises(SystemExit, match="--translate was given an empty sentence"):
        s2s.main(s2s.Args(eval_checkpoint="x.pt", translate=(" ",)))


# ----------------------------------------------------------------------------- learning
def test_learns_the_date_task(tmp_path, monkeypatch):
    """A short run (a fifth of the default) already translates held-out dates: greedy exact
    match 0.987 (seed 1). Measured in a copy: with the attention context zeroed (no attention)
    the same run scores 0.007, and an untrained model (1 iteration) 0."""
    monkeypatch.chdir(tmp_path)
    metrics = s2s.main(s2s.Args(num_iterations=250, eval_interval=250, num_train=8000, num_heldout=300,
                                beam_size=3))
    assert metrics["eval/exact_match"] >= 0.95, metrics
    assert metrics["eval/exact_match_beam"] >= metrics["eval/exact_match"] - 0.01, metrics
    assert metrics["val/loss"] < 0.1
    assert list(tmp_path.glob("runs/*/attention.png"))


def test_learns_a_tsv_corpus_with_words(tmp_path, monkeypatch, capsys):
    """Word-level 'translation' with dot attention: the digits spelled in French, in reverse
    order, which a decoder can only do well by looking back at the source. Seed 1 scores greedy
    BLEU 97.6 and exact match 0.98. Measured in a copy: with the attention context zeroed (no
    attention) BLEU 67.9 and exact match 0.75; with uniform weights over the source (the context
    a plain mean of h_j) 87.3 and 0.91; untrained (1 iteration) 0.1 and 0.03. The bars sit
    between the working model and those."""
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "pairs.tsv", 3000)
    metrics = s2s.main(s2s.Args(data_path=str(tmp_path / "pairs.tsv"), tokenizer="word", num_iterations=200,
                                eval_interval=200, heldout_fraction=0.05, attention="dot", teacher_forcing=0.8,
                                beam_size=3, save_model=True))
    assert metrics["eval/bleu"] > 93 and metrics["eval/exact_match"] >= 0.95, metrics
    [checkpoint] = tmp_path.glob("runs/*/seq2seq_attention.pt")
    assert s2s.load_checkpoint(str(checkpoint), "--eval-checkpoint")["iteration"] == 200
    # --eval-checkpoint takes the data and model flags from the checkpoint and scores it alike.
    evaluated = s2s.main(s2s.Args(eval_checkpoint=str(checkpoint), beam_size=3))
    assert evaluated == {k: v for k, v in metrics.items() if k.startswith("eval/")}
    with pytest.raises(SystemExit, match="--hidden-size 32 [(]it has 64[)]"):
        s2s.main(s2s.Args(eval_checkpoint=str(checkpoint), hidden_size=32))
    # Its own file, spelled another way, is its own data: the test split, not all 3,000 pairs (seen in training).
    assert s2s.main(s2s.Args(eval_checkpoint=str(checkpoint), data_path="./pairs.tsv", beam_size=3)) == evaluated
    snapshot = checkpoint.with_name("snapshot.pt")  # a resume without --save-model saves to the file it resumed
    snapshot.write_bytes(checkpoint.read_bytes())
    s2s.main(s2s.Args(resume=str(snapshot), num_iterations=201, eval_interval=200, attention="dot", beam_size=1))
    assert s2s.load_checkpoint(str(snapshot), "--resume")["iteration"] == 201
    assert s2s.load_checkpoint(str(checkpoint), "--resume")["iteration"] == 200

    # --eval-checkpoint with another --data-path: the model's vocabularies, that file's pairs (all 40).
    write_corpus(tmp_path / "other.tsv", 40, seed=5)
    capsys.readouterr()
    other = s2s.main(s2s.Args(eval_checkpoint=str(checkpoint), data_path=str(tmp_path / "other.tsv"), beam_size=3))
    assert f"test (40 pairs) after 200 iterations ({checkpoint}) on {tmp_path / 'other.tsv'}" in capsys.readouterr().out
    assert other["eval/bleu"] > 90 and other["eval/bleu_beam"] > 90, other
    lines = (tmp_path / "other.tsv").read_text(encoding="utf-8").splitlines()
    sources, targets = [line.split("\t")[0] for line in lines], [line.split("\t")[1] for line in lines]
    (tmp_path / "wrong.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in zip(sources, targets[1:] + targets[:1])),
                                        encoding="utf-8")  # each source beside another sentence's target
    wrong = s2s.main(s2s.Args(eval_checkpoint=str(checkpoint), data_path=str(tmp_path / "wrong.tsv"), beam_size=3))
    assert wrong["eval/bleu"] < 40, wrong

    # --translate reads no pairs: another --data-path beside it was ignored unseen; refused as transformer.py does.
    with pytest.raises(SystemExit, match=r"trained with other data or another model: --data-path .*other.tsv [(]it"):
        s2s.main(s2s.Args(eval_checkpoint=str(checkpoint), data_path=str(tmp_path / "other.tsv"), translate=("one",)))
    # --translate: each sentence greedy and beam, and a heat map beside the checkpoint.
    s2s.main(s2s.Args(eval_checkpoint=str(checkpoint), translate=("one two three", "nine nine"), beam_size=3))
    printed = capsys.readouterr().out
    assert "'one two three'\n  greedy: 'trois deux un'\n  beam 3: 'trois deux un'" in printed
    assert "'nine nine'\n  greedy: 'neuf neuf'" in printed
    for i in (1, 2):
        figure = checkpoint.parent / f"translation_{i}.png"
        assert f"attention heat map: {figure}" in printed and figure.read_bytes()[:4] == b"\x89PNG"
    # Translating again numbers on past the heat maps already there (1 gone: its number is free again).
    kept = (checkpoint.parent / "translation_2.png").read_bytes()
    (checkpoint.parent / "translation_1.png").unlink()
    s2s.main(s2s.Args(eval_checkpoint=str(checkpoint), translate=("one", "two"), beam_size=3))
    printed = capsys.readouterr().out
    for i in (1, 3):
        assert f"attention heat map: {checkpoint.parent / f'translation_{i}.png'}" in printed
    assert (checkpoint.parent / "translation_2.png").read_bytes() == kept


@pytest.mark.parametrize("bucket_pool", [0, 3])
def test_resume_after_ctrl_c_continues_exactly(tmp_path, monkeypatch, capsys, bucket_pool):
    """A run stopped (as by Ctrl-C) at iteration 30 and resumed ends with the weights, optimizer
    state and metrics of the run that was never stopped: dropout, teacher forcing and the length-bucketed
    batch order included (600 pairs, batches of 32: the epoch ends at iteration 18 and 36). With
    --save-model the checkpoint is also written at every --eval-interval."""
    monkeypatch.chdir(tmp_path)
    args = dict(num_iterations=50, eval_interval=20, num_train=600, num_heldout=30, embed_dim=8, hidden_size=16,
                batch_size=32, teacher_forcing=0.7, beam_size=2, save_model=True, bucket_pool=bucket_pool)
    saved, save_checkpoint = [], s2s.save_checkpoint
    monkeypatch.setattr(s2s, "save_checkpoint", lambda path, state: saved.append(state["iteration"]) or
                        save_checkpoint(path, state))
    straight = s2s.main(s2s.Args(exp_name="straight", **args))
    assert saved == [20, 40, 50]

    class StopAt30:  # stands in for Ctrl-C during iteration 30
        requested = property(lambda self: self.calls.append(1) or len(self.calls) > 30)

        def __init__(self):
            self.calls = []

    monkeypatch.setattr(s2s, "StopFlag", StopAt30)
    saved.clear()
    with pytest.raises(SystemExit) as stopped:
        s2s.main(s2s.Args(exp_name="stopped", **args))
    assert stopped.value.code == 130
    assert saved == [20, 30]
    printed = capsys.readouterr().out
    [checkpoint] = tmp_path.glob("runs/*stopped*/seq2seq_attention.pt")
    assert f"interrupted at iteration 30\nsaved {checkpoint.relative_to(tmp_path)}\n" in printed
    assert printed.strip().splitlines()[-1].endswith(f"--resume {checkpoint.relative_to(tmp_path)}")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    resumed = s2s.main(s2s.Args(resume=str(checkpoint.relative_to(tmp_path)), **args))
    assert {k: v for k, v in resumed.items() if k not in ("wall_time", "ms_per_iter")} == \
        {k: v for k, v in straight.items() if k not in ("wall_time", "ms_per_iter")}
    [a] = [s2s.load_checkpoint(str(p), "--resume") for p in tmp_path.glob("runs/*straight*/seq2seq_attention.pt")]
    b = s2s.load_checkpoint(str(checkpoint), "--resume")  # rewritten by the resumed run at its end
    assert a["iteration"] == b["iteration"] == 50
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, b["optimizer"]["state"][i][n]) for i, state in a["optimizer"]["state"].items()
               for n, x in state.items())
    with pytest.raises(SystemExit, match="already at iteration 50: raise --num-iterations"):
        s2s.main(s2s.Args(resume=str(checkpoint), **args))


# ----------------------------------------------------------------------------- benchmarks
LINE = re.compile(r"test \((\d+) pairs\) after (\d+) iterations in ([\d.]+) s: greedy exact match ([\d.]+) "
                  r"BLEU ([\d.]+) \(lowercased ([\d.]+)\) \| beam (\d+) exact match ([\d.]+) BLEU ([\d.]+) "
                  r"\(lowercased ([\d.]+)\)")


@pytest.mark.benchmark
@pytest.mark.parametrize("attention", KINDS)
def test_benchmark_date_task(attention):
    """The issue's bar: the default command, >= 99% greedy exact match on held-out dates within
    5 minutes on 2 CPU cores, beam search no worse than greedy. Seeds 1-5, one at a time."""
    rows = []
    for seed in (1, 2, 3, 4, 5):
        start = time.time()
        proc = run([sys.executable, str(ALGOS / "seq2seq_attention.py"), "--attention", attention,
                    "--seed", str(seed)], cwd=ALGOS.parent, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        n, iters, train_s, greedy, bleu, _, beam, beam_em, beam_bleu, _ = LINE.search(proc.stdout).groups()
        rows.append(dict(seed=seed, greedy=float(greedy), beam=float(beam_em), bleu=float(bleu),
                         train_s=float(train_s), wall_s=time.time() - start))
    print(f"\nseq2seq_attention.py --attention {attention}")
    print("| seed | greedy exact match | beam 5 exact match | greedy BLEU | train s | process wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['greedy']:.4f} | {r['beam']:.4f} | {r['bleu']:.2f} | {r['train_s']:.1f} | "
              f"{r['wall_s']:.1f} |")
    assert all(r["greedy"] >= 0.99 for r in rows)
    assert all(r["beam"] >= r["greedy"] for r in rows)
    assert all(r["wall_s"] <= 300 for r in rows)


# The README's Multi30k command (German -> English), after data/parallel/prepare.py multi30k.
ROOT_DIR = ALGOS.parent
MULTI30K_DATA = "data/parallel/multi30k-de-en"
MULTI30K_COMMAND = ["--data-path", MULTI30K_DATA, "--tokenizer", "bpe", "--bpe-merges", "8000",
                    "--embed-dim", "256", "--hidden-size", "256", "--dropout", "0.3", "--batch-size", "128",
                    "--bucket-pool", "100", "--cpu-bf16", "--learning-rate", "2e-3", "--num-iterations", "3000",
                    "--eval-interval", "500", "--save-model", "--exp-name", "multi30k"]


@pytest.mark.benchmark
def test_benchmark_multi30k():
    """The issue's bar on test_2016_flickr: greedy lowercased BLEU >= 28.3 (bentrevett's GRU + attention,
    whose spaCy-tokenised lowercased BLEU is only indicatively comparable), beam 5 ahead of greedy by
    >= 0.3 on the same checkpoint, at most 60 minutes of training on one thread of this CPU."""
    if not (ROOT_DIR / MULTI30K_DATA / "train.tsv").is_file():
        if not (SHARED_DATA / "multi30k").is_dir():
            pytest.skip(f"needs {ROOT_DIR / MULTI30K_DATA} (data/parallel/prepare.py multi30k) or "
                        f"{no_data('multi30k')}")
        proc = run([sys.executable, "data/parallel/prepare.py", "multi30k", str(SHARED_DATA / "multi30k"), "--out",
                    MULTI30K_DATA, "--src", "de", "--tgt", "en"], cwd=ROOT_DIR)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run([sys.executable, str(ALGOS / "seq2seq_attention.py"), *MULTI30K_COMMAND], cwd=ROOT_DIR,
               timeout=2 * 3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n, iters, train_s, _, bleu, bleu_lc, beam, _, beam_bleu, beam_lc = LINE.search(proc.stdout).groups()
    print(f"\nMulti30k de->en, test_2016_flickr ({n} pairs), {iters} iterations in {train_s} s: greedy BLEU {bleu} "
          f"(lowercased {bleu_lc}), beam {beam} BLEU {beam_bleu} (lowercased {beam_lc})")
    assert int(n) == 1000
    assert float(bleu_lc) >= 28.3
    assert float(beam_lc) >= float(bleu_lc) + 0.3
    assert float(train_s) <= 3600
