"""levin_ts.py: push rules, the loader and its errors, the generator's solvability, the LevinTS
expansion order and Theorem 3, PHS*, checkpoints, resume and Ctrl-C, and a short learning test."""

import math
import re
import shlex
import signal
import subprocess
import sys
from collections import deque

import numpy as np
import pytest
import torch
from conftest import ALGOS, SHARED_DATA, load_script, no_data, run

lts = load_script("levin_ts")
U, D, L, R = range(4)

CORRIDOR = """; 0
#######
#.$ @ #
#######
"""

ROOM = """; 7
#######
#  .  #
# $#  #
#@  * #
#  $ .#
#######
"""


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Every run makes its runs/<name>/ folder at once: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)


def one(text):
    [level] = lts.parse_levels(text, "test.txt")
    return level


def idx(level, r, c):
    return r * level.width + c


def tiny_args(**kw):
    base = dict(train_levels=40, test_levels=24, num_boxes=2, difficulty=3, budget=200, eval_budget=1000,
                max_sweeps=2, sweep_levels=40, train_steps=10, batch_size=32, batch_levels=16,
                save_model=False, train_minutes=5.0)
    if kw.get("levels_path"):  # level files: counts above theirs, and unused generator flags, are refused
        del base["train_levels"], base["test_levels"]
        if not kw.get("add_generated"):
            del base["num_boxes"], base["difficulty"]
    return lts.Args(**{**base, **kw})


# ---------------------------------------------------------------- Sokoban rules
def test_moves_and_push_rules():
    level = one(ROOM)
    s = level.start
    assert s.player == idx(level, 3, 1)
    assert s.boxes == tuple(sorted([idx(level, 2, 2), idx(level, 3, 4), idx(level, 4, 3)]))
    assert level.goals == {idx(level, 1, 3), idx(level, 3, 4), idx(level, 4, 5)}
    assert level.step(s, L) is None  # into the wall
    down = level.step(s, D)
    assert down == lts.State(idx(level, 4, 1), s.boxes)  # a plain move keeps the boxes
    assert level.step(level.step(down, R), R) == lts.State(idx(level, 4, 3), tuple(sorted(
        [idx(level, 2, 2), idx(level, 3, 4), idx(level, 4, 4)])))  # push the box right
    up = level.step(s, U)  # player to (2,1); pushing right moves the box (2,2) into the wall (2,3)
    assert level.step(up, R) is None
    right = level.step(level.step(s, R), R)  # player (3,3), next to the box on the goal at (3,4)
    assert level.step(right, R) is not None  # box (3,4) -> (3,5) is free
    box_pair = lts.State(idx(level, 4, 1), tuple(sorted([idx(level, 4, 2), idx(level, 4, 3), idx(level, 1, 1)])))
    assert level.step(box_pair, R) is None  # a box cannot push a second box
    assert not level.solved(s)
    assert level.solved(lts.State(s.player, tuple(sorted(level.goals))))


def test_render_round_trips_through_the_parser():
    level = one(ROOM)
    assert level.render() == "\n".join(ROOM.strip().splitlines()[1:])
    again = one("; x\n" + level.render())
    assert (again.walls, again.goals, again.start) == (level.walls, level.goals, level.start)


# ---------------------------------------------------------------- loader
def test_loader_reads_boxoban_and_xsb(tmp_path):
    for k in range(3):
        (tmp_path / f"00{k}.txt").write_text(CORRIDOR.replace("; 0", f"; {k}") + "\n" + ROOM)
    levels = lts.load_levels(str(tmp_path))
    assert len(levels) == 6 and levels[0].name.endswith("000.txt:0") and levels[1].name.endswith("000.txt:7")
    xsb = one("######\n#+*$ #\n#$  .#\n######\n")  # + player on a goal, * box on a goal
    assert xsb.start.player == idx(xsb, 1, 1)
    assert set(xsb.start.boxes) == {idx(xsb, 1, 2), idx(xsb, 1, 3), idx(xsb, 2, 1)}
    assert xsb.goals == {idx(xsb, 1, 1), idx(xsb, 1, 2), idx(xsb, 2, 4)}


@pytest.mark.parametrize("text, line, words", [
    ("; 0\n#####\n#@$.#\n####\n", 4, "characters"),          # wrong line width
    ("; 0\n#####\n#@$x#\n#####\n", 3, "unknown character"),
    ("; 0\n######\n#@$$.#\n######\n", 2, "2 boxes and 1 goals"),
    ("; 0\n#####\n# $.#\n#####\n", 2, "no player"),
    ("; 0\n######\n#@$.@#\n######\n", 3, "second player"),
    ("; 0\n#####\n#@$. \n#####\n", 2, "must all be walls"),
])
def test_loader_errors_name_file_and_line(text, line, words):
    with pytest.raises(ValueError, match=rf"^bad\.txt:{line}: .*{words}"):
        lts.parse_levels(text, "bad.txt")


def test_bad_levels_path_is_one_sentence(tmp_path):
    (tmp_path / "bad.txt").write_text("; 0\n#####\n#@$x#\n#####\n")
    proc = run([sys.executable, str(ALGOS / "levin_ts.py"), "--levels-path", str(tmp_path / "bad.txt")], cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert re.search(r"bad\.txt:3: unknown character 'x'", proc.stderr)
    with pytest.raises(SystemExit, match="^--budget 0 is not allowed: it must be at least 1.$"):
        lts.main(tiny_args(budget=0))
    with pytest.raises(SystemExit, match="^--difficulty 0 is not allowed"):  # the generator would loop
        lts.main(tiny_args(difficulty=0))
    for minutes in (0.0, -5.0, float("nan")):  # would train nothing and evaluate an untrained network
        with pytest.raises(SystemExit, match=f"^--train-minutes {minutes} is not allowed: it must be above 0."):
            lts.main(tiny_args(train_minutes=minutes))
    torch.save({"net": {}}, tmp_path / "other.pt")
    (tmp_path / "notes.txt").write_text("e" * 200)  # torch.load read it as a zip and failed with KeyError: 101
    for path in (tmp_path / "other.pt", tmp_path / "notes.txt"):
        for flag in ("resume", "eval_checkpoint"):
            with pytest.raises(SystemExit, match="is damaged or is not a checkpoint of these scripts"):
                lts.main(tiny_args(**{flag: str(path)}))
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "good.txt").write_text(CORRIDOR * 3)
    for levels, test_levels in (("good", "empty"), ("empty", "good")):  # not "solved 0/0"
        with pytest.raises(SystemExit, match=r"empty\.txt: no levels in it"):
            lts.main(tiny_args(levels_path=str(tmp_path / f"{levels}.txt"),
                               test_levels_path=str(tmp_path / f"{test_levels}.txt")))
    (tmp_path / "latin1.txt").write_bytes(CORRIDOR.replace("; 0", "; caf\xe9").encode("latin-1"))
    with pytest.raises(SystemExit, match=r"latin1\.txt: byte 5 is not UTF-8 text"):
        lts.main(tiny_args(levels_path=str(tmp_path / "latin1.txt"), test_levels=1))


def test_held_out_levels_come_from_the_file_also_beside_generated_training_levels(tmp_path):
    """--test-levels-path without --levels-path: the file's levels are the held-out ones, and the generated
    training levels are the same as without it."""
    rng = np.random.default_rng(7)
    rooms = [lts.generate_level(rng, 10, 2, 3, f"room{k}") for k in range(5)]
    (tmp_path / "rooms.txt").write_text("".join(f"; {k}\n{lv.render()}\n\n" for k, lv in enumerate(rooms)))
    train, test = lts.get_levels(tiny_args(test_levels_path=str(tmp_path / "rooms.txt"), test_levels=3))
    assert [(lv.walls, lv.goals, lv.start) for lv in test] == [(lv.walls, lv.goals, lv.start) for lv in rooms[:3]]
    assert [lv.start for lv in train] == [lv.start for lv in lts.get_levels(tiny_args())[0]]


def write_rooms(path, n=10, seed=7):
    """n generated 10 x 10 rooms as a level file (as the first levels of a Boxoban file would be)."""
    rng = np.random.default_rng(seed)
    path.write_text("".join(f"; {k}\n{lts.generate_level(rng, 10, 2, 3).render()}\n\n" for k in range(n)))
    return str(path)


def test_held_out_levels_that_are_training_levels_are_refused(tmp_path):
    ten, other = write_rooms(tmp_path / "ten.txt"), write_rooms(tmp_path / "other.txt", seed=8)
    (tmp_path / "copy.txt").write_text((tmp_path / "ten.txt").read_text().replace("; ", "; copy "))
    for test in (ten, str(tmp_path / "copy.txt")):  # the same file, or its levels under other names
        with pytest.raises(SystemExit, match=r"^--test-levels-path \S+ shares 4 levels \(.+:(copy )?0 \.\.\.\) with "
                                             r"the training levels; give it levels that are not trained on, or leave"):
            lts.get_levels(lts.Args(levels_path=ten, test_levels_path=test, test_levels=4))
    train, test = lts.get_levels(lts.Args(levels_path=ten, test_levels_path=other, test_levels=4))
    assert len(train) == 10 and len(test) == 4
    # an evaluation may search a checkpoint's own training levels on purpose
    _, test = lts.get_levels(lts.Args(levels_path=ten, test_levels_path=ten, test_levels=4, eval_checkpoint="x"))
    assert len(test) == 4


def test_counts_set_above_what_the_level_files_hold_are_refused(tmp_path):
    ten, other = write_rooms(tmp_path / "ten.txt"), write_rooms(tmp_path / "other.txt", seed=8)
    with pytest.raises(SystemExit, match=r"^--train-levels 5000: --levels-path \S+ten\.txt has 10 training levels; "
                                         r"lower it to at most 10\.$"):
        lts.get_levels(lts.Args(levels_path=ten, test_levels_path=other, train_levels=5000))
    with pytest.raises(SystemExit, match=r"^--train-levels 7: --levels-path \S+ has 6 training levels besides the 4 "
                                         r"held out; lower it to at most 6\.$"):
        lts.get_levels(lts.Args(levels_path=ten, test_levels=4, train_levels=7))
    with pytest.raises(SystemExit, match=r"^--test-levels 50: --test-levels-path \S+other\.txt has 10 levels; "
                                         r"lower it to at most 10\.$"):  # not "solved 0/10"
        lts.get_levels(lts.Args(levels_path=ten, test_levels_path=other, test_levels=50))
    # The defaults (2000 and 200) take what a small file has, as before; so do a checkpoint's counts (`given`: the
    # command line left them at their defaults).
    from_checkpoint = lts.Args(levels_path=ten, test_levels_path=other, train_levels=50, test_levels=50)
    for args, given in ((lts.Args(levels_path=ten, test_levels_path=other), None), (from_checkpoint, lts.Args())):
        train, test = lts.get_levels(args, given)
        assert len(train) == 10 and len(test) == 10


def test_generator_flags_beside_a_level_file_are_refused():
    for flag, value in (("num_boxes", 3), ("difficulty", 4), ("size", 8)):
        with pytest.raises(SystemExit, match=f"^--{flag.replace('_', '-')} set the generator, which --levels-path "
                                             "without --add-generated does not use; drop them, or give"):
            lts.validate(lts.Args(levels_path="ten.txt", **{flag: value}), 1)
        lts.validate(lts.Args(levels_path="ten.txt", add_generated=5, **{flag: value}), 1)  # used there
        lts.validate(lts.Args(**{flag: value}), 1)  # generated levels
        # a checkpoint's generator flags, filled in where the command line left the default, are not the user's
        lts.validate(lts.Args(levels_path="ten.txt", **{flag: value}), 1, lts.Args(levels_path="ten.txt"))


def test_level_files_with_a_bom_and_the_parent_of_boxoban_folders(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + CORRIDOR.encode())
    [level] = lts.load_levels(str(tmp_path / "bom.txt"))
    assert level.name.endswith("bom.txt:0") and level.start == one(CORRIDOR).start
    for name in ("train", "valid"):
        (tmp_path / "unfiltered" / name).mkdir(parents=True)
        (tmp_path / "unfiltered" / name / "000.txt").write_text(CORRIDOR)
    (tmp_path / "unfiltered" / "notes").mkdir()  # a folder without levels is not offered
    with pytest.raises(ValueError, match=rf"^{tmp_path}/unfiltered holds no \.txt files but its folders do: did you "
                                         rf"mean {tmp_path}/unfiltered/train or {tmp_path}/unfiltered/valid\?$"):
        lts.load_levels(str(tmp_path / "unfiltered"))


@pytest.mark.skipif(not (SHARED_DATA / "boxoban").is_dir(), reason=no_data("boxoban"))
def test_loader_reads_the_boxoban_files():
    levels = lts.load_levels(str(SHARED_DATA / "boxoban" / "unfiltered" / "train" / "000.txt"))
    assert len(levels) == 1000
    assert all((lv.height, lv.width, len(lv.start.boxes), len(lv.goals)) == (10, 10, 4, 4) for lv in levels)


# ---------------------------------------------------------------- generator
def bfs(level, cap=200_000):
    """Plain breadth-first search, independent of the file's search: a shortest solution or None."""
    parent, frontier = {level.start: None}, deque([level.start])
    while frontier and len(parent) < cap:
        s = frontier.popleft()
        if level.solved(s):
            path = []
            while parent[s] is not None:
                s, a = parent[s]
                path.append(a)
            return path[::-1]
        for a in range(4):
            t = level.step(s, a)
            if t is not None and t not in parent:
                parent[t] = (s, a)
                frontier.append(t)
    return None


def test_generated_levels_are_solvable_and_well_formed():
    rng = np.random.default_rng(0)
    for size, boxes, difficulty in [(10, 2, 2), (10, 2, 12), (8, 3, 6), (8, 3, 12), (7, 4, 8)]:
        for _ in range(8):
            level = lts.generate_level(rng, size, boxes, difficulty)
            assert not level.solved(level.start) and len(level.goals) == len(level.start.boxes) == boxes
            again = one("; g\n" + level.render())  # the loader accepts what the generator makes
            assert (again.walls, again.goals, again.start) == (level.walls, level.goals, level.start)
            path = bfs(level)
            assert path is not None, level.render()
            s = level.start
            for a in path:
                s = level.step(s, a)
            assert level.solved(s)


# ---------------------------------------------------------------- LevinTS order and Theorem 3
def test_uniform_lts_on_a_corridor_expands_in_the_hand_computed_order():
    level = one(CORRIDOR)
    trace = []
    [res] = lts.batched_search([level], lts.uniform_evaluator, 100, "lts", trace=trace)
    # root (cost log 1); its children left/right (1/2 each, d = 2, cost log 4, left first by
    # insertion order); from the left child, moving back right is the root's state (pruned)
    # and the push left (pi 1/4, d = 3, cost log 12) solves; the right child's only move leads
    # back to the start state (pruned).
    p = lambda c: idx(level, 1, c)
    assert [(s.player, cost) for _, s, cost in trace] == [
        (p(4), 0.0), (p(3), pytest.approx(math.log(4))), (p(5), pytest.approx(math.log(4))),
        (p(2), pytest.approx(math.log(12)))]
    assert res["solved"] and res["actions"] == [L, L] and res["expansions"] == 4
    assert res["levin_cost"] == pytest.approx(math.log(12))  # Theorem 3: 4 expansions <= d/pi = 12


def reference_lts(level, budget):
    """A slow, plain LevinTS with the uniform policy: scan the whole frontier for the lowest
    (cost, insertion number); the state cut as in the paper. Returns the expanded (state, cost)."""
    frontier, best, order, count = [(0.0, 0, level.start, 0, 0.0)], {level.start: 0.0}, [], 1
    while frontier and len(order) < budget:
        entry = min(frontier, key=lambda e: (e[0], e[1]))
        frontier.remove(entry)
        cost, _, s, depth, log_pi = entry
        if cost > best[s]:
            continue
        order.append((s, cost))
        if level.solved(s):
            break
        kids = [t for t in (level.step(s, a) for a in range(4)) if t is not None]
        for t in kids:
            lp = log_pi - math.log(len(kids))
            c = math.log(depth + 2) - lp
            if t in best and best[t] <= c:
                continue
            best[t] = c
            frontier.append((c, count, t, depth + 1, lp))
            count += 1
    return order


def test_uniform_lts_expands_exactly_in_cost_order():
    rng = np.random.default_rng(3)
    levels = [lts.generate_level(rng, 8, 2, 3) for _ in range(5)]
    trace, room_trace = [], []
    lts.batched_search(levels, lts.uniform_evaluator, 400, "lts", batch_levels=3, trace=trace)
    lts.batched_search([one(ROOM)], lts.uniform_evaluator, 400, "lts", trace=room_trace)
    for i, level in enumerate(levels + [one(ROOM)]):
        mine = [(s, c) for j, s, c in (trace if i < len(levels) else room_trace) if j == i % len(levels)]
        ref = reference_lts(level, 400)
        assert [s for s, _ in mine] == [s for s, _ in ref]
        assert [c for _, c in mine] == pytest.approx([c for _, c in ref])
        assert all(a <= b + 1e-12 for (_, a), (_, b) in zip(mine, mine[1:]))  # best-first: costs never fall


def test_theorem_3_bound_holds_on_every_solved_level():
    rng = np.random.default_rng(1)
    levels = [lts.generate_level(rng, 10, 2, 4) for _ in range(30)]
    torch.manual_seed(0)
    net = lts.PolicyHeuristicNet().eval()
    with torch.no_grad():  # a sharply non-uniform random policy, to test more than the uniform one
        net.policy[-1].weight.mul_(30.0)
    for evaluate in (lts.uniform_evaluator, lts.network_evaluator(net, torch.device("cpu"))):
        results = lts.batched_search(levels, evaluate, 2000, "lts", batch_levels=16)
        solved = [r for r in results if r["solved"]]
        assert len(solved) >= 15
        assert all(r["expansions"] <= math.exp(r["levin_cost"]) for r in solved)
        for level, r in zip(levels, results):  # every solution found replays to a solved position
            if r["solved"]:
                s = level.start
                for a in r["actions"]:
                    s = level.step(s, a)
                assert level.solved(s) and len(r["actions"]) == r["length"]
        assert lts.summarize(results, "lts", 1.0, 10**9)["eval/bound_violations"] == 0
    # ... and the count does flag a level that took more than d/pi expansions.
    fake = [dict(solved=True, expansions=13, levin_cost=math.log(12), length=2),
            dict(solved=True, expansions=12, levin_cost=math.log(12), length=2)]
    assert lts.summarize(fake, "lts", 1.0, 10**9)["eval/bound_violations"] == 1


def test_summary_of_solved_levels_is_left_out_when_none_was_solved():
    """Mean, median and max expansions and the mean length are over solved levels: with none solved
    they are absent (they were reported as 0, which read like instant solutions), not 0 or nan."""
    failed = [dict(solved=False, expansions=500, levin_cost=0.0, length=0)] * 3
    m = lts.summarize(failed, "lts", 2.0, 10**9)
    assert m["eval/solved"] == 0 and m["eval/levels"] == 3 and m["eval/total_expansions"] == 1500
    assert not {"eval/mean_expansions", "eval/median_expansions", "eval/max_expansions", "eval/mean_length"} & set(m)
    assert m["eval/solved_within_1000"] == 0 and m["eval/bound_violations"] == 0
    m = lts.summarize(failed + [dict(solved=True, expansions=40, levin_cost=5.0, length=3)], "lts", 2.0, 10**9)
    assert (m["eval/mean_expansions"], m["eval/max_expansions"], m["eval/mean_length"]) == (40.0, 40, 3.0)
    assert m["eval/solved_within_1000"] == 1


def test_batching_does_not_change_the_search():
    rng = np.random.default_rng(2)
    levels = [lts.generate_level(rng, 10, 2, 4) for _ in range(12)]
    one_by_one = [lts.batched_search([lv], lts.uniform_evaluator, 500, "lts")[0] for lv in levels]
    batched = lts.batched_search(levels, lts.uniform_evaluator, 500, "lts", batch_levels=5)
    assert [(r["solved"], r["expansions"], r.get("actions")) for r in batched] == \
           [(r["solved"], r["expansions"], r.get("actions")) for r in one_by_one]


def test_phs_cost_and_search():
    assert lts.phs_cost(0, 5.0, 0.0) == 0.0
    assert lts.phs_cost(2, 3.0, math.log(0.25)) == pytest.approx(math.log(5) - 2.5 * math.log(0.25))
    assert lts.phs_cost(4, 0.0, -1.0) == pytest.approx(math.log(4) + 1.0)  # h = 0: log(g/pi)
    # With the true distance to go as h (from a breadth-first search per state), PHS* needs
    # fewer expansions than LevinTS with the same uniform policy.
    rng = np.random.default_rng(0)
    levels = [lts.generate_level(rng, 8, 2, 3) for _ in range(6)]
    phs_total = lts_total = 0
    for level in levels:
        def oracle(obs):
            h = []
            for o in obs.reshape(len(obs), 4, -1):
                s = lts.State(int(o[3].argmax()), tuple(np.flatnonzero(o[2]).tolist()))
                path = bfs(lts.Level("x", level.height, level.width, level.walls, level.goals, s))
                h.append(float(len(path)) if path is not None else 100.0)  # a dead end: far from the goal
            return [[0.0] * 4] * len(obs), h
        [p] = lts.batched_search([level], oracle, 2000, "phs")
        [u] = lts.batched_search([level], lts.uniform_evaluator, 2000, "lts")
        assert p["solved"] and u["solved"] and p["length"] == len(bfs(level))  # h* also finds a shortest path
        phs_total, lts_total = phs_total + p["expansions"], lts_total + u["expansions"]
    assert phs_total < lts_total


def test_h_weight_scales_the_heuristic_the_search_sees(monkeypatch):
    evaluate = lts.network_evaluator
    level = one(ROOM)
    torch.manual_seed(0)
    net = lts.PolicyHeuristicNet(8, 16).eval()
    with torch.no_grad():
        net.heuristic[-1].bias.fill_(7.0)  # h > 0, so that the scaling shows
    obs = lts.encode([level] * 2, [level.start, level.step(level.start, lts.MOVE_NAMES.index("d"))])
    pi_1, h_1 = lts.network_evaluator(net, torch.device("cpu"))(obs)
    pi_w, h_w = lts.network_evaluator(net, torch.device("cpu"), 0.5)(obs)
    assert pi_w == pi_1 and min(h_1) > 0 and h_w == pytest.approx([0.5 * h for h in h_1])
    for bad in (-1.0, float("nan")):
        with pytest.raises(SystemExit, match=f"--h-weight {bad} is not allowed: it must be at least 0"):
            lts.main(tiny_args(search="phs", h_weight=bad))
    # ... and main hands --h-weight to the search's evaluator.
    seen = []
    monkeypatch.setattr(lts, "network_evaluator", lambda net, device, w=1.0: seen.append(w) or evaluate(net, device, w))
    lts.main(tiny_args(search="phs", h_weight=0.75, max_sweeps=1, test_levels=2))  # not the default
    assert seen == [0.75]


def test_heuristic_loss_trains_only_the_heuristic_head():
    """PHS*'s regression of h must leave the convolutions and the policy to the Levin loss."""
    level = one(ROOM)
    torch.manual_seed(0)
    net = lts.PolicyHeuristicNet(8, 16)
    obs = torch.from_numpy(lts.encode([level], [level.start]))
    logits, h = net(obs)
    h.sum().backward()
    assert all(p.grad is None for p in [*net.body.parameters(), *net.policy.parameters()])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.heuristic.parameters())
    logits.sum().backward()  # the policy's gradient still reaches the convolutions
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.body.parameters())


def test_levin_loss_is_masked_weighted_cross_entropy():
    logits = torch.tensor([[0.0, 0.0, 0.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    legal = torch.tensor([[True, True, True, False], [False, True, True, False]])
    actions, weights = torch.tensor([0, 2]), torch.tensor([1.0, 3.0])
    expected = (math.log(3) + 3 * -math.log(math.exp(3) / (math.exp(2) + math.exp(3)))) / 2
    assert lts.levin_loss(logits, legal, actions, weights).item() == pytest.approx(expected, rel=1e-6)


def test_solution_samples_replay_the_solution():
    """Every state of a solution, with its move, the moves left (h's target), the legal moves
    (the Levin loss's mask) and the search's expansions (its weight)."""
    level = one(ROOM)
    path = bfs(level)
    samples = lts.solution_samples(level, path, 321)
    assert len(samples) == len(path) >= 5
    s = level.start
    for t, (sample, a) in enumerate(zip(samples, path)):
        assert (sample.level, sample.state, sample.action, sample.to_go, sample.expansions) == \
               (level, s, a, len(path) - t, 321)
        assert sample.legal == [level.step(s, b) is not None for b in range(4)]
        s = level.step(s, a)
    assert level.solved(s)
    assert any(not all(x.legal) for x in samples)  # the mask is not trivially all legal here


def test_train_step_sees_each_sample_turned_with_its_move_mask_and_weight(monkeypatch):
    """What train_step hands the network and the Levin loss, sample by sample: the board under one
    of the symmetries (several of the 8 on square boards, only the shape-keeping even ones on a
    6 x 7 board), the solution's move turned with it (it leads to the turned next state), the
    turned legal mask (the turned board's legal moves), the weight N / mean N, and, for PHS*,
    the Huber loss of h on the moves left."""
    real_loss, seen = lts.levin_loss, {}

    def spy_loss(logits, legal, actions, weights):
        seen.update(legal=legal, actions=actions, weights=weights)
        return real_loss(logits, legal, actions, weights)

    class Spy(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, obs):
            logits, h = self.net(obs)
            seen.update(obs=obs, h=h.detach().clone())
            return logits, h

    monkeypatch.setattr(lts, "levin_loss", spy_loss)
    rng = np.random.default_rng(5)
    square = [lts.generate_level(rng, 8, 2, 4) for _ in range(4)]
    for levels, allowed in ((square, set(range(8))), ([one(ROOM)], {0, 2, 4, 6})):
        samples = [x for n, lv in enumerate(levels) for x in lts.solution_samples(lv, bfs(lv), 50 * (n + 1) ** 2)]
        torch.manual_seed(0)
        net = lts.PolicyHeuristicNet(8, 16)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        mean_exp, batch_size = 77.0, 64
        _, h_loss = lts.train_step(Spy(net), optimizer, samples, np.random.default_rng(9), batch_size, mean_exp,
                                   "phs", torch.device("cpu"))
        # the batch is drawn with replacement by the rng's first call
        batch = [samples[k] for k in np.random.default_rng(9).integers(0, len(samples), batch_size)]
        assert seen["weights"].tolist() == pytest.approx([b.expansions / mean_exp for b in batch])
        assert len({b.expansions for b in batch}) == len(levels)  # the weights differ between levels
        to_go = torch.tensor([float(b.to_go) for b in batch])
        assert h_loss == pytest.approx(torch.nn.functional.smooth_l1_loss(seen["h"], to_go).item(), rel=1e-5)
        used = set()
        for j, b in enumerate(batch):
            plain = torch.from_numpy(lts.encode([b.level], [b.state]))[0]
            ks = [k for k in allowed if lts.symmetry(plain, k).shape == seen["obs"][j].shape
                  and torch.equal(lts.symmetry(plain, k), seen["obs"][j])]
            assert ks, f"sample {j}'s board is not one of its allowed symmetries"
            used.add(ks[0])
            board, state = level_from_planes(seen["obs"][j])
            after = torch.from_numpy(lts.encode([b.level], [b.level.step(b.state, b.action)]))[0]
            moved = board.step(state, int(seen["actions"][j]))
            assert any(moved == level_from_planes(lts.symmetry(after, k))[1] for k in ks)
            assert seen["legal"][j].tolist() == [board.step(state, a) is not None for a in range(4)]
        assert len(used) >= (5 if allowed == set(range(8)) else 3)  # the symmetries are in use


def test_main_trains_on_the_solutions_found_weighted_by_their_expansions(monkeypatch):
    """A sweep's training samples are the states of the solutions that sweep's search found, each
    carrying its level's expansions N, and the weights are normalised by the mean N of the solved
    levels (the Levin loss's weight N / mean N)."""
    searches, steps = [], []
    real_search, real_step = lts.batched_search, lts.train_step

    def spy_search(levels, evaluate, budget, *a, **kw):
        results = real_search(levels, evaluate, budget, *a, **kw)
        searches.append((levels, results))
        return results

    def spy_step(model, optimizer, samples, rng, batch_size, mean_exp, *a):
        steps.append((list(samples), mean_exp))
        return real_step(model, optimizer, samples, rng, batch_size, mean_exp, *a)

    monkeypatch.setattr(lts, "batched_search", spy_search)
    monkeypatch.setattr(lts, "train_step", spy_step)
    lts.main(tiny_args(max_sweeps=1, train_steps=2, test_levels=2, eval_budget=50))
    levels, results = searches[0]  # the sweep's search; the second is the evaluation
    solved = [(lv, r) for lv, r in zip(levels, results) if r["solved"]]
    assert len(solved) >= 10 and len({r["expansions"] for _, r in solved}) > 3
    expected = [x for lv, r in solved for x in lts.solution_samples(lv, r["actions"], r["expansions"])]
    assert len(steps) == 2 and all(samples == expected for samples, _ in steps)
    assert steps[0][1] == pytest.approx(np.mean([r["expansions"] for _, r in solved]))


# ---------------------------------------------------------------- training, checkpoints, learning
def test_checkpoint_resume_continues_the_same_run(tmp_path):
    tiny_args = lambda **kw: globals()["tiny_args"](train_levels=30, test_levels=8, eval_budget=300, **kw)
    straight = lts.main(tiny_args(max_sweeps=2, save_model=True, exp_name="straight"))
    first = lts.main(tiny_args(max_sweeps=1, save_model=True, exp_name="first"))
    [path] = list((tmp_path / "runs").glob("*first*/levin_ts.pt"))
    ckpt = lts.load_checkpoint(str(path), "--resume")  # plain data: no pickled classes
    assert {"net", "optimizer", "budget", "sweep", "memory", "cursor", "train_names", "search"} <= ckpt.keys()
    assert ckpt["sweep"] == 1 and first["sweep"] == 1
    resumed = lts.main(tiny_args(max_sweeps=2, save_model=True, resume=str(path)))
    assert resumed["sweep"] == 2
    for key in ("eval/solved", "eval/total_expansions", "train/solved", "charts/budget", "losses/policy_loss"):
        assert resumed[key] == straight[key], key
    assert len(list((tmp_path / "runs").iterdir())) == 2  # the resumed run wrote to its checkpoint, nowhere else
    assert lts.load_checkpoint(str(path), "--resume")["sweep"] == 2
    assert not list((tmp_path / "runs").glob("*/*.tmp*"))
    # --eval-checkpoint searches the run's own held-out levels with it (its level flags, from the
    # checkpoint), and trains nothing.
    searched = lts.main(lts.Args(eval_checkpoint=str(path), eval_budget=300, batch_levels=16))
    for key in ("eval/solved", "eval/total_expansions", "train/solved", "sweep"):
        assert searched[key] == straight[key], key
    assert lts.load_checkpoint(str(path), "--resume")["sweep"] == 2
    for flag in ("resume", "eval_checkpoint"):  # a LevinTS network is not searched by PHS*
        with pytest.raises(SystemExit, match=r"was trained with other flags: --search phs \(it has lts\); drop them"):
            lts.main(tiny_args(search="phs", **{flag: str(path)}))
    with pytest.raises(SystemExit, match=r"--num-boxes 3 \(it has 2\)"):  # resumed on other levels
        lts.main(tiny_args(num_boxes=3, resume=str(path)))


def test_a_checkpoint_finds_its_level_files_from_any_folder_and_a_finished_run_is_not_resumed(tmp_path, monkeypatch,
                                                                                              capsys):
    """Level paths are saved absolute (an older checkpoint's relative ones still load from their folder); --resume
    refuses a run that would train nothing, or another first --budget; a folder is not a checkpoint."""
    (tmp_path / "data").mkdir()
    write_rooms(tmp_path / "data" / "ten.txt")
    monkeypatch.chdir(tmp_path / "data")
    small = dict(eval_budget=300, batch_levels=8)
    train = dict(budget=200, max_sweeps=1, sweep_levels=8, train_steps=2, batch_size=8, **small)
    lts.main(lts.Args(levels_path="ten.txt", test_levels=2, **train))
    [path] = [str(p) for p in (tmp_path / "data" / "runs").glob("*/levin_ts.pt")]
    assert lts.load_checkpoint(path, "--resume")["args"]["levels_path"] == str(tmp_path / "data" / "ten.txt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert lts.main(lts.Args(eval_checkpoint=path, **small))["eval/levels"] == 2
    capsys.readouterr()
    assert lts.main(lts.Args(resume=path, **{**train, "max_sweeps": 2, "budget": 2000}))["sweep"] == 2
    assert "budget=200" in capsys.readouterr().out  # the run's first budget, which sizes its sweeps
    with pytest.raises(SystemExit, match=r"--budget 500 \(it has 200\); drop them"):
        lts.main(lts.Args(resume=path, budget=500, max_sweeps=3))
    with pytest.raises(SystemExit, match=rf"^--resume {path} is already at sweep 2: raise --max-sweeps above it\.$"):
        lts.main(lts.Args(resume=path, max_sweeps=2))
    with pytest.raises(SystemExit, match=rf"^--resume {path} has trained [\d.]+ minutes and its next sweep would end "
                                         r"past --train-minutes 1e-06: raise --train-minutes above [\d.]+\.$"):
        lts.main(lts.Args(resume=path, max_sweeps=3, train_minutes=1e-6))
    with pytest.raises(SystemExit, match=r"cannot read it \(Is a directory\): give the checkpoint file in it, "
                                         rf"{tmp_path}/data/runs/levin_ts.pt\.$"):
        lts.main(lts.Args(eval_checkpoint=str(tmp_path / "data" / "runs")))
    # A checkpoint of before: relative paths and level names, read from its folder, with or without the flag.
    ckpt = lts.load_checkpoint(path, "--resume")
    ckpt["args"]["levels_path"] = "ten.txt"
    ckpt["train_names"] = [name.replace(f"{tmp_path}/data/", "") for name in ckpt["train_names"]]
    lts.save_checkpoint(path, ckpt)
    monkeypatch.chdir(tmp_path / "data")
    for flags in ({}, {"levels_path": "ten.txt"}):
        assert lts.main(lts.Args(eval_checkpoint=path, **small, **flags))["eval/levels"] == 2
        assert lts.main(lts.Args(resume=path, **{**train, "max_sweeps": 3}, **flags))["sweep"] == 3
        lts.save_checkpoint(path, ckpt)  # back at sweep 2


def test_ctrl_c_saves_a_checkpoint_that_resumes_the_run(tmp_path):
    """SIGINT mid-run: exit 130 without a traceback, a checkpoint, and a command that resumes it."""
    args = ["--train-levels", "300", "--test-levels", "4", "--num-boxes", "2", "--difficulty", "3", "--budget", "100",
            "--eval-budget", "100", "--sweep-levels", "20", "--train-steps", "3", "--batch-size", "16",
            "--batch-levels", "16", "--no-save-model"]
    proc = subprocess.Popen([sys.executable, str(ALGOS / "levin_ts.py"), *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while "sweep   2" not in proc.stdout.readline():  # interrupted while training
        assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    saved = re.search(r"^interrupted at sweep (\d+)\nsaved (\S+)$", out, re.M)
    command = re.search(r"^to resume it: python (.+)$", out, re.M)
    assert saved and command, out
    ckpt = lts.load_checkpoint(str(tmp_path / saved[2]), "--resume")
    assert ckpt["sweep"] == int(saved[1]) >= 2
    resumed = run([sys.executable, *shlex.split(command[1]), "--max-sweeps", str(int(saved[1]) + 1)], cwd=tmp_path)
    assert resumed.returncode == 0 and f"after {int(saved[1]) + 1} sweeps" in resumed.stdout, resumed.stderr


def test_budget_doubles_when_a_sweep_solves_too_little():
    run = lambda frac: lts.main(tiny_args(budget=40, max_sweeps=1, double_below=frac, eval_budget=50, test_levels=2))
    first = run(0.0)  # the paper's rule: double only when nothing new is solved
    solved, tried = first["train/solved"], 40
    assert 0 < solved < tried and first["charts/budget"] == 40
    assert run(solved / tried)["charts/budget"] == 80  # at the threshold: doubles
    assert run((solved - 0.5) / tried)["charts/budget"] == 40  # one level more than the threshold: stays


def test_no_sweep_starts_that_would_end_past_train_minutes(monkeypatch):
    """On a clock that reads 10 s later at every look, every sweep takes the same time D (a sweep
    reads the clock a fixed number of times): with --train-minutes at k + 0.5 sweeps, k sweeps run
    (the next would end past the limit), and levels are left unsolved, so the clock stopped it."""
    ticks = iter(range(0, 10**9, 10))
    monkeypatch.setattr(lts, "time", type("Clock", (), {"time": staticmethod(lambda: float(next(ticks)))}))
    budget_only = dict(budget=20, double_below=0.0, eval_budget=20, test_levels=2, train_steps=1)
    one_sweep = lts.main(tiny_args(max_sweeps=1, **budget_only))["train/seconds"]
    for k in (2, 3):
        limited = lts.main(tiny_args(max_sweeps=100, train_minutes=(k + 0.5) * one_sweep / 60, **budget_only))
        assert limited["sweep"] == k and limited["train/seconds"] == k * one_sweep
        assert limited["train/solved"] < limited["train/levels"]


def level_from_planes(planes: torch.Tensor) -> tuple:
    """(Level, State) read back from the one-hot planes [4, H, W]."""
    flat = planes.flatten(1).bool()
    h, w = planes.shape[1:]
    start = lts.State(int(flat[3].nonzero()), tuple(flat[2].nonzero().flatten().tolist()))
    level = lts.Level("turned", h, w, tuple(flat[0].tolist()), frozenset(flat[1].nonzero().flatten().tolist()), start)
    return level, start


def test_augment_turns_the_moves_and_the_legal_mask_with_the_board():
    """Under every symmetry, on the turned board the turned action leads to the turned next
    state, and the turned mask is the turned board's legality; non-square boards keep their shape."""
    rng = np.random.default_rng(0)
    for _ in range(10):
        level = lts.generate_level(rng, 10, 4, 10)
        moves = [(a, after) for a in range(4) if (after := level.step(level.start, a)) is not None]
        for k in range(8):
            obs = torch.from_numpy(lts.encode([level] * len(moves), [level.start] * len(moves)))
            nxt = torch.from_numpy(lts.encode([level] * len(moves), [after for _, after in moves]))
            legal = torch.tensor([[level.step(level.start, b) is not None for b in range(4)]] * len(moves))
            ks = np.full(len(moves), k)
            turned, actions, turned_legal = lts.augment(obs, torch.tensor([a for a, _ in moves]), legal, ks)
            for j in range(len(moves)):
                board, state = level_from_planes(turned[j])
                assert turned_legal[j].tolist() == [board.step(state, b) is not None for b in range(4)]
                assert board.step(state, int(actions[j])) == level_from_planes(lts.symmetry(nxt[j], k))[1]
    assert len({tuple(p.tolist()) for p in lts.MOVE_PERMS}) == 8
    board = torch.arange(6.0).reshape(1, 2, 3)
    assert all(lts.symmetry(board, k).shape == board.shape for k in (0, 2, 4, 6))


def test_learned_policy_beats_the_uniform_policy():
    """Bootstrap training on easy generated levels: the held-out levels are solved more often
    and with fewer expansions than with the uniform policy. Seed 1, measured (issue 24): trained,
    48/48 solved, mean 89 expansions; the uniform policy 38/48, mean 382, 29,520 in all; the
    untrained network (--learning-rate 1e-12) 38/48, mean 384, 29,585 in all; the Levin loss with
    its sign flipped (trained away from the solutions) 32/48, mean 375, 36,002 in all; trained on
    unturned boards with turned moves, 38/48, mean 383, 29,571 in all. Each bar below fails for
    all three."""
    m = lts.main(tiny_args(train_levels=200, test_levels=48, num_boxes=2, difficulty=6, budget=400,
                           eval_budget=1500, max_sweeps=2, sweep_levels=200, train_steps=150, batch_size=64,
                           batch_levels=48, compare_uniform=True))
    print(m)  # seed 1: 48/48 solved, mean 89 expansions; uniform 38/48, mean 382
    assert m["eval/solved"] >= m["uniform/solved"] + 4
    assert m["eval/mean_expansions"] < 0.6 * m["uniform/mean_expansions"]
    assert m["eval/total_expansions"] < 0.5 * m["uniform/total_expansions"]
    assert m["eval/bound_violations"] == 0 and m["uniform/bound_violations"] == 0


# ---------------------------------------------------------------- benchmarks (an idle machine, ~1 hour each)
BOXOBAN = SHARED_DATA / "boxoban" / "unfiltered" / "train"
EVAL_LINE = re.compile(r"solved (\d+)/(\d+) held-out levels \(budget \d+\), expansions mean (\d+) .*?([\d,]+) "
                       r"expansions in all .*?([\d,]+) expansions/s, Theorem 3 violations (\S+), "
                       r"after (\d+) sweeps, (\d+) s of training")


def boxoban_run(search):
    """Train on 1,000 generated levels (a curriculum) and files 000-008 (9,000 levels) for 60
    minutes, then evaluate on the 1,000 levels of 009 with the default budget of 20,000."""
    cmd = [sys.executable, str(ALGOS / "levin_ts.py"), "--search", search, "--levels-path", str(BOXOBAN),
           "--train-levels", "9000", "--test-levels", "1000", "--add-generated", "1000", "--train-minutes", "60"]
    proc = run(cmd, cwd=ALGOS.parent, timeout=2 * 3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    solved, levels, mean, total, speed, violations, sweeps, seconds = EVAL_LINE.search(proc.stdout).groups()
    print(f"\n{search}: solved {solved}/{levels}, mean expansions {mean}, {total} in all, {speed} expansions/s, "
          f"violations {violations}, {sweeps} sweeps, {seconds} s training")
    return int(solved), int(levels), int(mean), int(total.replace(",", "")), int(speed.replace(",", "")), violations


@pytest.mark.benchmark
@pytest.mark.skipif(not BOXOBAN.is_dir(), reason=no_data("boxoban/unfiltered/train"))
def test_boxoban_lts_and_phs_after_an_hour_of_training():
    solved, levels, mean, total, speed, violations = boxoban_run("lts")
    assert levels == 1000 and solved >= 950 and mean <= 5000 and speed >= 2000 and violations == "0"
    # PHS* reaches the same 95% at the same speed bar and at least matches LevinTS in expansions:
    # per solved level, and over the same 1,000 levels with a failure counting the budget it
    # spent (a mean over solved levels alone would favour solving fewer).
    phs_solved, phs_levels, phs_mean, phs_total, phs_speed, _ = boxoban_run("phs")
    assert phs_levels == 1000 and phs_solved >= 950 and phs_speed >= 2000
    assert phs_mean <= mean and phs_total <= total


def test_phs_trains_the_heuristic_and_mixes_generated_levels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    square = ROOM.replace("#  $ .#\n", "#  $ .#\n#     #\n")  # 7 x 7, the generator's rooms are square
    (tmp_path / "levels.txt").write_text((square + "\n") * 5)
    m = lts.main(tiny_args(search="phs", levels_path=str(tmp_path / "levels.txt"), test_levels=2, size=7,
                           add_generated=20, num_boxes=2, max_sweeps=2))
    assert m["train/levels"] == 3 + 20 and m["eval/levels"] == 2 and m["train/solved"] >= 10
    assert m["losses/heuristic_loss"] > 0 and "eval/bound_violations" not in m  # Theorem 3 is LevinTS's
    (tmp_path / "room.txt").write_text((ROOM + "\n") * 5)  # 6 x 7 levels beside 7 x 7 generated ones
    with pytest.raises(SystemExit, match="different sizes"):
        lts.main(tiny_args(levels_path=str(tmp_path / "room.txt"), test_levels=2, size=7, add_generated=2))
