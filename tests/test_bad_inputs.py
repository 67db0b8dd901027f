"""Bad input as a careless user types it, for every script in algos/.

The rule (issue 16): every try either runs correctly or exits non-zero with one line on stderr
and no traceback, and no run's work is lost. Two layers:
- in-process, hundreds of cases in a second: every numeric field of `Args` declares its valid
  `Range`, and `check_args` refuses 0, -1, nan, inf, a bound or the value just past it wherever
  that Range excludes them, with one sentence that names the flag and the value;
- end to end, a few subprocess runs per script with the tiny arguments of tests/scripts.py: one
  nonsense value, a network larger than memory, a run folder that cannot be created, two twins
  started together, a truncated and a byte-flipped checkpoint, Ctrl-C (SIGINT) mid-run followed
  by the command it prints, and Ctrl-C in the final evaluation after training.
"""

import dataclasses
import math
import shlex
import signal
import subprocess
import sys
import threading
import time
import typing

import pytest
from conftest import ALGOS, parse_command_line, run, script_env, script_module
from scripts import SCRIPTS, check_metrics_jsonl

ALL = sorted(p.stem for p in ALGOS.glob("*.py"))
PROBES = (0, -1, math.nan, math.inf, -math.inf)


def entry(script: str, key: str):
    if key not in SCRIPTS.get(f"{script}.py", {}):
        pytest.fail(f"tests/scripts.py has no '{key}' for algos/{script}.py: add it (see its docstring).")
    return SCRIPTS[f"{script}.py"][key]


def numeric_fields(module) -> dict:
    """Args fields whose values are numbers (int, float, a tuple of them, or Optional of them):
    name -> (the number type, its Range or None)."""
    out = {}
    for name, hint in typing.get_type_hints(module.Args, include_extras=True).items():
        rules = [m for m in getattr(hint, "__metadata__", ()) if type(m).__name__ == "Range"]
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if typing.get_origin(base) is typing.Union:  # Optional[X]
            base = next(a for a in typing.get_args(base) if a is not type(None))
        if typing.get_origin(base) is tuple:
            base = typing.get_args(base)[0]
        if base in (int, float):
            out[name] = (base, rules[0] if rules else None)
    return out


def allowed(rule, v) -> bool:
    lo_ok = v > rule.lo if rule.lo_open else v >= rule.lo
    return math.isfinite(v) and lo_ok and v <= rule.hi


@pytest.mark.parametrize("script", ALL)
def test_every_numeric_field_declares_its_range(script):
    fields = numeric_fields(script_module(script))
    assert fields, f"{script}.py: found no numeric Args fields"
    missing = sorted(name for name, (_, rule) in fields.items() if rule is None)
    assert not missing, f"{script}.py: numeric fields without a Range: {missing}"


def edges(kind, rule) -> list:
    """Each finite bound of a Range and the nearest value past it (the next float, or the next int)."""
    out = []
    for bound, outward in ((rule.lo, -math.inf), (rule.hi, math.inf)):
        if math.isfinite(bound):
            past = math.nextafter(bound, outward) if kind is float else int(bound) + (1 if outward > 0 else -1)
            out += [kind(bound), past]
    return out


@pytest.mark.parametrize("script", ALL)
def test_out_of_range_values_are_refused_with_one_sentence(script):
    """0, -1, nan, +-inf, and each bound of the field's Range and the value just past it: a value outside
    is refused with one sentence that names the flag and the value, a value inside is accepted."""
    module = script_module(script)
    base, tried, refused = module.Args(), 0, 0
    for name, (kind, rule) in numeric_fields(module).items():
        is_tuple = isinstance(getattr(base, name), tuple)
        for probe in (*PROBES, *edges(kind, rule)):
            if kind is int and not math.isfinite(probe):
                continue  # tyro refuses "nan" for an int field before any of our code runs
            value = kind(probe)
            args = dataclasses.replace(base, **{name: (value,) if is_tuple else value})
            tried += 1
            if allowed(rule, value):
                module.check_args(args)
                continue
            with pytest.raises(SystemExit) as refusal:
                module.check_args(args)
            message = str(refusal.value.code)
            flag = "--" + name.replace("_", "-")
            assert message.startswith(f"{flag} {value} is not allowed: it must be "), f"{script}.py: {message!r}"
            assert "\n" not in message, f"{script}.py {flag} {value}: more than one line"
            refused += 1
        if kind is float:
            assert not allowed(rule, math.nan) and not allowed(rule, math.inf), f"{name} admits nan or inf"
    print(f"{script}.py: {tried} values tried in-process, {refused} refused")
    assert refused > 0


@pytest.mark.parametrize("script", ALL)
def test_an_empty_optional_text_is_refused_with_one_sentence(script):
    """An Optional[str] flag (a checkpoint, a data path, the wandb entity) given "": None means "not given", and an
    empty value used to pass for it unseen (levin_ts.py, seq2seq_attention.py and transformer.py trained from
    scratch on `--resume ""`)."""
    module = script_module(script)
    hints = typing.get_type_hints(module.Args)
    fields = [name for name, hint in hints.items() if hint == typing.Optional[str]]
    assert "wandb_entity" in fields, f"{script}.py: found no Optional[str] field"
    for name in fields:
        with pytest.raises(SystemExit) as refusal:
            module.check_args(dataclasses.replace(module.Args(), **{name: ""}))
        message, flag = str(refusal.value.code), "--" + name.replace("_", "-")
        assert message.startswith(f"{flag} ") and "\n" not in message, f"{script}.py {flag} '': {message!r}"
        module.check_args(dataclasses.replace(module.Args(), **{name: "x"}))  # a value is not refused here


@pytest.mark.parametrize("script", [s for s in ALL if SCRIPTS[f"{s}.py"]["checkpoint"].endswith(".pt")])  # torch files
def test_a_run_folder_given_as_a_checkpoint_names_the_file_in_it(script, tmp_path):
    """`--eval-checkpoint runs/<run>` (the folder) said only "cannot read it (Is a directory)"."""
    with pytest.raises(SystemExit) as refusal:
        script_module(script).load_checkpoint(str(tmp_path), "--eval-checkpoint")
    expected = f"--eval-checkpoint {tmp_path}: cannot read it (Is a directory): give the checkpoint file in it, "
    assert str(refusal.value.code) == expected + f"{tmp_path / entry(script, 'checkpoint')}."


@pytest.mark.parametrize("script", [s for s in ALL if s != "bpe"])  # bpe.py's seed only names the run
def test_the_largest_seed_allowed_is_one_numpy_and_torch_accept(script):
    """Every seed's Range stops where numpy's legacy seeding and torch.manual_seed accept it, plus the largest
    offset a script adds (a rank, or 200,000 for a filmed episode): a larger seed is one sentence, not their
    traceback."""
    import numpy as np
    import torch

    _, rule = numeric_fields(script_module(script))["seed"]
    assert math.isfinite(rule.hi), f"{script}.py: --seed has no upper bound"
    np.random.seed(int(rule.hi) + 200_064)
    torch.manual_seed(int(rule.hi) + 200_064)


def one_sentence(proc: subprocess.CompletedProcess, expect: str = "") -> None:
    """Exit non-zero, no traceback, one line on stderr (containing `expect`)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode not in (0, None), "expected a refusal, the run succeeded"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr[-2000:]}"
    assert expect in lines[0], f"expected {expect!r} in {lines[0]!r}"


def script_cmd(script: str, *args) -> list:
    return [sys.executable, str(ALGOS / f"{script}.py"), *map(str, args)]


@pytest.mark.parametrize("script", ALL)
def test_a_nonsense_value_gets_one_sentence(script, tmp_path):
    flag, value = entry(script, "nonsense")
    proc = run(script_cmd(script, *entry(script, "tiny"), flag, value), cwd=tmp_path, timeout=120)
    one_sentence(proc, flag)


@pytest.mark.parametrize("script", ALL)
def test_an_unwritable_run_folder_fails_before_training(script, tmp_path):
    (tmp_path / "runs").write_text("a file where the run folder should go\n")  # root ignores chmod
    start = time.time()
    proc = run(script_cmd(script, *entry(script, "tiny")), cwd=tmp_path, timeout=120)
    one_sentence(proc, "cannot create the run folder")
    assert time.time() - start < 60


@pytest.mark.parametrize("script", ALL)
def test_a_network_larger_than_memory_is_refused_before_the_run_folder(script, tmp_path):
    """Its parameters are counted without allocating them, and no run folder is left. The flags ask for a tensor
    beyond any address space, which an allocator refuses at once: before the check the scripts died in torch's
    allocator with a traceback (and sizes the OS only reserves ran for minutes until the kernel killed them)."""
    big = entry(script, "too_big")
    if big is None:
        pytest.skip(f"{script}.py has no network (tests/scripts.py says what it has instead)")
    proc = run(script_cmd(script, *entry(script, "tiny"), *big), cwd=tmp_path, timeout=120)
    one_sentence(proc, f"{big[0]} {big[1]}")
    assert "GiB" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "a run folder was left"


def checkpoint_of(script: str, cwd) -> "typing.Any":
    name = entry(script, "checkpoint")
    found = sorted((cwd / "runs").glob(f"*/{name}"))
    assert found, f"no runs/*/{name} under {cwd}"
    return found


@pytest.mark.parametrize("script", ALL)
def test_twins_started_together_keep_separate_folders_and_checkpoints_verify(script, tmp_path):
    """Two identical runs started in the same second must not share (and break) one run folder; each
    leaves its metrics.jsonl.
    Their checkpoints then serve the damaged-checkpoint tries: truncated, and one byte flipped;
    the intact one reloads."""
    cmd = script_cmd(script, *entry(script, "tiny"), *entry(script, "save"))
    twins = [subprocess.Popen(cmd, cwd=tmp_path, env=script_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in twins]
    for p, (out, err) in zip(twins, outs):
        assert p.returncode == 0, err[-2000:]
    folders = {p.parent for p in checkpoint_of(script, tmp_path)}
    assert len(folders) == 2, "the twins share a run folder"
    for folder in folders:  # each logged its own metrics, without --track
        check_metrics_jsonl(f"{script}.py", folder)

    if entry(script, "reload") is None:
        return  # this script writes results, not a model that it reads back
    good = checkpoint_of(script, tmp_path)[0]
    data = good.read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) * 2 // 3] ^= 0xFF
    (tmp_path / "flipped").write_bytes(bytes(flipped))
    for bad in ("truncated", "flipped"):
        reload = [a.replace("{ckpt}", str(tmp_path / bad)) for a in entry(script, "reload")]
        proc = run(script_cmd(script, *reload), cwd=tmp_path, timeout=120)
        one_sentence(proc, "damaged")
    reload = [a.replace("{ckpt}", str(good)) for a in entry(script, "reload")]
    proc = run(script_cmd(script, *reload), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def interrupt(cmd: list, cwd, ready: str, timeout: float = 240) -> tuple[int, str, str]:
    """Start cmd, wait until a stdout line contains `ready` (training is under way), send SIGINT,
    and return (exit code, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=script_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, seen = [], threading.Event()

    def read():
        for line in proc.stdout:
            out.append(line)
            if ready in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(timeout):
        proc.kill()
        pytest.fail(f"no line with {ready!r} within {timeout} s:\n{''.join(out)[-2000:]}")
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    code = proc.wait(timeout=120)
    reader.join(timeout=10)
    stdout = "".join(out)
    print(f"$ {shlex.join(map(str, cmd))}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{err[-2000:]}")
    return code, stdout, err


def short_reload(script: str) -> list:
    """The reload arguments but the checkpoint: settings that keep an evaluation to seconds (3 episodes)."""
    return [a for a in entry(script, "reload") if a not in ("--eval-checkpoint", "{ckpt}")]


def printed_command(stdout: str, prefix: str) -> list:
    """The command after `prefix` on the last line that has it, with `python` -> this interpreter."""
    lines = [line for line in stdout.splitlines() if line.startswith(prefix)]
    assert lines, f"the run did not print a line starting with {prefix!r}"
    words = shlex.split(lines[-1][len(prefix):])
    assert words[0] == "python", words
    return [sys.executable, *words[1:]]


@pytest.mark.parametrize("script", ALL)
def test_ctrl_c_keeps_the_work_and_says_how_to_go_on(script, tmp_path):
    """The printed command must paste whole: the run folder's name holds a space (--exp-name "my run")."""
    cmd = script_cmd(script, *entry(script, "long"), "--exp-name", "my run")
    code, out, err = interrupt(cmd, tmp_path, entry(script, "ready"))
    assert code == 130, f"Ctrl-C should exit with 130, got {code}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    kind = entry(script, "after_ctrl_c")
    if kind == "evaluate":  # the RL scripts: the model so far, and the command that evaluates it (a flag added wins)
        proc = run(printed_command(out, "to evaluate it: ") + short_reload(script), cwd=tmp_path, timeout=300)
        assert proc.returncode == 0 and "over 3 episodes" in proc.stdout, proc.stderr[-2000:]
    elif kind == "resume":  # long runs: the command resumes; interrupted again, it saves again
        again, out2, err2 = interrupt(printed_command(out, "to resume it: "), tmp_path, entry(script, "ready"))
        assert again == 130 and "Traceback" not in err2, err2[-2000:]
        assert "to resume it: " in out2
    else:
        assert kind == "nothing to keep", kind


@pytest.mark.parametrize("script", ALL)
def test_ctrl_c_in_the_final_evaluation_keeps_the_model(script, tmp_path):
    """A script that evaluates after training (its `final` arguments make that evaluation long) prints a line
    as the evaluation starts; a Ctrl-C then stops it at once (exit 130), the trained model is saved, and the
    printed command evaluates it (with the reload arguments' short settings), a space in its path included."""
    final = entry(script, "final")
    if final is None:
        pytest.skip(f"{script}.py needs no test of a final evaluation of its own (tests/scripts.py says why)")
    cmd = script_cmd(script, *entry(script, "tiny"), *final, "--exp-name", "my run")
    code, out, err = interrupt(cmd, tmp_path, "final evaluation")
    assert code == 130, f"Ctrl-C in the final evaluation should exit with 130, got {code}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    proc = run(printed_command(out, "to evaluate it: ") + short_reload(script), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0 and ("eval" in proc.stdout or "BLEU" in proc.stdout), proc.stderr[-2000:]


@pytest.mark.parametrize("script", ALL)
def test_once_the_final_evaluation_is_over_ctrl_c_is_a_request_again(script, tmp_path, monkeypatch):
    """After a whole run (in-process, tiny arguments), a Ctrl-C, as during teardown, only asks to stop:
    it raises nothing, so it cannot surface as 'stopped by Ctrl-C before training'."""
    if entry(script, "final") is None:
        pytest.skip(f"{script}.py needs no test of a final evaluation of its own (tests/scripts.py says why)")
    module = script_module(script)
    monkeypatch.chdir(tmp_path)
    args = parse_command_line(module, entry(script, "tiny"), monkeypatch)
    previous = signal.getsignal(signal.SIGINT)
    try:
        module.main(args)
        signal.raise_signal(signal.SIGINT)  # the script's StopFlag hears it
        assert signal.getsignal(signal.SIGINT).__self__.requested
    finally:
        signal.signal(signal.SIGINT, previous)
