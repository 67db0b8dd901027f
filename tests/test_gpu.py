"""The CUDA paths of every script, run for real: `python -m pytest -m gpu` on a machine with CUDA (issue 23).

Every test here is marked `gpu` and is skipped, with the reason, where torch.cuda.is_available() is false,
so the default run on a CPU collects them and skips them in a second. On a CUDA machine they check:
- every script in algos/ runs on CUDA as a user types it (tests/scripts.py's tiny arguments), so a new
  script is covered the moment it has an entry there;
- the neural scripts (those with a --cuda flag): a tiny run in float32 on CUDA ends with the CPU's losses,
  within rel 1e-3 (abs 1e-5). The two devices sum in other orders (~1e-7 per operation in float32); on the
  CPU, weights perturbed by a relative 1e-4 at the start moved these losses by at most 1e-4 (relative) by
  the end of the tiny runs, while bf16 rounds each operation to ~4e-3;
- a checkpoint saved on CUDA evaluates on the CPU, and one saved on the CPU evaluates on CUDA;
- gpt.py with --compile and bf16 autocast; float16 with the gradient scaler in gpt.py and
  seq2seq_attention.py; the one-sentence refusal of --dtype bfloat16 on a GPU without bf16;
- torchrun on CUDA with one process, and with two ranks over nccl on a machine with two GPUs. One process
  is WORLD_SIZE 1, for which the scripts make no distributed call (no nccl): that test checks that the
  torchrun environment runs on the GPU; nccl itself needs the two-rank test (one GPU per rank).
"""

import math
import re
import sys

import pytest
import torch
from conftest import ALGOS, parse_command_line, run, script_module
from scripts import SCRIPTS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason=f"needs CUDA: torch.cuda.is_available() is false here (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda or 'none'}); run `python -m pytest -m gpu` on a GPU"),
]

ALL = sorted(p.name for p in ALGOS.glob("*.py"))
# The neural scripts: those with a --cuda flag (bpe.py and dyna_q.py have no network and no device).
NEURAL = [s for s in ALL if re.search(r"^    cuda: bool", (ALGOS / s).read_text(), re.M)]
RELOADABLE = [s for s in NEURAL if SCRIPTS.get(s, {}).get("reload")]
REL, ABS = 1e-3, 1e-5  # float32 CUDA vs CPU (the module docstring says why)


def has_bf16() -> bool:
    """bfloat16 in hardware (Ampere and later); emulated bf16 does not count."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def tiny(script: str) -> list[str]:
    if script not in SCRIPTS:
        pytest.fail(f"algos/{script} has no entry in tests/scripts.py: add its tiny arguments.")
    return list(SCRIPTS[script]["tiny"])


def fields(module) -> set:
    return set(module.Args.__dataclass_fields__)


def ran_clean(proc) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.fixture(autouse=True)
def _keep_precision_flags():
    """gpt.py and seq2seq_attention.py set TF32 flags for the process; in-process runs must not leak them."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ----------------------------------------------------------------------------- every script, as typed
@pytest.mark.parametrize("script", ALL)
def test_smoke_on_cuda(script, tmp_path):
    proc = run([sys.executable, str(ALGOS / script), *tiny(script)], cwd=tmp_path, timeout=600)
    ran_clean(proc)
    if script in NEURAL:  # each prints "... on <device>" at the start
        assert "on cuda" in proc.stdout, f"{script} did not run on CUDA:\n{proc.stdout[:2000]}"


# ----------------------------------------------------------------------------- float32: CUDA equals CPU
@pytest.mark.parametrize("script", NEURAL)
def test_float32_cuda_matches_cpu(script, tmp_path, monkeypatch):
    """The same tiny run twice in this process, --no-cuda then --cuda, in float32: the losses main()
    returns agree within REL/ABS."""
    module = script_module(script[:-3])
    argv = tiny(script)
    if "dtype" in fields(module):
        argv += ["--dtype", "float32"]
    elif "torch.autocast" in (ALGOS / script).read_text():
        pytest.skip(f"{script} has no --dtype flag: on CUDA it always runs in autocast, which cannot "
                    "equal the CPU's float32")
    if "dropout" in fields(module):
        argv += ["--dropout", "0"]  # dropout masks come from each device's own random stream
    # Actions sampled on CUDA come from CUDA's random stream, on the CPU from the CPU's: both runs draw
    # from the CPU's (torch.distributions' Categorical samples with torch.multinomial too), so they take
    # the same actions and only the arithmetic differs.
    draw = torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda probs, *a, **k: draw(probs.cpu(), *a, **k).to(probs.device))
    monkeypatch.chdir(tmp_path)
    cpu = module.main(parse_command_line(module, [*argv, "--no-cuda"], monkeypatch))
    cuda = module.main(parse_command_line(module, [*argv, "--cuda"], monkeypatch))
    losses = sorted(k for k, v in cpu.items() if "loss" in k and isinstance(v, float))
    assert losses, f"{script}'s main() returned no loss to compare: {sorted(cpu)}"
    for key in losses:
        assert cuda[key] == pytest.approx(cpu[key], rel=REL, abs=ABS), \
            f"{script} {key}: CPU {cpu[key]!r}, CUDA {cuda[key]!r}"
    print(f"{script}: " + ", ".join(f"{k} CPU {cpu[k]:.6g} CUDA {cuda[k]:.6g}" for k in losses))


# ----------------------------------------------------------------------------- checkpoints across devices
@pytest.mark.parametrize("save_on,load_on", [("cuda", "cpu"), ("cpu", "cuda")])
@pytest.mark.parametrize("script", RELOADABLE)
def test_checkpoint_moves_between_devices(script, save_on, load_on, tmp_path):
    spec = SCRIPTS[script]
    flag = {"cuda": "--cuda", "cpu": "--no-cuda"}
    proc = run([sys.executable, str(ALGOS / script), *tiny(script), *spec["save"], flag[save_on]],
               cwd=tmp_path, timeout=600)
    ran_clean(proc)
    ckpts = list(tmp_path.glob(f"runs/*/{spec['checkpoint']}"))
    assert len(ckpts) == 1, f"expected one runs/*/{spec['checkpoint']}, found {ckpts}"
    reload = [a.replace("{ckpt}", str(ckpts[0])) for a in spec["reload"]]
    proc = run([sys.executable, str(ALGOS / script), *reload, flag[load_on]], cwd=tmp_path, timeout=600)
    ran_clean(proc)


# ----------------------------------------------------------------------------- precision and compile
FINAL = re.compile(r"final: val loss (\S+), train loss (\S+)")


def test_gpt_compile_bf16(tmp_path):
    if not has_bf16():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bfloat16")
    proc = run([sys.executable, str(ALGOS / "gpt.py"), *tiny("gpt.py"), "--compile", "--dtype", "bfloat16"],
               cwd=tmp_path, timeout=600)
    ran_clean(proc)
    val, train = map(float, FINAL.search(proc.stdout).groups())
    assert math.isfinite(val) and math.isfinite(train), proc.stdout[-2000:]


@pytest.mark.parametrize("script", ["gpt.py", "seq2seq_attention.py"])
def test_float16_with_gradient_scaler(script, tmp_path, monkeypatch):
    """--dtype float16 trains a few steps to finite losses, and the checkpoint holds the scaler's state
    (so the scaler was on)."""
    module = script_module(script[:-3])
    monkeypatch.chdir(tmp_path)
    argv = [*tiny(script), *SCRIPTS[script]["save"], "--dtype", "float16", "--cuda"]
    metrics = module.main(parse_command_line(module, argv, monkeypatch))
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"]), metrics
    ckpt, = tmp_path.glob(f"runs/*/{SCRIPTS[script]['checkpoint']}")
    scaler = module.load_checkpoint(str(ckpt), "--eval-checkpoint")["scaler"]
    assert scaler.get("scale", 0) > 0, f"{script} --dtype float16 saved no gradient scaler state: {scaler}"


@pytest.mark.parametrize("script", ["gpt.py", "seq2seq_attention.py"])
def test_bf16_refused_where_the_gpu_lacks_it(script, tmp_path):
    if has_bf16():
        pytest.skip(f"{torch.cuda.get_device_name()} has bfloat16: there is nothing to refuse")
    proc = run([sys.executable, str(ALGOS / script), *tiny(script)], cwd=tmp_path, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and "--dtype float16" in lines[0], proc.stderr[-2000:]


# ----------------------------------------------------------------------------- torchrun
@pytest.mark.parametrize("script", NEURAL)
def test_torchrun_one_process_on_cuda(script, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(ALGOS / script), *tiny(script)]
    proc = run(cmd, cwd=tmp_path, timeout=600)
    ran_clean(proc)
    assert "on cuda" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=f"nccl between two ranks needs two GPUs, one a rank "
                                                       f"({torch.cuda.device_count()} here)")
@pytest.mark.parametrize("script", NEURAL)
def test_torchrun_two_ranks_nccl(script, tmp_path):
    """Two ranks on two GPUs: the scripts pick nccl on CUDA; NCCL_DEBUG=INFO makes nccl say it ran."""
    logs = tmp_path / "torchrun_logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--log-dir", str(logs), "--redirects", "3", str(ALGOS / script), *tiny(script)]
    proc = run(cmd, cwd=tmp_path, timeout=600, NCCL_DEBUG="INFO")
    ran_clean(proc)
    text = "".join(p.read_text(errors="replace") for p in logs.rglob("*.log"))
    assert "NCCL INFO" in text, f"no NCCL INFO line in the ranks' logs under {logs}"
