"""transformer.py: sinusoidal positions, the written-out multi-head attention against PyTorch's, masks,
cached incremental decoding, greedy and beam decoding, the label-smoothed loss, the schedule, resume, and a
short learning run."""

import dataclasses
import itertools
import math
import random
import re
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from conftest import ALGOS, SHARED_DATA, load_script, no_data, run, script_env
from scripts import SCRIPTS

tf = load_script("transformer")
VARIANTS = list(itertools.product(["post", "pre"], ["sinusoidal", "learned"]))


def tiny_model(norm="post", pos="sinusoidal", src_vocab=12, tgt_vocab=9, seed=0, **kw):
    torch.manual_seed(seed)
    return tf.Transformer(src_vocab, tgt_vocab, d_model=16, n_heads=4, num_layers=2, d_ff=32, dropout=0.0,
                          norm=norm, pos=pos, max_positions=64, **kw).eval()


def random_batch(lengths, vocab: int = 12, seed: int = 0) -> torch.Tensor:
    """Right-padded ids (tokens 4..vocab-1, never a special)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max(lengths)), tf.PAD)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(4, vocab, (n,), generator=g)
    return ids


def until_eos(ids) -> list[int]:
    ids = list(ids)
    return ids[:ids.index(tf.EOS) + 1] if tf.EOS in ids else ids


# ----------------------------------------------------------------------------- positions
def test_sinusoidal_table_is_the_formula():
    pe = tf.sinusoidal_table(50, 8)
    for p, i in itertools.product(range(50), range(4)):
        angle = p / 10000 ** (2 * i / 8)
        assert math.isclose(pe[p, 2 * i], math.sin(angle), abs_tol=1e-6)
        assert math.isclose(pe[p, 2 * i + 1], math.cos(angle), abs_tol=1e-6)


@pytest.mark.parametrize("k", [1, 7, 40])
def test_sinusoidal_shift_is_one_fixed_rotation_for_every_position(k):
    """PE(p + k) = M_k PE(p) for every p, with M_k block-diagonal: on each (sin, cos) pair of frequency w a
    rotation by k w. M_k depends on k alone, not on p: the relative-position property of sec. 3.5."""
    d, P = 16, 200
    pe = tf.sinusoidal_table(P + k, d).double()
    M = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        a = k / 10000 ** (2 * i / d)
        M[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.tensor([[math.cos(a), math.sin(a)],
                                                              [-math.sin(a), math.cos(a)]])
    assert torch.allclose(pe[k:k + P], pe[:P] @ M.T, atol=1e-5)
    assert torch.allclose(M @ M.T, torch.eye(d, dtype=torch.float64))  # a rotation: lengths kept


# ----------------------------------------------------------------------------- attention
def test_multi_head_attention_equals_pytorchs_scaled_dot_product_attention():
    torch.manual_seed(0)
    mha = tf.MultiHeadAttention(d_model=24, n_heads=3, dropout=0.0)
    x_q, x_kv = torch.randn(3, 5, 24), torch.randn(3, 7, 24)
    padding = (random_batch([7, 4, 2], seed=1) != tf.PAD).unsqueeze(1)   # (B, 1, S)
    causal = torch.ones(5, 5, dtype=torch.bool).tril().unsqueeze(0)      # (1, T, T)
    for x, mask in ((x_kv, padding), (x_q, causal), (x_kv, torch.ones(1, 1, 7, dtype=torch.bool))):
        k, v = mha.keys_values(x)
        ours = mha(x_q, k, v, mask)
        q = mha.split_heads(mha.w_q(x_q))
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1))  # (B, h, T, d_k)
        ref = mha.w_o(ref.transpose(1, 2).reshape(3, 5, 24))
        assert torch.allclose(ours, ref, atol=1e-6)
        assert torch.allclose(mha.weights.sum(-1), torch.ones(3, 3, 5))


def test_padding_never_receives_attention_and_the_decoder_never_sees_the_future():
    model = tiny_model()
    src, tgt_in = random_batch([6, 3, 1]), random_batch([5, 5, 5], vocab=9, seed=2)
    logits = model(src, tgt_in)
    pad = (src == tf.PAD)[:, None, None, :]  # (B, 1, 1, S)
    for layer in model.encoder:
        assert (layer.self_attn.weights.masked_select(pad) == 0).all()
    for layer in model.decoder:
        assert (layer.cross_attn.weights.masked_select(pad) == 0).all()
        future = torch.ones(5, 5, dtype=torch.bool).triu(1)
        assert (layer.self_attn.weights[..., future] == 0).all()
    # Changing target tokens after position t changes no logit at positions <= t.
    changed = tgt_in.clone()
    changed[:, 3:] = 4
    assert torch.equal(model(src, changed)[:, :3], logits[:, :3])
    # A sentence's logits do not depend on its batchmates (nor on how much padding they bring).
    for i, n in enumerate([6, 3, 1]):
        alone = model(src[i:i + 1, :n], tgt_in[i:i + 1])
        assert torch.allclose(alone, logits[i:i + 1], atol=1e-5)


@pytest.mark.parametrize("norm,pos", VARIANTS)
def test_cached_incremental_decoding_equals_full_recomputation(norm, pos):
    model = tiny_model(norm, pos, tie_output=True)
    src, tgt_in = random_batch([6, 3, 5]), random_batch([7, 7, 7], vocab=9, seed=3)
    full = model(src, tgt_in)
    state = model.start(src)
    for t in range(7):
        assert torch.allclose(model.step(tgt_in[:, t], state, t), full[:, t], atol=1e-5)
        assert state.caches[0]["k"].shape == (3, 4, t + 1, 4)  # the cache grew by one position


# ----------------------------------------------------------------------------- decoding
def test_beam_size_one_equals_greedy():
    for seed in range(3):
        model = tiny_model(seed=seed)
        src = random_batch([6, 3, 5, 1], seed=seed)
        greedy = tf.greedy_decode(model, src, max_len=12)
        for alpha in (0.0, 0.6):
            beam = tf.beam_search(model, src, beam_size=1, max_len=12, alpha=alpha)
            assert [until_eos(r) for r in beam.tolist()] == [until_eos(r) for r in greedy.tolist()]


def test_batched_decoding_equals_one_by_one():
    model = tiny_model(share_embeddings=True, src_vocab=12, tgt_vocab=12)
    lengths = [6, 3, 5, 1, 4]
    src = random_batch(lengths, seed=4)
    greedy = tf.greedy_decode(model, src, max_len=12).tolist()
    beam = tf.beam_search(model, src, beam_size=3, max_len=12, alpha=0.6).tolist()
    for i, n in enumerate(lengths):
        assert until_eos(tf.greedy_decode(model, src[i:i + 1, :n], 12)[0].tolist()) == until_eos(greedy[i])
        one = tf.beam_search(model, src[i:i + 1, :n], 3, 12, 0.6)[0].tolist()
        assert until_eos(one) == until_eos(beam[i])


def test_wider_beam_scores_at_least_as_well_as_greedy():
    """The beam keeps greedy's path among its candidates until something scores better, so the chosen
    hypothesis's length-penalised log-probability is never below greedy's."""
    model = tiny_model(seed=5)
    src = random_batch([6, 3, 5, 2], seed=5)

    def penalised(ids_row, i):
        ids = until_eos(ids_row)
        tgt_in = torch.tensor([[tf.BOS] + ids[:-1]])
        logp = model(src[i:i + 1], tgt_in).log_softmax(-1)[0, torch.arange(len(ids)), ids].sum()
        return logp / tf.length_penalty(torch.tensor(float(len(ids))), 0.6)

    greedy, beam = tf.greedy_decode(model, src, 12), tf.beam_search(model, src, 4, 12, 0.6)
    for i in range(4):
        if tf.EOS in greedy[i].tolist() and tf.EOS in beam[i].tolist():
            assert penalised(beam[i].tolist(), i) >= penalised(greedy[i].tolist(), i) - 1e-5


# ----------------------------------------------------------------------------- training
def test_label_smoothed_loss_by_hand():
    logits = torch.tensor([[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0], [5.0, -5.0, 1.0, 1.0]]])
    target = torch.tensor([[3, 1, tf.PAD]])  # the third position is padding: it does not count
    eps, V = 0.1, 4
    total = 0.0
    for row, y in ((logits[0, 0].tolist(), 3), (logits[0, 1].tolist(), 1)):
        log_z = math.log(sum(math.exp(z) for z in row))
        q = [(1 - eps) * (v == y) + eps / V for v in range(V)]
        total += -sum(q_v * (z - log_z) for q_v, z in zip(q, row))
    assert math.isclose(tf.label_smoothed_loss(logits, target, eps).item(), total / 2, rel_tol=1e-6)
    # PyTorch's label_smoothing spreads eps the same way; eps = 0 is the plain cross-entropy
    flat = logits.flatten(0, 1), target.flatten()
    assert torch.allclose(tf.label_smoothed_loss(logits, target, eps),
                          F.cross_entropy(*flat, ignore_index=tf.PAD, label_smoothing=eps))
    assert torch.allclose(tf.label_smoothed_loss(logits, target, 0.0),
                          F.cross_entropy(*flat, ignore_index=tf.PAD))


def test_noam_schedule_is_the_papers_formula_and_cosine_warms_up_the_same():
    d, warmup = 512, 4000
    args = tf.Args(schedule="noam", warmup_steps=warmup, learning_rate=(d * warmup) ** -0.5,
                   num_iterations=10**5)
    for step in (1, 10, 1000, 3999, 4000, 4001, 10_000, 100_000):
        paper = d ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)  # eq. 3
        assert math.isclose(tf.learning_rate_at(step, args), paper, rel_tol=1e-12)
    assert math.isclose(tf.learning_rate_at(4000, args), 512 ** -0.5 * 4000 ** -0.5)  # the peak, 7.0e-4
    cos = tf.Args(schedule="cosine", warmup_steps=100, learning_rate=1e-3, num_iterations=1100)
    assert math.isclose(tf.learning_rate_at(50, cos), 0.5e-3)
    assert math.isclose(tf.learning_rate_at(100, cos), 1e-3)
    assert math.isclose(tf.learning_rate_at(600, cos), 0.55e-3)   # halfway down the cosine
    assert math.isclose(tf.learning_rate_at(1100, cos), 1e-4)     # a tenth at the last step
    noam = dataclasses.replace(cos, schedule="noam")
    assert math.isclose(tf.learning_rate_at(50, cos), tf.learning_rate_at(50, noam))  # the same warmup


def test_bad_flags_fail_with_one_sentence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a refused run may have made its run folder
    proc = run([sys.executable, str(ALGOS / "transformer.py"), "--d-model", "30", "--n-heads", "4"],
               cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--d-model 30 is not a multiple of --n-heads 4" in proc.stderr
    with pytest.raises(SystemExit, match=re.escape("--label-smoothing 1.0 is not allowed: it must be at "
                                                   "least 0 and at most 0.99.")):
        tf.check_args(tf.Args(label_smoothing=1.0))
    with pytest.raises(SystemExit, match="is longer than --max-positions 8"):
        tf.main(tf.Args(max_positions=8, num_iterations=2, warmup_steps=1))
    with pytest.raises(SystemExit, match="--translate needs a trained model"):
        tf.main(tf.Args(translate=("12 May 1970",)))
    with pytest.raises(SystemExit, match="--translate was given an empty sentence"):
        tf.main(tf.Args(translate=(" ",), eval_checkpoint="x.pt"))


def test_warmup_must_end_before_the_last_iteration():
    """--num-iterations at or below --warmup-steps (100 by default) never reached the peak step size nor ran the
    schedule after it: refused; a resumed run is judged by its new total; --eval-checkpoint trains nothing."""
    with pytest.raises(SystemExit, match="^--warmup-steps 100 is not below --num-iterations 40: .* lower --warmup-"):
        tf.validate(tf.Args(num_iterations=40), 1)
    with pytest.raises(SystemExit, match="^--warmup-steps 100 is not below --num-iterations 100"):
        tf.validate(tf.Args(resume="x.pt", num_iterations=100), 1)
    tf.validate(tf.Args(resume="x.pt", num_iterations=101), 1)
    tf.validate(tf.Args(eval_checkpoint="x.pt", num_iterations=40), 1)
    tiny = tf.tyro.cli(tf.Args, args=SCRIPTS["transformer.py"]["tiny"])  # the shared tests' run reaches its peak
    tf.validate(tiny, 1)
    assert tf.learning_rate_at(tiny.warmup_steps, tiny) == tiny.learning_rate


def test_save_model_checkpoints_at_every_eval_interval(tmp_path, monkeypatch):
    """A long run with --save-model loses at most one --eval-interval if it is killed."""
    monkeypatch.chdir(tmp_path)
    saved = []
    monkeypatch.setattr(tf, "save_checkpoint", lambda path, state: saved.append(state["iteration"]))
    tf.main(tf.Args(num_iterations=50, eval_interval=20, num_train=300, num_heldout=20, d_model=16, d_ff=32,
                    beam_size=1, save_model=True, warmup_steps=10))
    assert saved == [20, 40, 50]


# ----------------------------------------------------------------------------- batches of similar length
def padding(order: torch.Tensor, lengths: torch.Tensor, batch: int) -> int:
    """Padding tokens of the batches that order makes (each batch padded to its longest)."""
    rows = lengths[order].view(-1, batch)
    return int((rows.max(dim=1).values.unsqueeze(1) - rows).sum())


def test_epoch_order_batches_pairs_of_similar_length():
    """pool 0 is the plain permutation; pool k draws the same pairs (the full batches of that permutation)
    into batches of near-equal length: on Multi30k-like lengths, padding falls to under a fifth."""
    lengths = torch.randint(6, 40, (3000,), generator=torch.Generator().manual_seed(0))
    plain = tf.epoch_order(lengths, 64, 0, torch.Generator().manual_seed(5))
    assert torch.equal(plain, torch.randperm(3000, generator=torch.Generator().manual_seed(5)))
    bucketed = tf.epoch_order(lengths, 64, 10, torch.Generator().manual_seed(5))
    assert len(bucketed) == 3000 // 64 * 64
    assert sorted(bucketed.tolist()) == sorted(plain[:len(bucketed)].tolist())  # the same pairs, once each
    assert padding(bucketed, lengths, 64) < padding(plain[:len(bucketed)], lengths, 64) / 5
    again = tf.epoch_order(lengths, 64, 10, torch.Generator().manual_seed(5))
    assert torch.equal(bucketed, again)  # seeded: a resumed run redraws the same epochs
    longest = lengths[bucketed].view(-1, 64).max(dim=1).values[:10]
    assert not all(longest[:-1] <= longest[1:])  # the batches are shuffled (unshuffled, a pool ascends)


# ----------------------------------------------------------------------------- learning and resume
def test_learns_the_date_task(tmp_path, monkeypatch):
    """A fifth of the default run already translates held-out dates: greedy exact match 0.987 (seed 1,
    18 s). Measured in a copy: with the cross-attention's output zeroed (a decoder that cannot read the
    source) the same run scores 0.000 (BLEU 3.3), and an untrained model (1 iteration) 0.000."""
    monkeypatch.chdir(tmp_path)
    metrics = tf.main(tf.Args(num_iterations=400, eval_interval=400, num_train=8000, num_heldout=300,
                              beam_size=3))
    assert metrics["eval/exact_match"] >= 0.9, metrics
    assert metrics["eval/exact_match_beam"] >= metrics["eval/exact_match"] - 0.01, metrics
    assert list(tmp_path.glob("runs/*/cross_attention.png"))


def test_resume_after_ctrl_c_continues_exactly(tmp_path, monkeypatch, capsys):
    """A run stopped (as by Ctrl-C) at iteration 30 and resumed ends with the weights, optimizer state and
    metrics of the run that was never stopped, dropout included; --eval-checkpoint scores it alike."""
    monkeypatch.chdir(tmp_path)
    args = dict(num_iterations=50, eval_interval=20, num_train=600, num_heldout=30, d_model=16, d_ff=32,
                batch_size=32, beam_size=2, save_model=True, dropout=0.1, norm="pre", pos="learned",
                share_embeddings=True, tie_output=True, warmup_steps=10)
    straight = tf.main(tf.Args(exp_name="straight", **args))

    class StopAt30:  # stands in for Ctrl-C during iteration 30
        requested = property(lambda self: self.calls.append(1) or len(self.calls) > 30)

        def __init__(self):
            self.calls = []

    monkeypatch.setattr(tf, "StopFlag", StopAt30)
    with pytest.raises(SystemExit) as stopped:
        tf.main(tf.Args(exp_name="stopped", **args))
    assert stopped.value.code == 130
    printed = capsys.readouterr().out
    [checkpoint] = tmp_path.glob("runs/*stopped*/transformer.pt")
    assert f"interrupted at iteration 30\nsaved {checkpoint.relative_to(tmp_path)}\n" in printed
    assert printed.strip().splitlines()[-1].endswith(f"--resume {checkpoint.relative_to(tmp_path)}")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    resumed = tf.main(tf.Args(resume=str(checkpoint.relative_to(tmp_path)), **args))
    assert {k: v for k, v in resumed.items() if k not in ("wall_time", "ms_per_iter")} == \
        {k: v for k, v in straight.items() if k not in ("wall_time", "ms_per_iter")}
    [a] = [tf.load_checkpoint(str(p), "--resume") for p in tmp_path.glob("runs/*straight*/transformer.pt")]
    b = tf.load_checkpoint(str(checkpoint), "--resume")  # rewritten by the resumed run at its end
    assert a["iteration"] == b["iteration"] == 50
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    evaluated = tf.main(tf.Args(eval_checkpoint=str(checkpoint), beam_size=2))
    assert evaluated == {k: v for k, v in straight.items() if k.startswith("eval/")}
    capsys.readouterr()
    source = tf.date_task(600, 30)["test"][0][0]  # --translate decodes as the test set's evaluation does
    tf.main(tf.Args(eval_checkpoint=str(checkpoint), beam_size=2, translate=(source, "12 May 1970")))
    printed = capsys.readouterr().out
    assert printed.count("greedy: '") == 2 and printed.count("beam 2: '") == 2
    assert (checkpoint.parent / "translation_1.png").stat().st_size > 0
    assert (checkpoint.parent / "translation_2.png").stat().st_size > 0
    tf.main(tf.Args(eval_checkpoint=str(checkpoint), beam_size=2, translate=("12 May 1970",)))  # 1, 2 are kept
    assert f"cross-attention heat map: {checkpoint.parent / 'translation_3.png'}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--d-model 32 [(]it has 16[)]"):
        tf.main(tf.Args(eval_checkpoint=str(checkpoint), d_model=32))


def test_bleu_equals_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu", reason="sacreBLEU is a test dependency: pip install -r "
                                    "requirements.txt")
    rng = random.Random(1)
    words = "a the cat dog sat on mat , . is 3.50 well-known (x)".split()
    cases = [(["The cat sat on the mat."], ["The cat sat on the mat."]), (["x y z"], ["x y z w"]),
             (["a b"], ["c d"])]
    for _ in range(50):  # random corpora: partial matches, brevity, missing n-gram orders
        n = rng.randint(1, 6)
        cases.append(([" ".join(rng.choices(words, k=rng.randint(0, 9))) for _ in range(n)],
                      [" ".join(rng.choices(words, k=rng.randint(1, 9))) for _ in range(n)]))
    cased = ["The Cat sat", "the cat Sat on THE mat .", "A DOG", "a dog is well-known"]
    for _ in range(30):  # and the lowercased score (sacreBLEU's -lc) where case differs
        cases.append(([" ".join(rng.choices(cased, k=2))], [" ".join(rng.choices(cased, k=2))]))
    for h, r in cases:
        assert tf.corpus_bleu(h, r) == pytest.approx(sacrebleu.corpus_bleu(h, [r]).score, abs=1e-9), (h, r)
        assert tf.corpus_bleu(h, r, lowercase=True) == pytest.approx(
            sacrebleu.corpus_bleu(h, [r], lowercase=True).score, abs=1e-9), (h, r)
    shout, ref = ["A DOG RUNS ON THE GRASS ."], ["a dog runs on the grass ."]
    assert tf.corpus_bleu(shout, ref) < 10 and tf.corpus_bleu(shout, ref, lowercase=True) == pytest.approx(100)


# ----------------------------------------------------------------------------- BPE and a TSV corpus
def naive_bpe(texts, num_merges):
    """The plain loop: recount every pair of the whole corpus before each merge."""
    words = Counter(w for t in texts for w in tf.BytePairEncoding.WORDS.findall(t))
    symbols = {w: list(w.encode().decode("latin-1")) for w in words}
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for w, s in symbols.items():
            for p in zip(s, s[1:]):
                pairs[p] += words[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # the most frequent; ties: the smaller pair
        merges.append(best)
        symbols = {w: tf.BytePairEncoding.merge(s, best) for w, s in symbols.items()}
    return merges


def test_bpe_learns_the_merges_of_the_plain_loop_and_round_trips():
    texts = ["the cat sat on the mat", "the dog ate the hat", "Ça va très bien, merci !",
             "lower lowest newer newest wider", "Männer sind im Freien."] * 3
    for n in (0, 1, 10, 60, 500):  # 500: more merges than pairs; it stops when every word is one symbol
        bpe = tf.BytePairEncoding(texts, n)
        assert list(bpe.ranks) == naive_bpe(texts, n), n
        for t in texts + ["unseen wörds, 日本語 and  two  spaces\t!"]:
            assert bpe.join(bpe.split(t)) == t
    bpe = tf.BytePairEncoding(texts, 60)
    assert bpe.split("the cat") == ["the", " cat"]  # frequent words become one symbol, with their space
    assert list(bpe.ranks)[0] == ("a", "t")  # in cat, sat, mat, ate, hat: 15 times, the most frequent pair


def write_corpus(path, n: int, seed: int = 0):
    """A synthetic 'translation': digits spelled in English -> in French, reversed."""
    en = "zero one two three four five six seven eight nine".split()
    fr = "zéro un deux trois quatre cinq six sept huit neuf".split()
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            digits = [rng.randrange(10) for _ in range(rng.randint(1, 5))]
            f.write(" ".join(en[d] for d in digits) + "\t" + " ".join(fr[d] for d in reversed(digits)) + "\n")


def test_learns_a_tsv_corpus_with_bpe(tmp_path, monkeypatch):
    """Subwords learned from the training split (40 merges) feed the same model: seed 1 scores greedy BLEU
    94.5 and exact match 0.93 after 200 steps. Measured in a copy: with the cross-attention's output zeroed
    BLEU 0.9 and exact match 0; untrained (1 iteration) BLEU 0.05."""
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "pairs.tsv", 3000)
    metrics = tf.main(tf.Args(data_path=str(tmp_path / "pairs.tsv"), tokenizer="bpe", bpe_merges=40,
                              num_iterations=200, eval_interval=200, heldout_fraction=0.05, beam_size=3))
    assert metrics["eval/bleu"] > 85, metrics


def test_short_position_table_checkpoint_used_elsewhere_and_resume_without_save_model(tmp_path, monkeypatch):
    """With twice the longest target past --max-positions, decoding and the final heat map (which re-reads
    <s> and the output) stay inside the position table; a checkpoint trained on a relative --data-path is used
    from another folder; a --translate sentence longer than the table is one sentence; a resumed run without
    --save-model keeps its steps in the file it resumed. Also: a BOM before a header line of column names."""
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    rng = random.Random(0)
    pairs = "".join(f"{rng.choice('abc')}\t{''.join(rng.choice('xyz') for _ in range(9))}\n" for _ in range(300))
    (tmp_path / "here" / "pairs.tsv").write_bytes("\ufeffsource\ttarget\n".encode() + pairs.encode())
    assert tf.read_tsv("pairs.tsv")[0] == tuple(pairs.split("\n")[0].split("\t"))  # the header is skipped
    args = dict(num_iterations=10, eval_interval=10, d_model=16, d_ff=32, n_heads=2, num_layers=1, batch_size=16,
                beam_size=2, heldout_fraction=0.05, warmup_steps=5)
    trained = tf.main(tf.Args(data_path="pairs.tsv", max_positions=10, save_model=True, **args))  # 9 + </s>
    [checkpoint] = (tmp_path / "here").glob("runs/*/transformer.pt")
    monkeypatch.chdir(tmp_path / "elsewhere")
    evaluated = tf.main(tf.Args(eval_checkpoint=str(checkpoint), beam_size=2))
    assert evaluated == {k: v for k, v in trained.items() if k.startswith("eval/")}
    with pytest.raises(SystemExit, match="--translate sentence 2 has 11 tokens, more than the 10 positions"):
        tf.main(tf.Args(eval_checkpoint=str(checkpoint), translate=("ab", "a" * 11)))
    (tmp_path / "here").rename(tmp_path / "moved")  # the data moved: given again, it stands in
    with pytest.raises(SystemExit, match="pairs.tsv, which is not there now: give its data with --data-path"):
        tf.main(tf.Args(eval_checkpoint=str(tmp_path / "moved" / checkpoint.relative_to(tmp_path / "here"))))
    checkpoint = tmp_path / "moved" / checkpoint.relative_to(tmp_path / "here")
    moved = tf.main(tf.Args(eval_checkpoint=str(checkpoint), data_path="../moved/pairs.tsv", beam_size=2))
    assert moved == evaluated
    snapshot = checkpoint.with_name("snapshot.pt")
    snapshot.write_bytes(checkpoint.read_bytes())
    tf.main(tf.Args(resume=str(snapshot), data_path="../moved/pairs.tsv", **{**args, "num_iterations": 12}))
    assert tf.load_checkpoint(str(snapshot), "--resume")["iteration"] == 12  # the file it resumed, no other
    assert tf.load_checkpoint(str(checkpoint), "--resume")["iteration"] == 10


def test_a_diverging_run_stops_at_the_step_its_loss_is_not_finite(tmp_path, monkeypatch):
    """Checked at every step, not only at the evaluations (every 1,000 steps here)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^step [1-3]: the training loss is (nan|inf)"):
        tf.main(tf.Args(num_iterations=50, eval_interval=1000, num_train=300, num_heldout=20, d_model=16, d_ff=32,
                        learning_rate=1e30, warmup_steps=1, grad_clip=1e30))


# ----------------------------------------------------------------------------- benchmark
LINE = re.compile(r"test \((\d+) pairs\) after (\d+) iterations in ([\d.]+) s: greedy exact match ([\d.]+) "
                  r"BLEU ([\d.]+) \(lowercased [\d.]+\) \| beam (\d+) exact match ([\d.]+) BLEU ([\d.]+)")


@pytest.mark.benchmark
def test_benchmark_date_task():
    """The issue's bar: the default command, >= 99.9% greedy exact match on 1,000 held-out dates within
    3 minutes on this CPU, beam search no worse than greedy. Seeds 1-5, one at a time."""
    rows = []
    for seed in (1, 2, 3, 4, 5):
        start = time.time()
        proc = run([sys.executable, str(ALGOS / "transformer.py"), "--seed", str(seed)], cwd=ALGOS.parent,
                   timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        n, iters, train_s, greedy, bleu, beam, beam_em, beam_bleu = LINE.search(proc.stdout).groups()
        rows.append(dict(seed=seed, greedy=float(greedy), beam=float(beam_em), bleu=float(bleu),
                         train_s=float(train_s), wall_s=time.time() - start))
    print("\ntransformer.py")
    print("| seed | greedy exact match | beam 5 exact match | greedy BLEU | train s | process wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['greedy']:.4f} | {r['beam']:.4f} | {r['bleu']:.2f} | {r['train_s']:.1f} | "
              f"{r['wall_s']:.1f} |")
    assert all(r["greedy"] >= 0.999 for r in rows)
    assert all(r["beam"] >= r["greedy"] for r in rows)
    assert all(r["wall_s"] <= 180 for r in rows)


# The README's Multi30k command (after `python data/parallel/prepare.py multi30k ... --src de --tgt en`).
MULTI30K = ["--data-path", "data/parallel/multi30k-de-en", "--tokenizer", "bpe", "--bpe-merges", "8000",
            "--share-embeddings", "--tie-output", "--d-model", "256", "--n-heads", "8", "--num-layers", "3",
            "--d-ff", "512", "--dropout", "0.1", "--batch-size", "128", "--bucket-pool", "100", "--cpu-bf16",
            "--learning-rate", "1e-3", "--warmup-steps", "400", "--num-iterations", "4000",
            "--eval-interval", "500", "--save-model", "--exp-name", "multi30k"]
M30K_LINE = re.compile(r"test \(1000 pairs\) after (\d+) iterations in ([\d.]+) s: greedy exact match [\d.]+ "
                       r"BLEU ([\d.]+) \(lowercased ([\d.]+)\) \| beam 5 exact match [\d.]+ BLEU ([\d.]+) "
                       r"\(lowercased ([\d.]+)\)")


# seq2seq_attention.py's README Multi30k command given as many iterations as fill the Transformer's training
# time on this CPU (about 530 ms a step against the Transformer's 660, validations included).
SEQ2SEQ_SAME_TIME = ["--data-path", "data/parallel/multi30k-de-en", "--tokenizer", "bpe", "--embed-dim", "256",
                     "--hidden-size", "256", "--dropout", "0.3", "--batch-size", "128", "--bucket-pool", "100",
                     "--cpu-bf16", "--learning-rate", "2e-3", "--num-iterations", "5000", "--eval-interval", "500",
                     "--exp-name", "multi30k-same-time"]


@pytest.mark.benchmark
def test_benchmark_multi30k(tmp_path):
    """The issue's bar on Multi30k de->en test_2016_flickr: greedy lowercased BLEU >= 34 within 60 minutes of
    training on this CPU, beam 5 ahead of greedy, and ahead of seq2seq_attention.py trained as long, side by
    side (one process a core, started together). Prepares the data from the offline copy."""
    raw = SHARED_DATA / "multi30k"
    if not raw.is_dir():
        pytest.skip(no_data("multi30k"))
    prepared = run([sys.executable, str(ALGOS.parent / "data/parallel/prepare.py"), "multi30k", str(raw),
                    "--out", str(tmp_path / "data/parallel/multi30k-de-en"), "--src", "de", "--tgt", "en"],
                   cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    procs = {}  # output to files: a full pipe would stall a process while the other is waited for
    for name, flags in (("transformer.py", MULTI30K), ("seq2seq_attention.py", SEQ2SEQ_SAME_TIME)):
        with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
            procs[name] = subprocess.Popen([sys.executable, str(ALGOS / name), *flags], cwd=tmp_path,
                                           env=script_env(), stdout=out, stderr=err)
    results = {}
    for name, proc in procs.items():
        proc.wait(timeout=5400)
        out, err = (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()
        assert proc.returncode == 0, err[-2000:]
        iters, train_s, bleu, bleu_lc, beam, beam_lc = M30K_LINE.search(out).groups()
        print(f"\n{name} on Multi30k: {iters} iterations in {float(train_s):.0f} s; greedy BLEU {bleu} "
              f"(lowercased {bleu_lc}), beam 5 {beam} (lowercased {beam_lc})")
        results[name] = float(train_s), float(bleu_lc), float(beam_lc)
    train_s, bleu_lc, beam_lc = results["transformer.py"]
    assert train_s <= 3600
    assert bleu_lc >= 34
    assert beam_lc > bleu_lc
    gru_s, gru_bleu_lc, gru_beam_lc = results["seq2seq_attention.py"]
    assert gru_s >= 0.95 * train_s, "the comparison needs the GRU trained at least about as long"
    assert bleu_lc > gru_bleu_lc and beam_lc > gru_beam_lc
