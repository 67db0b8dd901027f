"""Levin tree search (LevinTS) and Policy-Guided Heuristic Search (PHS*) with a learned policy on Sokoban, in
one file: the game, a Boxoban loader, a level generator, batched best-first search, bootstrap training.

LevinTS (Orseau, Lelis, Lattimore, Weber 2018) is best-first search over the tree of action sequences,
guided by a policy pi(a|s). A node n at depth g(n) (actions from the root) has the path probability
pi(n) = prod_t pi(a_t|s_t) and is expanded in increasing order of

    Levin cost     d(n) / pi(n),   d(n) = g(n) + 1 (the nodes on the path, root included)
                   -> in log space: log d(n) - log pi(n), log pi(n) = sum_t log pi(a_t|s_t)
    Theorem 3      expansions until the goal node n* is expanded  <=  d(n*) / pi(n*)

Why the bound holds, and what is counted: costs only grow along a path (d grows, pi shrinks), so every node expanded up
to and including n* has cost <= c = cost(n*), and the set S of tree nodes with cost <= c is closed under taking parents.
Each node of S lies on the path to some leaf l of S (with no child in S), whose path holds d(l) <= c pi(l) nodes; leaves
are no one's ancestors, so their probabilities sum to at most 1 and |S| <= sum_l d(l) <= c sum_l pi(l) <= c. Ties (nodes
of cost exactly c expanded before n*) and the state cut below only remove nodes from S, so the expansions, n* included,
stay <= d(n*)/pi(n*): checked on every solved level (eval/bound_violations). The policy is renormalized over the moves
that change the state (the others are not children), so the probabilities of a node's children sum to 1.

State cut (2018 paper, for Markov policies): pi(.|s) depends on the state only, so the subtree below a
state is the same whichever path reached it, and only the cheaper copy is worth keeping: a child whose
state was already reached at a lower or equal cost is pruned, and a frontier node whose state was since
reached more cheaply is skipped when popped (and not counted). Ties in cost are broken by insertion order.

PHS* (Orseau & Lelis 2021) adds a learned heuristic h(n) >= 0 to the policy:

    PHS* cost      phi(n) = (g + h) / pi(n)^(1 + h/g)  ->  log(g + h) - (1 + h/g) log pi(n)

The search's h is the network's estimate of the moves left times --h-weight w (0.25): the estimate learns
the lengths of the solutions found, which are longer than the shortest, and an h too large near the root
(h/g big) puts a large power on pi and makes the search greedy.

Both use one small CNN over a one-hot grid (planes: wall, goal, box, player) with a policy head (4 moves) and a
heuristic head. Search (batched_search) runs many levels at once: one network call a round for all states that need it.

Bootstrap training (as in the PHS paper's code): search the unsolved training levels with an expansion budget; train on
the solutions found with the Levin loss, a cross-entropy on the solution's actions weighted by the expansions the search
spent (minimizing the bound N(n*)/pi(n*) pushes up log pi(n*) in proportion to N), and, for PHS*, a regression of h on
the distance to go along the solution; double the budget when a sweep solves nothing new; repeat until another sweep as
long as the last would end past --train-minutes. Three departures from the paper's loop: the budget doubles as soon as a
sweep solves at most --double-below of the levels it tries (on thousands of levels "nothing new" never comes, and the
hard levels would never be searched deeper); every training state is seen turned or mirrored at random (one of the
square's 8 symmetries, the moves turned with it); and h's regression does not train the layers it shares with the policy
(see PolicyHeuristicNet.forward).

Sokoban: walls and goals are fixed; the player moves up/down/left/right and pushes a box when the cell beyond it is free
(no wall, no box); solved when every box is on a goal. Levels are Boxoban's text format (google-deepmind/boxoban-levels:
`; N`, then 10 lines of 10 characters, `#` wall, `@` player, `$` box, `.` goal, space floor), also XSB's `*` (box on
goal) and `+` (player on goal). The generator carves a room by a random walk, puts the boxes on the goals and plays
backwards (the player pulls boxes) until it has pulled --difficulty times, so every level is solvable.

Distributed: under torchrun rank r searches levels r, r + world_size, ... of each sweep and of the
evaluation; the solutions are all-gathered, every rank trains on all of them with its share of
--batch-size, and DistributedDataParallel averages the gradients. Rank 0 alone prints, logs and saves.

References
    Orseau, Lelis, Lattimore, Weber 2018, "Single-Agent Policy Tree Search With Guarantees",
        NeurIPS, arXiv:1811.10928 (LevinTS, Theorem 3, the state cut).
    Orseau & Lelis 2021, "Policy-Guided Heuristic Search with Guarantees", AAAI (PHS*, Levin loss, bootstrap training).
    Guez et al. 2019, "An investigation of model-free planning", ICML, arXiv:1901.03559
        (the Boxoban levels; github.com/google-deepmind/boxoban-levels).

Usage (sh data/get_boxoban.sh fetches the levels; offline, ../shared/data/boxoban has 10,000)
    python algos/levin_ts.py --levels-path data/boxoban/unfiltered/train --add-generated 1000 \\
        --test-levels-path data/boxoban/unfiltered/test --test-levels 1000   # the main job, 60 min
    python algos/levin_ts.py --search phs --levels-path ...      # PHS* with the heuristic head
    python algos/levin_ts.py --train-minutes 2                   # a quick run on generated levels
    torchrun --standalone --nproc_per_node=2 algos/levin_ts.py --train-minutes 2
    python algos/levin_ts.py --resume runs/<run_name>/levin_ts.pt --train-minutes 90   # train on
    python algos/levin_ts.py --eval-checkpoint runs/<run_name>/levin_ts.pt   # search its held-out levels
"""

import dataclasses
import functools
import hashlib
import heapq
import io
import json
import math
import os
import shlex
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, NamedTuple, Optional, get_type_hints

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.nn.parallel import DistributedDataParallel as DDP

ALGO = "levin_ts"


@dataclass(frozen=True)
class Range:
    """Valid values of a numeric field: lo <= x <= hi (lo < x with lo_open), and finite; check_args enforces them."""
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False


@dataclass
class Args:
    """Levin tree search / PHS* with a learned policy on Sokoban (Boxoban)."""
    exp_name: str = "levin_ts"  # name of this experiment (part of the run name)
    seed: Annotated[int, Range(0, 2**31 - 1)] = 1  # seed of the levels, the weights and (with the rank) minibatches
    torch_deterministic: bool = True  # set torch.backends.cudnn.deterministic
    cuda: bool = True  # use CUDA when it is available
    num_threads: Annotated[int, Range(1)] = 1  # torch CPU threads; the small CNN runs fastest with one
    track: bool = False  # log to Weights & Biases
    wandb_project_name: str = "algos"  # the wandb project
    wandb_entity: Optional[str] = None  # the wandb entity (team)
    save_model: bool = True  # write runs/<run_name>/levin_ts.pt after every sweep; Ctrl-C saves it in any case
    resume: Optional[str] = None  # continue training this checkpoint (its network and levels); the run writes to it
    eval_checkpoint: Optional[str] = None  # no training: search held-out levels (its own unless level flags are given)

    search: Literal["lts", "phs"] = "lts"  # LevinTS (cost d/pi) or PHS* ((g+h)/pi^(1+h/g), uses the heuristic head)
    levels_path: Optional[str] = None  # training levels: a Boxoban .txt file or a folder of them; none = generated
    test_levels_path: Optional[str] = None  # held-out levels; none = the last --test-levels of the training set
    test_levels: Annotated[int, Range(1)] = 200  # held-out levels (from the end of the training set, or generated)
    train_levels: Annotated[int, Range(1)] = 2000  # training levels (the first ones of --levels-path, or generated)
    # with --levels-path: first train on this many generated levels, difficulty rising from 1 to --difficulty
    add_generated: Annotated[int, Range(0)] = 0
    difficulty: Annotated[int, Range(1)] = 10  # generator: box pulls of the reverse play (more = harder)
    num_boxes: Annotated[int, Range(1)] = 4  # generator: boxes (and goals) per level
    size: Annotated[int, Range(5)] = 10  # generator: side of the square room, border walls included

    budget: Annotated[int, Range(1)] = 2000  # expansions per level in the first sweep (doubling: see --double-below)
    max_budget: Annotated[int, Range(1)] = 64000  # the budget stops doubling here
    eval_budget: Annotated[int, Range(1)] = 20000  # expansions per level in the final evaluation
    # minutes of searching and training (over all resumes); a sweep starts only if one as long as the last fits
    train_minutes: Annotated[float, Range(0, lo_open=True)] = 60.0
    max_sweeps: Annotated[int, Range(1)] = 1000  # stop after this many sweeps (over all resumes)
    # unsolved training levels per sweep at the first budget (all ranks together); fewer as the budget doubles,
    # so that a sweep's worst case stays --sweep-levels x --budget
    sweep_levels: Annotated[int, Range(1)] = 250
    # levels searched at once (all ranks together; the network's batch: one state per level, ~3 for PHS*)
    batch_levels: Annotated[int, Range(1)] = 128
    # double the budget when a sweep solves at most this fraction of its levels (0: none solved, the paper's rule)
    double_below: Annotated[float, Range(0, 1)] = 0.15
    train_steps: Annotated[int, Range(1)] = 200  # gradient steps after each sweep
    batch_size: Annotated[int, Range(1)] = 256  # solution states per gradient step (all ranks together)
    learning_rate: Annotated[float, Range(0, lo_open=True)] = 1e-3  # Adam step size
    channels: Annotated[int, Range(1)] = 32  # convolution channels of the network
    hidden: Annotated[int, Range(1)] = 128  # width of each head's dense layer
    # PHS* only: the search uses w * h(s), as h learns solutions longer than the shortest (see the docstring)
    h_weight: Annotated[float, Range(0)] = 0.25
    compare_uniform: bool = False  # also evaluate the uniform policy on the held-out levels (LevinTS with pi = 1/moves)


# =============================================================================================
# ALGORITHM: Sokoban and its levels, the network, LevinTS and PHS* search, the Levin loss, training. Read this first.
# =============================================================================================
# ----------------------------------------------------------------------------- Sokoban
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right
MOVE_NAMES = "udlr"
CHARS = {"#": "wall", " ": "floor", "@": "player", "$": "box", ".": "goal", "*": "box+goal", "+": "player+goal"}


class State(NamedTuple):
    """What changes during play: the player's cell and the sorted box cells (flat indices); hashable."""
    player: int
    boxes: tuple


@dataclass(frozen=True)
class Level:
    """What does not change: the walls and goals of a height x width room, and the start."""
    name: str
    height: int
    width: int
    walls: tuple  # walls[i] is True for a wall at flat index i = row * width + col
    goals: frozenset
    start: State

    def step(self, state: State, action: int) -> Optional[State]:
        """The state after `action`, or None when the move changes nothing (a wall, or a push
        against a wall or a second box). Flat index arithmetic is safe: rooms have walls all round."""
        delta = MOVES[action][0] * self.width + MOVES[action][1]
        target = state.player + delta
        if self.walls[target]:
            return None
        if target in state.boxes:  # push: the cell beyond the box must be free
            beyond = target + delta
            if self.walls[beyond] or beyond in state.boxes:
                return None
            return State(target, tuple(sorted(beyond if b == target else b for b in state.boxes)))
        return State(target, state.boxes)

    @functools.cached_property
    def planes(self) -> np.ndarray:
        """The fixed input planes [2, H*W] (wall, goal), built once per level."""
        planes = np.zeros((2, self.height * self.width), np.float32)
        planes[0], planes[1, list(self.goals)] = self.walls, 1.0
        return planes

    def solved(self, state: State) -> bool:
        return all(b in self.goals for b in state.boxes)

    def render(self, state: Optional[State] = None) -> str:
        """The level as text (the loader reads it back)."""
        s = state or self.start
        cell = lambda i: ("#" if self.walls[i] else "*$"[i not in self.goals] if i in s.boxes else
                          "+@"[i not in self.goals] if i == s.player else "." if i in self.goals else " ")
        return "\n".join("".join(cell(r * self.width + c) for c in range(self.width)) for r in range(self.height))


def parse_levels(text: str, source: str) -> list[Level]:
    """Levels from Boxoban/XSB text: `; name` lines start a level, blank lines end one.
    Malformed input raises ValueError naming `source` and the line number."""
    levels, rows, header = [], [], None  # rows: (line number, line) of the level being read
    for lineno, line in enumerate(text.splitlines() + [""], 1):  # the "" ends the last level
        if line.strip() and not line.startswith(";"):
            if bad := set(line) - set(CHARS):
                raise ValueError(f"{source}:{lineno}: unknown character {sorted(bad)[0]!r}; "
                                 f"levels use only {''.join(CHARS)!r}.")
            if rows and len(line) != len(rows[0][1]):
                raise ValueError(f"{source}:{lineno}: the line has {len(line)} characters but the level's "
                                 f"first line has {len(rows[0][1])}; every line of a level has the same width.")
            rows.append((lineno, line))
        elif rows:  # a `;` or blank line ends the level read so far
            levels.append(level_from_rows(rows, source, header))
            rows = []
        if line.startswith(";"):
            header = line[1:].strip()
    return levels


def level_from_rows(rows: list[tuple[int, str]], source: str, header: Optional[str]) -> Level:
    """The level drawn by `rows`, (line number, line) each, or a ValueError naming the line at fault."""
    first, cells = rows[0][0], {ch: [] for ch in CHARS}
    for r, (lineno, line) in enumerate(rows):
        for c, ch in enumerate(line):
            cells[ch].append((lineno, r * len(line) + c))
    players = cells["@"] + cells["+"]
    if not players:
        raise ValueError(f"{source}:{first}: the level has no player (@ or +); add one.")
    if len(players) > 1:
        raise ValueError(f"{source}:{players[1][0]}: a second player; a level has exactly one @ or +.")
    boxes = [i for _, i in cells["$"] + cells["*"]]
    goals = [i for _, i in cells["."] + cells["*"] + cells["+"]]
    if len(boxes) != len(goals) or not boxes:
        raise ValueError(f"{source}:{first}: the level has {len(boxes)} boxes and {len(goals)} goals; "
                         "it needs as many of each, at least one.")
    if set(rows[0][1] + rows[-1][1] + "".join(line[0] + line[-1] for _, line in rows)) != {"#"}:
        raise ValueError(f"{source}:{first}: the level's outer rows and columns must all be walls (#).")
    walls = tuple(ch == "#" for _, line in rows for ch in line)
    return Level(f"{source}:{header if header is not None else first}", len(rows), len(rows[0][1]), walls,
                 frozenset(goals), State(players[0][1], tuple(sorted(boxes))))


def load_levels(path: str) -> list[Level]:
    """All levels of a .txt file, or of every .txt file in a folder (sorted by name)."""
    p = Path(path)
    files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
    if not p.exists() or not files:
        inner = [str(d) for d in sorted(p.iterdir()) if d.is_dir() and any(d.glob("*.txt"))] if p.is_dir() else []
        if inner:  # the parent of Boxoban's train/, valid/, test/
            raise ValueError(f"{path} holds no .txt files but its folders do: did you mean {' or '.join(inner)}?")
        raise ValueError(f"{path}: no such file, or a folder without .txt files; get the Boxoban "
                         "levels first (the repository's data/get_boxoban.sh), or leave out --levels-path.")
    levels = []
    for f in files:
        try:
            found = parse_levels(f.read_text(encoding="utf-8-sig"), str(f))  # -sig: skips a BOM
        except UnicodeDecodeError as e:
            raise ValueError(f"{f}: byte {e.start} is not UTF-8 text; give a Boxoban level file.") from None
        except OSError as e:
            raise ValueError(f"{f}: cannot read it ({e.strerror}).") from None
        if not found:
            raise ValueError(f"{f}: no levels in it; a level is a `; name` line and the rows of the room.")
        levels += found
    return levels


def generate_level(rng: np.random.Generator, size: int = 10, num_boxes: int = 4, difficulty: int = 10,
                   name: str = "generated") -> Level:
    """A solvable level, played backwards from the solved one: the player walks at random and pulls along (with
    probability 1/2) an adjacent box it steps away from, until `difficulty` pulls or 100 times as many steps, each
    undoing a legal forward move or push; a level whose boxes all came back to the goals is drawn again."""
    while True:
        walls = np.ones((size, size), bool)
        r, c = rng.integers(1, size - 1, 2)
        interior = (size - 2) ** 2
        floor_target = rng.integers(interior // 2, 3 * interior // 4 + 1)  # Boxoban rooms: about 30-50 cells
        while (~walls).sum() < floor_target:
            walls[r, c] = False
            dr, dc = MOVES[rng.integers(4)]
            r, c = min(max(r + dr, 1), size - 2), min(max(c + dc, 1), size - 2)
        goals = rng.choice(np.flatnonzero(~walls.ravel()), num_boxes + 1, replace=False)
        player, boxes, flat_walls, pulls = int(goals[-1]), set(goals[:-1].tolist()), walls.ravel(), 0
        for _ in range(100 * difficulty):
            if pulls == difficulty:
                break
            dr, dc = MOVES[rng.integers(4)]
            delta = dr * size + dc
            if flat_walls[player + delta] or player + delta in boxes:
                continue
            if player - delta in boxes and rng.random() < 0.5:  # pull the box behind the player
                boxes.remove(player - delta)
                boxes.add(player)
                pulls += 1
            player += delta
        if boxes != set(goals[:-1].tolist()):
            return Level(name, size, size, tuple(flat_walls.tolist()), frozenset(goals[:-1].tolist()),
                         State(player, tuple(sorted(boxes))))


def get_levels(args: Args, given: Optional[Args] = None) -> tuple[list[Level], list[Level]]:
    """(training, held-out levels), from files or the generator; a bad file ends the run with one sentence naming it.
    `given`: the command line's flags (default: args); a count it sets above what the files hold is refused, while
    a default (or a checkpoint's) count takes all there are, as the first line of the run says."""
    set_above = lambda k, n: getattr(given or args, k) != getattr(Args(), k) and getattr(args, k) > n
    try:
        test = load_levels(args.test_levels_path) if args.test_levels_path is not None else None
        if test is not None and set_above("test_levels", len(test)):
            raise ValueError(f"--test-levels {args.test_levels}: --test-levels-path {args.test_levels_path} has "
                             f"{len(test)} levels; lower it to at most {len(test)}.")
        test = None if test is None else test[:args.test_levels]
        rng = np.random.default_rng(args.seed)
        gen = lambda tag, difficulties: [generate_level(rng, args.size, args.num_boxes, d, f"{tag}{k}")
                                         for k, d in enumerate(difficulties)]
        if args.levels_path is None:
            train = gen("train", [args.difficulty] * args.train_levels)
            test = gen("test", [args.difficulty] * args.test_levels) if test is None else test
        else:
            train = load_levels(args.levels_path)
            if test is None:  # the held-out levels are the last ones of the training file
                if len(train) <= args.test_levels:
                    raise ValueError(f"--levels-path {args.levels_path} has {len(train)} levels, not more than "
                                     f"--test-levels {args.test_levels}; give --test-levels-path or lower it.")
                train, test = train[:-args.test_levels], train[-args.test_levels:]
            if set_above("train_levels", len(train)):
                raise ValueError(f"--train-levels {args.train_levels}: --levels-path {args.levels_path} has "
                                 f"{len(train)} training levels" + ("" if args.test_levels_path else
                                 f" besides the {len(test)} held out") + f"; lower it to at most {len(train)}.")
            train = train[:args.train_levels]
            n = args.add_generated
            train = gen("generated", [1 + k * args.difficulty // n for k in range(n)]) + train
    except ValueError as e:
        raise SystemExit(str(e)) from None
    content = lambda lv: (lv.height, lv.width, lv.walls, lv.goals, lv.start)  # not the name: a copy has another
    seen = {content(lv) for lv in train}
    checked = args.test_levels_path and not args.eval_checkpoint  # an evaluation may search training levels on purpose
    shared = [lv.name for lv in test if content(lv) in seen] if checked else []
    if shared:
        raise SystemExit(f"--test-levels-path {args.test_levels_path} shares {len(shared)} levels ({shared[0]} ...) "
                         "with the training levels; give it levels that are not trained on, or leave it out to hold "
                         "out the last --test-levels of --levels-path.")
    shapes = {(lv.height, lv.width) for lv in train + test}
    if len(shapes) > 1:
        raise SystemExit(f"the levels have different sizes {sorted(shapes)}; the search batches levels "
                         "of one size, so give levels of one size (--size sets the generated ones').")
    return train, test


def encode(levels: list[Level], states: list[State]) -> np.ndarray:
    """One-hot planes [N, 4, H, W]: wall, goal, box, player."""
    h, w = levels[0].height, levels[0].width
    obs = np.zeros((len(states), 4, h * w), np.float32)
    for k, (lv, s) in enumerate(zip(levels, states)):
        obs[k, :2] = lv.planes
        obs[k, 2, list(s.boxes)] = 1.0
        obs[k, 3, s.player] = 1.0
    return obs.reshape(len(states), 4, h, w)


# ----------------------------------------------------------------------------- network
class PolicyHeuristicNet(nn.Module):
    """Five 3x3 convolutions over the planes, so that the features at a cell see the 11 x 11 square around
    it: from the player's cell, most of a 10 x 10 room. The features at the player's cell (what the next move
    depends on most) and their mean over the room feed two heads, each a dense layer and an output: the move
    logits (the policy pi(.|s)) and the heuristic h(s), an estimate of the moves left. Reading the player's
    cell makes the policy the same function of the player's surroundings wherever the player stands."""

    def __init__(self, channels: int = 32, hidden: int = 128):
        super().__init__()
        layers = [nn.Conv2d(4, channels, 3, padding=1), nn.ReLU()]
        for _ in range(4):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.policy = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(), nn.Linear(hidden, len(MOVES)))
        self.heuristic = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x).flatten(2)  # [N, C, H*W]
        at_player = z[torch.arange(len(z), device=z.device), :, x[:, 3].flatten(1).argmax(1)]
        f = torch.cat([at_player, z.mean(2)], 1)
        # h reads the features but does not train them: its regression on distances of tens of moves
        # would take the shared layers over, at the policy's expense.
        return self.policy(f), self.heuristic(f.detach()).squeeze(1)


Evaluator = Callable[[np.ndarray], tuple[list, list]]


def network_evaluator(net: nn.Module, device: torch.device, h_weight: float = 1.0) -> Evaluator:
    """obs -> (log pi(.|s) as lists of 4 floats, h_weight * h(s) >= 0 as floats), one network call."""
    @torch.inference_mode()
    def evaluate(obs):
        logits, h = net(torch.from_numpy(obs).to(device))
        return F.log_softmax(logits, 1).tolist(), (h_weight * h.clamp(min=0)).tolist()
    return evaluate


def uniform_evaluator(obs: np.ndarray) -> tuple[list, list]:
    """The uniform policy (every legal move equally likely after renormalization), h = 0."""
    return [[0.0] * len(MOVES)] * len(obs), [0.0] * len(obs)


# ----------------------------------------------------------------------------- search
def levin_cost(depth: int, log_pi: float) -> float:
    """log(d/pi) with d = depth + 1 nodes on the path (Orseau et al. 2018, Theorem 3)."""
    return math.log(depth + 1) - log_pi


def phs_cost(depth: int, h: float, log_pi: float) -> float:
    """log phi = log(g + h) - (1 + h/g) log pi (Orseau & Lelis 2021); the root (g = 0) comes first."""
    return 0.0 if depth == 0 else math.log(depth + h) - (1.0 + h / depth) * log_pi


@dataclass(slots=True)
class Reached:
    """What the search knows of a state it has reached: the lowest cost it was reached at (the
    state cut), and its evaluation log pi(.|s) (None until the network has seen it) and h(s)."""
    cost: float
    policy: Optional[list]
    h: float


class Tree:
    """The search tree of one level: nodes in parallel lists, the frontier as a heap of (cost, node id) (ids grow, so
    equal costs pop in insertion order), and a Reached per state, for the state cut and to evaluate each state once."""

    def __init__(self, level: Level, algo: str):
        self.level, self.algo = level, algo
        self.states, self.parents, self.actions, self.depths, self.log_pis = [], [], [], [], []
        self.heap, self.seen, self.expansions = [], {}, 0

    def add(self, parent: int, action: int, state: State, depth: int, log_pi: float, policy=None, h=0.0) -> None:
        """A new node, unless the state cut prunes it. `policy` and `h` are the state's evaluation
        if made already (LevinTS evaluates a state when first expanded, PHS* when first reached)."""
        known = self.seen.get(state)
        if known is not None:
            policy, h = known.policy, known.h  # pi(.|s) and h(s) depend on the state only
        cost = levin_cost(depth, log_pi) if self.algo == "lts" else phs_cost(depth, h, log_pi)
        if known is not None and known.cost <= cost:
            return  # state cut: reached before at a lower or equal cost
        self.seen[state] = Reached(cost, policy, h)
        heapq.heappush(self.heap, (cost, len(self.states)))
        self.states.append(state)
        self.parents.append(parent)
        self.actions.append(action)
        self.depths.append(depth)
        self.log_pis.append(log_pi)

    def pop(self) -> Optional[int]:
        """The cheapest frontier node whose state has no cheaper copy since, counted as expanded; None when empty."""
        while self.heap:
            cost, node = heapq.heappop(self.heap)
            if cost <= self.seen[self.states[node]].cost:
                self.expansions += 1
                return node
        return None

    def children(self, node: int) -> list[tuple]:
        """(action, state, log pi) of the moves that change the state, with the policy renormalized over them."""
        state, policy = self.states[node], self.seen[self.states[node]].policy
        moves = [(a, s) for a in range(len(MOVES)) if (s := self.level.step(state, a)) is not None]
        if not moves:
            return []
        m = max(policy[a] for a, _ in moves)
        log_z = m + math.log(sum(math.exp(policy[a] - m) for a, _ in moves))
        return [(a, s, self.log_pis[node] + policy[a] - log_z) for a, s in moves]

    def result(self, node: Optional[int]) -> dict:
        out = dict(solved=node is not None, expansions=self.expansions, nodes=len(self.states))
        if node is not None:
            actions, n = [], node
            while self.parents[n] >= 0:
                actions.append(self.actions[n])
                n = self.parents[n]
            out.update(actions=actions[::-1], length=self.depths[node],
                       levin_cost=levin_cost(self.depths[node], self.log_pis[node]))
        return out


def batched_search(levels: list[Level], evaluate: Evaluator, budget: int, algo: str = "lts",
                   batch_levels: int = 64, trace: Optional[list] = None, stop=None) -> Optional[list[dict]]:
    """Best-first search on many levels at once. Each round expands the cheapest node of every level in the
    batch, and calls the network once on the states that need it, from all levels: the expanded states not
    evaluated yet (their policy gives the children's pi) and, for PHS*, the new children (their h is part of
    their cost). A level stops when its goal node is expanded, its frontier is empty, or after `budget`
    expansions; a queued level then takes its place. Per level: solved, expansions, nodes and, when solved,
    actions, length and levin_cost = log d(n*)/pi(n*). `trace`, if given, receives (level index, state, cost)
    for every expansion in order. None when `stop` (a StopFlag) is requested before the search ends."""
    results, queue, trees = [None] * len(levels), deque(range(len(levels))), {}

    def evaluations(items: list) -> dict:  # (level index, state) -> (log pi(.|s), h(s)), one call
        if not items:
            return {}
        policies, hs = evaluate(encode([levels[i] for i, _ in items], [s for _, s in items]))
        return dict(zip(items, zip(policies, hs)))

    while queue or trees:
        if stop is not None and stop.requested:
            return None
        while queue and len(trees) < batch_levels:
            i = queue.popleft()
            trees[i] = Tree(levels[i], algo)
            trees[i].add(-1, -1, levels[i].start, 0, 0.0)
        expanded = []
        for i, tree in list(trees.items()):
            node = tree.pop()
            solved = node is not None and tree.level.solved(tree.states[node])
            if node is not None and trace is not None:
                trace.append((i, tree.states[node], tree.seen[tree.states[node]].cost))
            if node is None or solved or tree.expansions >= budget:
                results[i] = tree.result(node if solved else None)
                del trees[i]
            else:
                expanded.append((i, node))
        missing = [(i, trees[i].states[n]) for i, n in expanded if trees[i].seen[trees[i].states[n]].policy is None]
        for (i, s), (policy, h) in evaluations(missing).items():
            trees[i].seen[s].policy, trees[i].seen[s].h = policy, h
        children = [(i, n, c) for i, n in expanded for c in trees[i].children(n)]
        new = evaluations([(i, s) for i, _, (_, s, _) in children if s not in trees[i].seen]) if algo == "phs" else {}
        for i, n, (a, s, log_pi) in children:  # in the order generated: ties pop in insertion order
            trees[i].add(n, a, s, trees[i].depths[n] + 1, log_pi, *new.get((i, s), (None, 0.0)))
    return results


WITHIN = (1000, 2000, 5000, 10000)  # budgets reported besides the evaluation's own


def summarize(results: list[dict], algo: str, seconds: float, budget: int) -> dict:
    """eval/* metrics; the expansions and lengths of solved levels are left out when none was solved."""
    solved = [r for r in results if r["solved"]]
    total = int(sum(r["expansions"] for r in results))
    exp = np.array([r["expansions"] for r in solved])
    out = {"eval/solved": len(solved), "eval/levels": len(results), "eval/total_expansions": total,
           "charts/expansions_per_s": total / max(seconds, 1e-9)}
    if solved:
        out |= {"eval/mean_expansions": float(exp.mean()), "eval/median_expansions": float(np.median(exp)),
                "eval/max_expansions": int(exp.max()),
                "eval/mean_length": float(np.mean([r["length"] for r in solved]))}
    # A level's search does not depend on the budget until the budget stops it (nor on the other levels in its batch,
    # up to the float rounding of batched network calls), so one run also tells what each smaller budget solves.
    for b in (b for b in WITHIN if b < budget):
        out[f"eval/solved_within_{b}"] = int((exp <= b).sum())
    if algo == "lts":  # Theorem 3 in log space: log(expansions) <= log d(n*) - log pi(n*)
        out["eval/bound_violations"] = sum(math.log(r["expansions"]) > r["levin_cost"] + 1e-9 for r in solved)
    return out


# ----------------------------------------------------------------------------- training
class Sample(NamedTuple):
    """One state of a solution, as a training example."""
    level: Level
    state: State
    action: int  # the solution's move here
    to_go: int  # moves left to the goal along the solution (h's target)
    legal: list  # legal[a]: move a changes the state
    expansions: int  # the expansions the search spent on the level (the Levin loss's weight)


def solution_samples(level: Level, actions: list, expansions: int) -> list[Sample]:
    """The states along a solution, replayed from the start (the memory keeps only the moves)."""
    samples, s = [], level.start
    for t, a in enumerate(actions):
        legal = [level.step(s, b) is not None for b in range(len(MOVES))]
        samples.append(Sample(level, s, a, len(actions) - t, legal, expansions))
        s = level.step(s, a)
    return samples


def symmetry(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the square's 8 symmetries on the last two dims: k % 4 quarter turns, then a
    mirror when k >= 4. The even k (half turn, the two mirrors) also keep a non-square board's shape."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def move_permutations() -> torch.Tensor:
    """[8, 4]: row k maps each move to the move it becomes on the board turned by symmetry k
    (read off by turning a 3 x 3 picture of the four moves around the centre)."""
    picture = torch.zeros(3, 3, dtype=torch.long)
    for a, (dr, dc) in enumerate(MOVES):
        picture[1 + dr, 1 + dc] = a + 1
    perms = torch.zeros(8, len(MOVES), dtype=torch.long)
    for k in range(8):
        turned = symmetry(picture, k)
        for r, c in turned.nonzero().tolist():
            perms[k, turned[r, c] - 1] = MOVES.index((r - 1, c - 1))
    return perms


MOVE_PERMS = move_permutations()


def augment(obs: torch.Tensor, actions: torch.Tensor, legal: torch.Tensor, ks: np.ndarray):
    """Sample i under symmetry ks[i]: its planes turned, its action and its legal-move mask
    turned with them (the new mask has legal[perm[a]] = the old legal[a])."""
    obs, actions, legal = obs.clone(), actions.clone(), legal.clone()
    perms = MOVE_PERMS.to(obs.device)
    for k in np.unique(ks):
        idx = torch.from_numpy(ks == k).to(obs.device)
        obs[idx] = symmetry(obs[idx], int(k))
        actions[idx] = perms[k][actions[idx]]
        legal[idx] = legal[idx][:, perms[k].argsort()]
    return obs, actions, legal


def levin_loss(logits: torch.Tensor, legal: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The Levin loss (Orseau & Lelis 2021), the gradient of N(n*) * (-log pi(n*)) with N fixed: the cross-entropy of
    the solution's actions under the policy renormalized over the legal moves (as in the search), weighted by N(n*)."""
    log_p = F.log_softmax(logits.masked_fill(~legal, float("-inf")), 1)
    return -(weights * log_p.gather(1, actions.unsqueeze(1)).squeeze(1)).mean()


def train_step(model: nn.Module, optimizer, samples: list[Sample], rng: np.random.Generator, batch_size: int,
               mean_expansions: float, algo: str, device: torch.device) -> tuple[float, float]:
    """One Adam step on `batch_size` samples drawn with replacement; returns (policy loss, h loss)."""
    batch = [samples[k] for k in rng.integers(0, len(samples), batch_size)]
    obs = torch.from_numpy(encode([b.level for b in batch], [b.state for b in batch])).to(device)
    actions = torch.tensor([b.action for b in batch], device=device)
    to_go = torch.tensor([float(b.to_go) for b in batch], device=device)
    legal = torch.tensor([b.legal for b in batch], device=device)
    weights = torch.tensor([b.expansions / mean_expansions for b in batch], device=device)
    # Sokoban's rules hold on the board turned or mirrored, moves turned alike: each sample under a random symmetry.
    ks = rng.integers(0, 8, batch_size) if obs.shape[-1] == obs.shape[-2] else 2 * rng.integers(0, 4, batch_size)
    obs, actions, legal = augment(obs, actions, legal, ks)
    logits, h = model(obs)
    policy_loss = levin_loss(logits, legal, actions, weights)
    # Huber: a few long, roundabout solutions give targets far off the rest; their gradient stays bounded.
    h_loss = F.smooth_l1_loss(h, to_go) if algo == "phs" else torch.zeros((), device=device)
    optimizer.zero_grad(set_to_none=True)
    (policy_loss + h_loss).backward()  # under DDP the gradients are averaged across ranks here
    optimizer.step()
    return policy_loss.item(), h_loss.item()


@dataclass
class TrainState:
    """What the bootstrap loop carries from one sweep to the next, and a checkpoint keeps."""
    budget: int  # expansions per level in the next sweep
    sweep: int = 0  # sweeps done
    trained_s: float = 0.0  # seconds of searching and training so far
    cursor: int = 0  # the next sweep takes the unsolved levels from this index on
    last_s: float = 0.0  # the last sweep's seconds
    expansions: int = 0  # node expansions spent in training sweeps so far, all ranks together
    memory: dict = dataclasses.field(default_factory=dict)  # level index -> (expansions, moves) of its solution


# =============================================================================================
# MACHINERY: argument checks, run folder, checkpoints, Ctrl-C, distributed set-up, logging.
# Not the algorithm: a first reading can skip to main().
# =============================================================================================
def check_args(args: Args) -> None:
    """Refuse in one sentence a numeric field outside its declared Range (nan, inf too) or an empty Optional[str]."""
    hints = get_type_hints(Args, include_extras=True)
    for name, value in dataclasses.asdict(args).items():
        if value == "" and hints[name] == Optional[str]:  # else it would pass for "not given" (None) unseen
            raise SystemExit(f"--{name.replace('_', '-')} was given an empty value: give one, or leave the flag out.")
        for r in (m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Range)):
            for v in value if isinstance(value, (tuple, list)) else (value,):
                if v is not None and not (math.isfinite(v) and (v > r.lo if r.lo_open else v >= r.lo) and v <= r.hi):
                    bounds = f"{'above' if r.lo_open else 'at least'} {r.lo:g}"
                    bounds += f" and at most {r.hi:g}" if r.hi < math.inf else ""
                    raise SystemExit(f"--{name.replace('_', '-')} {v} is not allowed: it must be {bounds}.")


def validate(args: Args, world_size: int, given: Optional[Args] = None) -> None:
    """Combinations of flags that would otherwise run silently wrong, one sentence each; `given`: the command line's
    flags (default: args), as a checkpoint's flags, filled in for the defaults, were checked when it was trained."""
    for name in ("batch_size", "batch_levels"):
        if getattr(args, name) % world_size:
            raise SystemExit(f"--{name.replace('_', '-')} {getattr(args, name)} does not divide among "
                             f"the {world_size} ranks: make it a multiple of {world_size}.")
    if args.max_budget < args.budget:
        raise SystemExit(f"--max-budget {args.max_budget} is below --budget {args.budget}; raise it.")
    if (args.levels_path is None or args.add_generated > 0) and 2 * (args.num_boxes + 1) > (args.size - 2) ** 2:
        raise SystemExit(f"--num-boxes {args.num_boxes} does not fit a {args.size}x{args.size} room; lower it.")
    unused = [f"--{k.replace('_', '-')}" for k in ("num_boxes", "difficulty", "size")
              if getattr(given or args, k) != getattr(Args(), k)]
    if args.levels_path is not None and args.add_generated == 0 and unused:
        raise SystemExit(f"{' '.join(unused)} set the generator, which --levels-path without --add-generated does "
                         "not use; drop them, or give --add-generated N to train on N generated levels first.")


def make_run_dir(name: str) -> str:
    """Create runs/<name>/ before training (an unwritable folder fails at once); a same-second twin gets <name>-2."""
    for path in [f"runs/{name}"] + [f"runs/{name}-{n}" for n in range(2, 100)]:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise SystemExit(f"cannot create the run folder {path} ({e.strerror}): "
                             "run from a folder you can write to.") from None
    raise SystemExit(f"runs/{name}: 99 runs of this name exist already; choose another --exp-name.")


CHECKPOINT_HEADER = b"algos checkpoint sha256="


def save_checkpoint(path: str, state: dict) -> None:
    """Atomic and verifiable: the torch.save bytes, headed by their sha256, go to a temp file that replaces path."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    with open(f"{path}.tmp", "wb") as f:
        f.write(CHECKPOINT_HEADER + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    os.replace(f"{path}.tmp", path)
    print(f"saved {path}")


def load_checkpoint(path: str, flag: str) -> dict:
    """A checkpoint that save_checkpoint wrote and whose sha256 matches, or one sentence why not."""
    try:
        with open(path, "rb") as f:
            header, _, data = f.read().partition(b"\n")
    except OSError as e:
        folder = f": give the checkpoint file in it, {os.path.join(path, f'{ALGO}.pt')}" if os.path.isdir(path) else ""
        raise SystemExit(f"{flag} {path}: cannot read it ({e.strerror}){folder}.") from None
    if header != CHECKPOINT_HEADER + hashlib.sha256(data).hexdigest().encode():
        raise SystemExit(f"{flag} {path} is damaged or is not a checkpoint of these scripts "
                         "(its sha256 does not match): use another one or train again.")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if state.get("algo") != ALGO:
        raise SystemExit(f"{flag} {path} is a {state.get('algo')}.py checkpoint, not {ALGO}.py's.")
    return state


class StopFlag:
    """Ctrl-C sets .requested and the loop stops at the end of its step, so the work is saved whole; a second Ctrl-C
    quits at once without saving. Under torchrun every rank hears it, and search() makes a stop on one a stop on all."""

    def __init__(self):
        self.requested, self.at = False, 0.0
        signal.signal(signal.SIGINT, self.handler)

    def handler(self, signum, frame):
        if not self.requested:
            self.requested, self.at = True, time.time()
            print("Ctrl-C: stopping after this step to save the work (again to quit without saving).",
                  file=sys.stderr, flush=True)
        elif time.time() - self.at > 2:  # torchrun repeats the first Ctrl-C at once: not a second one
            raise SystemExit("stopped by a second Ctrl-C; nothing was saved.")


def setup_distributed(args: Args) -> tuple[bool, int, int, torch.device]:
    """Under torchrun one process group (nccl on CUDA, gloo on CPU); returns (distributed, rank, world_size, device)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world_size = (int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"])) if distributed else (0, 1)
    use_cuda = args.cuda and torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.num_threads)
    return distributed, rank, world_size, device


class RunLog:
    """Every logged row goes to <run_dir>/metrics.jsonl as the run goes (one JSON object a line, after a first line with
    the config), so any run can be read back or plotted without wandb; --track sends them (and pictures) to wandb."""

    def __init__(self, args: Args, run_name: str, run_dir: str):
        self.wandb = None
        if args.track:  # a wandb run in run_dir, or one sentence saying why wandb could not start
            import wandb  # imported here so that a plain run does not pay for it
            try:
                wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name,
                           config=dataclasses.asdict(args), dir=run_dir)
            except Exception as e:
                raise SystemExit(f"--track: wandb could not start ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                 "run `wandb login`, or set WANDB_MODE=offline to log to files.") from None
            self.wandb = wandb
        self.path, self.start = os.path.join(run_dir, "metrics.jsonl"), time.time()
        self.file = open(self.path, "a", buffering=1)  # line-buffered: each row is in the file once printed
        header = {"algo": ALGO, "run_name": run_name, "config": dataclasses.asdict(args)}
        print(json.dumps(header, default=float), file=self.file)
        print(f"metrics: {self.path}")

    def log(self, row: dict, step: Optional[int] = None) -> None:
        line = {"step": step, "time": round(time.time() - self.start, 3)}
        line |= {k: v for k, v in row.items() if isinstance(v, (int, float, str, list, np.generic))}
        print(json.dumps(line, default=float), file=self.file)
        if self.wandb:
            self.wandb.log(row, step=step)

    def close(self) -> None:
        self.file.close()
        if self.wandb:
            self.wandb.finish()


def open_checkpoint(args: Args) -> tuple[Args, Optional[dict]]:
    """--resume or --eval-checkpoint: args with the checkpoint's network and level flags wherever the
    command line leaves the default (one it fixes, given otherwise, is refused), and the checkpoint."""
    if args.resume is not None and args.eval_checkpoint is not None:
        raise SystemExit("give --resume (continue training) or --eval-checkpoint (search only), not both.")
    path, flag = (args.resume, "--resume") if args.resume else (args.eval_checkpoint, "--eval-checkpoint")
    if path is None:
        return args, None
    net_fields = ("search", "channels", "hidden")  # a checkpoint fixes its network and, to resume it, its levels
    level_fields = ("seed", "levels_path", "train_levels", "add_generated", "difficulty", "num_boxes", "size",
                    "test_levels_path", "test_levels")
    # Resuming keeps the first sweep's budget too: main sizes a sweep by it, while the checkpoint's budget (doubled
    # since, maybe) is the one searched, so another --budget would silently change the run's sweeps.
    run_fields = level_fields + (("budget",) if args.resume else ())
    ckpt, default = load_checkpoint(path, flag), Args()
    saved, fixed = ckpt["args"], net_fields + (run_fields if args.resume else ())
    # Level paths are saved absolute (older checkpoints: as given); a flag naming the saved file takes the saved path.
    same = [k for k in ("levels_path", "test_levels_path") if getattr(args, k) and saved[k]
            and os.path.abspath(getattr(args, k)) == os.path.abspath(saved[k])]
    args = dataclasses.replace(args, **{k: saved[k] for k in same})
    clash = [f"--{k.replace('_', '-')} {getattr(args, k)} (it has {saved[k]})" for k in fixed
             if getattr(args, k) not in (saved[k], getattr(default, k))]
    if clash:
        raise SystemExit(f"{flag} {path} was trained with other flags: {', '.join(clash)}; "
                         "drop them, and its own are used.")
    own = {k: saved[k] for k in net_fields + run_fields if getattr(args, k) == getattr(default, k) != saved[k]}
    if own and int(os.environ.get("RANK", 0)) == 0:  # said, since a flag given at its default value looks ignored
        print(f"{flag} {path}: from the checkpoint " + ", ".join(f"{k}={v}" for k, v in own.items()))
    return dataclasses.replace(args, **own), ckpt


def main(args: Args) -> dict:
    """Bootstrap-train the policy (and heuristic), then search the held-out levels (--eval-checkpoint: only search).
    Returns the metrics logged last: summarize's, the training totals and losses, and uniform/* (--compare-uniform)."""
    check_args(args)
    # Level paths absolute, so that the checkpoint finds its levels from any folder (and the names it keeps match)
    given = args = dataclasses.replace(args, **{k: getattr(args, k) and os.path.abspath(getattr(args, k))
                                                for k in ("levels_path", "test_levels_path")})
    args, ckpt = open_checkpoint(args)
    distributed, rank, world_size, device = setup_distributed(args)
    validate(args, world_size, given)
    is_main = rank == 0
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    torch.backends.cudnn.deterministic = args.torch_deterministic
    # A network that memory cannot hold, refused before the run folder: its parameters counted on the meta device
    # (nothing allocated), 16 bytes each with their gradients and Adam's two moments.
    with torch.device("meta"):
        need = 16 * sum(p.numel() for p in PolicyHeuristicNet(args.channels, args.hidden).parameters())
    have = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
            else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else math.inf)
    if need > have:
        raise SystemExit(f"--channels {args.channels} and --hidden {args.hidden} make {need // 16:,} parameters, "
                         f"{need / 2**30:,.1f} GiB with their gradients and Adam's moments, more than the "
                         f"{have / 2**30:,.1f} GiB of this {device.type}: lower them.")
    run_dir = (os.path.dirname(args.resume) or ".") if args.resume else None  # a resumed run writes beside it
    if args.resume and not os.access(run_dir, os.W_OK):
        raise SystemExit(f"--resume {args.resume}: cannot write in {run_dir}; copy it to a folder you can write to.")
    if run_dir is None and is_main:
        run_dir = make_run_dir(f"{args.search}__{args.exp_name}__{args.seed}__{int(time.time())}")
    ckpt_path = args.resume or os.path.join(run_dir or "", "levin_ts.pt")

    train_levels, test_levels = get_levels(args, given)
    net = PolicyHeuristicNet(args.channels, args.hidden).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    st = TrainState(budget=args.budget)
    if ckpt:  # its network, optimizer (at --learning-rate) and loop state
        if args.resume and ckpt["train_names"] != [lv.name for lv in train_levels]:
            raise SystemExit(f"--resume {args.resume} was trained on other levels than its flags give now (did "
                             f"{args.levels_path or 'the generator'} change?); resume it with the levels it had.")
        net.load_state_dict(ckpt["net"])
        optimizer.load_state_dict(ckpt["optimizer"])
        optimizer.param_groups[0]["lr"] = args.learning_rate
        st = TrainState(**{f.name: ckpt[f.name] for f in dataclasses.fields(TrainState) if f.name in ckpt})
        if args.resume and st.sweep >= args.max_sweeps:  # it would train nothing and only evaluate again
            raise SystemExit(f"--resume {args.resume} is already at sweep {st.sweep}: raise --max-sweeps above it.")
        if args.resume and st.trained_s + st.last_s >= args.train_minutes * 60:
            raise SystemExit(f"--resume {args.resume} has trained {st.trained_s / 60:.2f} minutes and its next sweep "
                             f"would end past --train-minutes {args.train_minutes:g}: raise --train-minutes above "
                             f"{(st.trained_s + st.last_s) / 60:.2f}.")
    model = DDP(net, find_unused_parameters=args.search == "lts") if distributed else net  # LevinTS: h head unused
    logger = RunLog(args, os.path.basename(os.path.abspath(run_dir)), run_dir) if is_main else None
    stop = None if args.eval_checkpoint else StopFlag()  # listening before the line that says training starts
    if is_main:
        print(f"{args.search}: {len(train_levels)} training and {len(test_levels)} held-out levels "
              f"({args.levels_path or 'generated'}), {world_size} rank(s) on {device}"
              + ("" if args.eval_checkpoint else f", checkpoint {ckpt_path}; trains up to {args.train_minutes:g} "
                 f"minutes or {args.max_sweeps} sweeps (a started sweep finishes; --train-minutes 2 for a first look)"))

    def save() -> None:
        save_checkpoint(ckpt_path, dict(
            algo=ALGO, search=args.search, net=net.state_dict(), optimizer=optimizer.state_dict(),
            train_names=[lv.name for lv in train_levels], args=dataclasses.asdict(args), **dataclasses.asdict(st)))

    def search(levels: list[Level], evaluate: Evaluator, budget: int, algo: str = args.search,
               final: bool = False) -> tuple[list, float]:
        """Every rank's results in level order, and the slowest rank's seconds; Ctrl-C: rank 0 saves, all ranks exit
        (after training, in the final search, with the command that evaluates the network, not one that resumes)."""
        t = time.time()
        mine = batched_search(levels[rank::world_size], evaluate, budget, algo, args.batch_levels // world_size,
                              stop=stop)
        parts = [(mine, time.time() - t)] * world_size  # every rank's (results, seconds)
        if distributed:
            dist.all_gather_object(parts, parts[0])
        if any(part is None for part, _ in parts):
            if is_main:
                print(f"interrupted at sweep {st.sweep}")
                save()
                argv = sys.argv[1:]  # this command's arguments, less a --resume PATH of its own
                argv = [a for i, a in enumerate(argv) if "--resume" not in (a.split("=")[0], argv[i - 1] if i else "")]
                # under torchrun, as many ranks again: they continue their own random streams exactly
                launcher = ["torchrun", "--standalone", f"--nproc_per_node={world_size}"] if distributed else ["python"]
                if final:  # trained: what is left is the evaluation
                    print("to evaluate it: " + shlex.join(["python", sys.argv[0], "--eval-checkpoint", ckpt_path,
                                                           "--eval-budget", str(args.eval_budget)]))
                else:
                    print(f"to resume it: {shlex.join([*launcher, sys.argv[0], *argv, '--resume', ckpt_path])}")
            sys.exit(130)
        results = [None] * len(levels)
        for r, (part, _) in enumerate(parts):
            results[r::world_size] = part
        return results, max(s for _, s in parts)

    evaluate = network_evaluator(net, device, args.h_weight)
    samples = [] if args.eval_checkpoint else [  # solved levels are not searched again: their samples are built once
        x for i, (n_exp, moves) in st.memory.items() for x in solution_samples(train_levels[i], moves, n_exp)]
    start, row = time.time(), {}
    while (args.eval_checkpoint is None and st.sweep < args.max_sweeps
           and st.trained_s + st.last_s < args.train_minutes * 60):
        t0, before = time.time(), st.trained_s
        # The next unsolved levels after the cursor, cycling in order (the --add-generated ones, easiest first, come
        # first); fewer at a larger budget, so a sweep costs at most what the first did and the clock is read as often.
        n, count = len(train_levels), max(world_size, args.sweep_levels * args.budget // st.budget)
        chosen = [i for i in ((st.cursor + k) % n for k in range(n)) if i not in st.memory][:count]
        if not chosen:
            break
        net.eval()
        # After Ctrl-C this sweep is dropped, and the resumed run starts it again.
        results, search_s = search([train_levels[i] for i in chosen], evaluate, st.budget)
        st.cursor = (chosen[-1] + 1) % n
        st.expansions += sum(r["expansions"] for r in results)  # results holds every rank's levels
        new = [(i, r) for i, r in zip(chosen, results) if r["solved"]]
        for i, r in new:
            st.memory[i] = (r["expansions"], r["actions"])
            samples += solution_samples(train_levels[i], r["actions"], r["expansions"])
        net.train()
        rng = np.random.default_rng([args.seed, rank, st.sweep])  # the saved sweep is all the RNG state a resume needs
        losses = [(0.0, 0.0)]
        if samples:
            mean_exp = float(np.mean([n for n, _ in st.memory.values()]))
            losses = [train_step(model, optimizer, samples, rng, args.batch_size // world_size, mean_exp,
                                 args.search, device) for _ in range(args.train_steps)]
        st.sweep += 1
        st.trained_s += time.time() - t0
        if distributed:  # rank 0's clock decides for all, or ranks could disagree on the last sweep
            clock = torch.tensor([st.trained_s], dtype=torch.float64, device=device)
            dist.broadcast(clock, 0)
            st.trained_s = clock.item()
        st.last_s = st.trained_s - before
        row = {"sweep": st.sweep, "charts/budget": st.budget, "charts/solved_sweep": len(new),
               "charts/attempted_sweep": len(chosen), "charts/solved_total": len(st.memory),
               "charts/expansions_per_s": sum(r["expansions"] for r in results) / max(search_s, 1e-9),
               "charts/expansions_total": st.expansions,
               "losses/policy_loss": float(np.mean([p for p, _ in losses])), "wall_time": st.trained_s}
        if args.search == "phs":
            row["losses/heuristic_loss"] = float(np.mean([h for _, h in losses]))
        for name in ("policy", "heuristic"):  # a nan or inf loss stops the run (exit 1) instead of training garbage
            value = row.get(f"losses/{name}_loss", 0.0)  # LevinTS has no heuristic loss
            if not math.isfinite(value):
                raise SystemExit(f"sweep {st.sweep}: the {name} loss is {value}; lower --learning-rate.")
        if len(new) <= args.double_below * len(chosen):  # too little new: search deeper (the docstring says why)
            st.budget = min(2 * st.budget, args.max_budget)
        if is_main:
            print(f"sweep {st.sweep:>3}  budget {row['charts/budget']:>6}  solved {len(new):>4}/{len(chosen):<4} "
                  f"total {len(st.memory):>5}/{len(train_levels)}  expansions/s {row['charts/expansions_per_s']:,.0f}  "
                  f"policy loss {row['losses/policy_loss']:.3f}  "
                  + (f"h loss {row['losses/heuristic_loss']:.2f}  " if args.search == "phs" else "")
                  + f"{st.trained_s:.0f} s")
            logger.log(row, step=st.sweep)
            if args.save_model:
                save()

    net.eval()
    if is_main and not args.eval_checkpoint:
        print(f"final evaluation: {len(test_levels)} held-out levels (a Ctrl-C stops it and keeps the network)")
    results, seconds = search(test_levels, evaluate, args.eval_budget, final=True)
    metrics = summarize(results, args.search, seconds, args.eval_budget)
    metrics.update({"train/solved": len(st.memory), "train/levels": len(train_levels), "train/seconds": st.trained_s,
                    "sweep": st.sweep, "charts/budget": st.budget, "wall_time": time.time() - start,
                    **{k: v for k, v in row.items() if k.startswith("losses/")}})
    if args.compare_uniform:
        uniform, seconds = search(test_levels, uniform_evaluator, args.eval_budget, "lts", final=True)
        metrics.update({k.replace("eval/", "uniform/"): v for k, v in
                        summarize(uniform, "lts", seconds, args.eval_budget).items() if k.startswith("eval/")})
    if is_main:
        lengths = [r["length"] for r in results if r["solved"]]
        print(f"{args.search} eval: solved {metrics['eval/solved']}/{metrics['eval/levels']} held-out levels "
              f"(budget {args.eval_budget}), " + (f"expansions mean {metrics['eval/mean_expansions']:.0f} "
              f"median {metrics['eval/median_expansions']:.0f} max {metrics['eval/max_expansions']}, "
              f"solution length mean {metrics['eval/mean_length']:.1f} max {max(lengths)}, " if lengths else "")
              + f"{metrics['eval/total_expansions']:,} expansions in all (failures included), "
              f"{metrics['charts/expansions_per_s']:,.0f} expansions/s, "
              f"Theorem 3 violations {metrics.get('eval/bound_violations', 'n/a')}, "
              f"after {st.sweep} sweeps, {st.trained_s:.0f} s of training")
        within = [b for b in WITHIN if b < args.eval_budget]
        if within:
            print(f"solved within {' / '.join(f'{b:,}' for b in within)} expansions: "
                  + " / ".join(str(metrics[f"eval/solved_within_{b}"]) for b in within))
        if args.compare_uniform:
            print(f"uniform policy: solved {metrics['uniform/solved']}/{metrics['uniform/levels']}"
                  + (f", expansions mean {metrics['uniform/mean_expansions']:.0f} (solved levels)"
                     if metrics["uniform/solved"] else ""))
        solved = next((k for k, r in enumerate(results) if r["solved"]), None)
        if solved is not None:
            moves = "".join(MOVE_NAMES[a] for a in results[solved]["actions"])
            print(f"{test_levels[solved].name} solved by {moves}:\n{test_levels[solved].render()}")
        picture = {} if solved is None or not logger.wandb else {
            "eval/solved_level": logger.wandb.Html(f"<pre>{test_levels[solved].render()}\n{moves}</pre>")}
        logger.log({**metrics, **picture}, step=st.sweep + 1)
        logger.close()
        if args.eval_checkpoint is None:
            print("to search with it again: " + shlex.join(["python", sys.argv[0], "--eval-checkpoint", ckpt_path])
                  if args.save_model else f"(the network was not saved: drop --no-save-model to keep it in {run_dir}/)")
    if distributed:
        dist.barrier()  # all ranks finished (rank 0 evaluates last) before the group goes
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # progress lines appear even when redirected
    try:
        main(tyro.cli(Args))
    except KeyboardInterrupt:  # Ctrl-C before the training loop listens for it
        print("stopped by Ctrl-C before training; nothing was saved.", file=sys.stderr)
        sys.exit(130)
