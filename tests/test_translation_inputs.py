"""Input checks that seq2seq_attention.py and transformer.py share (the same data and tokenizer code, and the
same flags), each test run on both scripts: what a careless user types gets one sentence, not a silent wrong run."""

import gzip
import re
import typing
import zipfile

import pytest
import torch
from conftest import load_script

SCRIPTS = {name: load_script(name) for name in ("seq2seq_attention", "transformer")}


@pytest.fixture(params=sorted(SCRIPTS))
def m(request):
    """The script's module."""
    return SCRIPTS[request.param]


def test_a_packed_download_given_as_data_is_named_so(m, tmp_path):
    """fra-eng.zip or a .tsv.gz given to --data-path was 'not UTF-8 text: save the file as UTF-8'."""
    with zipfile.ZipFile(tmp_path / "fra-eng.zip", "w") as z:
        z.writestr("fra.txt", "Go.\tVa !\tCC-BY\n")
    with gzip.open(tmp_path / "pairs.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("Go.\tVa !\n")
    for name in ("fra-eng.zip", "pairs.tsv.gz"):
        with pytest.raises(SystemExit, match=re.escape(f"{name} is a zip or gzip file: unpack it, or make the TSV "
                                                       "with data/parallel/prepare.py.")):
            m.read_tsv(str(tmp_path / name))


def test_an_unknown_tiktoken_encoding_is_named_with_the_known_ones(m):
    """A wrongly cased or unknown name was told to set TIKTOKEN_CACHE_DIR."""
    for name in ("GPT2", "cl100k"):
        with pytest.raises(SystemExit, match=f"^--tiktoken-encoding '{name}' is unknown: use one of gpt2, .*cl100k"):
            m.Tokenizer("tiktoken", name)


def test_a_bare_translate_is_refused(m):
    """`--eval-checkpoint X --translate` without a sentence gave () and ran the whole test evaluation instead."""
    with pytest.raises(SystemExit, match="^--translate was given an empty sentence or none: give each sentence"):
        m.validate(m.tyro.cli(m.Args, args=["--eval-checkpoint", "x.pt", "--translate"]), 1)
    m.validate(m.tyro.cli(m.Args, args=["--eval-checkpoint", "x.pt"]), 1)  # no --translate: it evaluates


def test_the_length_penalty_bound_keeps_it_finite(m):
    """--length-penalty 100 made lp inf in float32 and beam search returned '' or a cut date with exit 0: the
    bound is refused beyond, and keeps lp finite far past any decodable length."""
    hi = typing.get_type_hints(m.Args, include_extras=True)["length_penalty"].__metadata__[0].hi
    assert torch.isfinite(m.length_penalty(torch.tensor([2e8]), hi)).all()
    with pytest.raises(SystemExit, match="^--length-penalty 100.0 is not allowed: it must be at least 0 and at most"):
        m.check_args(m.Args(length_penalty=100.0))


def test_data_flags_where_they_do_not_apply_are_refused(m, tmp_path):
    """They were ignored unseen. With a checkpoint the flags are its own: checkpoint_args judges them."""
    refused = [(dict(data_path="x.tsv", num_train=500), "--num-train 500 applies only to the date task"),
               (dict(data_path="x.tsv", num_heldout=50), "--num-heldout 50 applies only to the date task"),
               (dict(heldout_fraction=0.1), "--heldout-fraction 0.1 applies only to a single --data-path file"),
               (dict(data_path=str(tmp_path), heldout_fraction=0.1), "--heldout-fraction 0.1 applies only to"),
               (dict(tiktoken_encoding="cl100k_base"), "--tiktoken-encoding cl100k_base applies only to --tokenizer "
                                                       "tiktoken"),
               (dict(tokenizer="word", bpe_merges=100), "--bpe-merges 100 applies only to --tokenizer bpe")]
    for flags, message in refused:
        with pytest.raises(SystemExit, match=f"^{re.escape(message)}.*: drop it[.]$"):
            m.validate(m.Args(**flags), 1)
        for checkpoint in (dict(resume="x.pt"), dict(eval_checkpoint="x.pt")):
            m.validate(m.Args(**flags, **checkpoint), 1)
    for flags in (dict(num_train=500, num_heldout=50), dict(data_path="x.tsv", heldout_fraction=0.1),
                  dict(tokenizer="tiktoken", tiktoken_encoding="cl100k_base"), dict(tokenizer="bpe", bpe_merges=100),
                  dict(data_path=str(tmp_path), tokenizer="bpe")):
        m.validate(m.Args(**flags), 1)
