"""``train dqn M``: the deep Q-network of Mnih et al. (2015) on Gymnasium's CartPole-v1.

* experience replay: a ring buffer of ``buffer`` transitions, uniform minibatches of ``batch``;
* a target network, a copy of the Q-network refreshed every ``target_update`` gradient steps;
* ε-greedy exploration, ε annealed linearly from ``epsilon`` to ``end`` over ``decay`` env steps;
* ``loss huber delta δ`` (or ``mse``) of ``Q(s, a)`` against ``r + γ·max_a' Q_target(s', a')·(1 − done)``
  (``done`` = the episode terminated; a time-limit truncation still bootstraps);
* learning starts after ``warmup`` env steps; then one gradient step per env step.

Both TinyJit steps have fixed shapes: the training step takes a ``(batch, obs)`` minibatch, the
action selection a ``(1, obs)`` observation. Every ``eval_every`` episodes the greedy policy plays
10 evaluation episodes; the best weights go to ``best.safetensors``. At the end the best weights
play ``eval_episodes`` (100) greedy episodes: CartPole-v1 counts as solved at a mean return ≥ 195
(v0's threshold; v1 caps episodes at 500). ``metrics.jsonl`` has one line per episode.

At every evaluation ``last.safetensors`` is written atomically with everything the next episode
depends on: both networks, the optimizer, the replay buffer, the env-step and update counters (ε
and the target refresh follow from them) and the exploration/minibatch RNG's state; the
environment is reseeded at every episode start from (seed, episode), tinygrad's stream (dropout)
too. ``--resume`` continues bit-identically from the last evaluation (``--episodes N`` extends a run).

Gymnasium is an optional dependency: ``pip install 'dlspec[rl]'``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..loop import Objective, Position, clock
from ..train import TrainError
from .common import Staging, copy_weights, item, plot_curves, realize_before_step
from .config import ENVS

#: the checkpoint metadata key of the loop's own state (position, counters, RNG, replay position)
STATE_KEY = "dqn_state"


def gymnasium():
    """The ``gymnasium`` module, or a clear error naming the install command."""
    try:
        import gymnasium as gym
    except ImportError:
        raise TrainError(
            "'train dqn' needs Gymnasium, which is not installed: pip install 'dlspec[rl]' (or: pip install gymnasium)"
        ) from None
    return gym


class Replay:
    """A ring buffer of transitions ``(s, a, r, s', done)``, sampled uniformly."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype=np.float32):
        self.capacity, self.n, self.i = int(capacity), 0, 0
        self.s = np.zeros((self.capacity, *obs_shape), dtype=obs_dtype)
        self.s2 = np.zeros_like(self.s)
        self.a = np.zeros(self.capacity, dtype=np.int32)
        self.r = np.zeros(self.capacity, dtype=np.float32)
        self.d = np.zeros(self.capacity, dtype=np.float32)

    def add(self, s, a: int, r: float, s2, done: bool) -> None:
        k = self.i
        self.s[k], self.a[k], self.r[k], self.s2[k], self.d[k] = s, a, r, s2, float(done)
        self.i = (k + 1) % self.capacity
        self.n = min(self.n + 1, self.capacity)

    def __len__(self) -> int:
        return self.n

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[np.ndarray, ...]:
        idx = rng.integers(0, self.n, batch)
        return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.d[idx]

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored transitions (the first ``n`` rows of each array), for a checkpoint."""
        return {k: getattr(self, k)[: self.n] for k in ("s", "a", "r", "s2", "d")}

    def position(self) -> dict[str, int]:
        return {"capacity": self.capacity, "n": self.n, "i": self.i}

    def restore(self, arrays: dict[str, np.ndarray], position: dict[str, int]) -> None:
        """Undo :meth:`arrays` and :meth:`position` (a ``ValueError`` if they do not fit this buffer)."""
        if position["capacity"] != self.capacity or not 0 <= position["i"] < self.capacity or not 0 <= position["n"] <= self.capacity:
            raise ValueError(f"a replay buffer of {position['capacity']} transitions does not fit one of {self.capacity}")
        n = position["n"]
        for k in ("s", "a", "r", "s2", "d"):
            mine = getattr(self, k)
            a = arrays[k]
            if a.shape != (n, *mine.shape[1:]):
                raise ValueError(f"replay '{k}' has shape {a.shape}, expected {(n, *mine.shape[1:])}")
            mine[:n] = a
        self.n, self.i = n, position["i"]


def epsilon_at(step: int, start: float, end: float, decay: int) -> float:
    """Linear annealing from ``start`` to ``end`` over ``decay`` steps, then ``end``."""
    return end + (start - end) * max(0.0, 1.0 - step / max(decay, 1))


class QLearner:
    """A Q-network, its target network, the optimizer, and the two fixed-shape TinyJit steps.

    Works for any spec with one input and one Q-value per action (e.g. the Atari ``DQN`` on
    4×84×84 frames, the ``CartPoleQ`` MLP)."""

    def __init__(
        self,
        prog,
        model: str,
        *,
        batch: int,
        gamma: float,
        loss: str = "huber",
        delta: float = 1.0,
        optimizer: str = "adam",
        lr: float = 1e-3,
        optimizer_options: dict | None = None,
        weight_decay: float = 0.0,
        clip: float | None = None,
        device: str | tuple[str, ...] | None = None,
        seed: int = 0,
        sync_bn: bool = False,
    ):
        from .. import optim

        self.q = prog.build(model, device=device, seed=seed, sync_bn=sync_bn)  # several devices: each minibatch split across them
        self.target = prog.build(model, device=device, seed=seed, sync_bn=sync_bn)
        copy_weights(self.target, self.q)
        self.device = self.q.device
        t_in = self.q.shapes.types[self.q.input_names[0]]
        self.obs_shape = tuple(int(d) for d in t_in.sample)
        self.actions = int(self.q.shapes.types[self.q.graph.outputs[0].node].sample[-1])
        self.batch, self.gamma, self.loss, self.delta = int(batch), float(gamma), loss, float(delta)
        self.opt = optim.make_optimizer(
            optimizer, self.q.parameters(), lr, weight_decay=weight_decay, clip=clip, **(optimizer_options or {})
        )
        self._train = self._act = None
        self.updates = 0

    def _train_fn(self):
        from tinygrad import Context, Tensor, TinyJit

        from .losses import dqn_loss

        q, target, opt = self.q, self.target, self.opt

        def step(s: Tensor, a: Tensor, r: Tensor, s2: Tensor, d: Tensor):
            with Context(TRAINING=1):
                opt.zero_grad()
                q_next = target(s2, train=False).detach()
                loss = dqn_loss(q(s, train=True), a, q_next, r, d, self.gamma, self.loss, self.delta)
                loss.backward()
                realize_before_step(opt, loss)
                opt.step()
                return loss

        return TinyJit(step)

    def _act_fn(self):
        from tinygrad import Tensor, TinyJit

        q = self.q

        def act(s: Tensor):
            return q(s, train=False).argmax(-1).realize()

        return TinyJit(act)

    def _stage(self):
        from tinygrad import dtypes

        b, o, dev = self.batch, self.obs_shape, self.device
        self._in = [
            Staging((b, *o), device=dev),
            Staging((b,), dtypes.int32, dev),
            Staging((b,), device=dev),
            Staging((b, *o), device=dev),
            Staging((b,), device=dev),
        ]
        self._obs = Staging((1, *o), device=dev)

    def train_step(self, s, a, r, s2, d) -> float:
        """One gradient step on a minibatch (arrays of ``batch`` rows); the loss."""
        if len(a) != self.batch:
            raise TrainError(f"a DQN minibatch has {self.batch} transitions, got {len(a)}")
        if self._train is None:
            self._stage()
            self._train = self._train_fn()
        loss = item(self._train(*[st.set(v) for st, v in zip(self._in, (s, a, r, s2, d))]))
        self.updates += 1
        return loss

    def act(self, obs) -> int:
        """The greedy action for one observation."""
        if self._act is None:
            self._stage() if self._train is None else None
            self._act = self._act_fn()
        return int(item(self._act(self._obs.set(obs))))

    def sync_target(self) -> None:
        copy_weights(self.target, self.q)


class DQNRun(Objective):
    """``train dqn M`` on the shared loop (:mod:`dlspec.loop`): a unit is an episode, a step an
    environment step (with a gradient step once learning has started)."""

    kind = "dqn"
    unit = "episode"

    # the objective -------------------------------------------------------------------------------
    def prepare(self, meta: dict[str, str]) -> None:
        self.gym = gymnasium()  # missing: a clear error before anything is built

    def data_identity(self) -> tuple[str, str | None]:
        return self.cfg.env, None

    def units(self) -> int:
        return self.cfg.episodes

    def check_resumable(self, path: Path, meta: dict[str, str]) -> None:
        if STATE_KEY not in meta:
            raise TrainError(
                f"{path}: the checkpoint holds no replay buffer (an earlier dlspec wrote it); it cannot be resumed: start a new run"
            )

    def setup(self) -> None:
        from tinygrad import Tensor

        from ..backends.tinygrad import describe_device

        c = self.cfg
        self.env_id = ENVS[c.env][0]
        self.env, self.eval_env = self.gym.make(self.env_id), self.gym.make(self.env_id)
        Tensor.manual_seed(c.seed)
        try:
            self.agent = a = QLearner(
                self.prog,
                c.model,
                batch=c.batch,
                gamma=c.gamma,
                loss=c.loss,
                delta=float(c.loss_options.get("delta", 1.0)),
                optimizer=c.optimizer,
                lr=c.lr,
                optimizer_options=c.optimizer_options,
                weight_decay=c.weight_decay,
                clip=c.clip,
                device=self.placement,
                seed=c.seed,
                sync_bn=c.sync_bn,
            )
        except (ValueError, TypeError) as e:
            from ..train import OPTIMIZER_FIELDS

            raise self.places.error(f"optimizer {c.optimizer}: {e}", *OPTIMIZER_FIELDS) from None
        self.device = a.device
        self.log(
            f"device {describe_device(a.device)}; {c.model}: {a.q.num_params()[0]:,} params; env {self.env_id}; {c.episodes} episodes, buffer {c.buffer}, batch {c.batch}, "
            f"γ {c.gamma}, target every {c.target_update} updates, ε {c.epsilon}→{c.epsilon_end} over {c.epsilon_decay} steps, warm-up {c.warmup} steps"
        )
        # exploration and minibatches: one generator for the whole run, its state in every checkpoint
        self.rng = np.random.default_rng([c.seed, 0xD0])
        self.replay = Replay(c.buffer, a.obs_shape)
        self.best_ep, self.eps, self.started = 0, c.epsilon, clock()

    def parts(self) -> dict[str, Any]:
        return {"model": self.agent.q, "target": self.agent.target, "optim": self.agent.opt}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"replay.{k}": v for k, v in self.replay.arrays().items()}

    def meta(self, pos: Position) -> dict[str, str]:
        # everything the next episode depends on: ε (a function of the env steps), the target refresh (of the
        # updates), the exploration/minibatch RNG, the replay buffer; the environment is reseeded per episode
        state = {
            "episode": pos.unit,
            "steps": pos.step,
            "best": pos.best,
            "best_episode": self.best_ep,
            "updates": self.agent.updates,
            "rng": self.rng.bit_generator.state,
            "replay": self.replay.position(),
        }
        return {"episode": str(pos.unit), "steps": str(pos.step), STATE_KEY: json.dumps(state)}

    def position(self, path: Path, meta: dict[str, str]) -> Position:
        try:
            state = json.loads(meta[STATE_KEY])
            return Position(int(state["episode"]), int(state["steps"]), state["best"])
        except (KeyError, TypeError, ValueError) as e:
            raise TrainError(f"{path}: the checkpoint's DQN state is not readable ({type(e).__name__}: {e})") from None

    def restore(self, path: Path, meta: dict[str, str]) -> None:
        from .common import read_arrays

        try:
            state = json.loads(meta[STATE_KEY])
            self.best_ep, self.agent.updates = state["best_episode"], state["updates"]
            self.rng.bit_generator.state = state["rng"]
            self.replay.restore(read_arrays(path, "replay"), state["replay"])
        except (KeyError, TypeError, ValueError) as e:
            raise TrainError(f"{path}: the checkpoint's DQN state is not readable ({type(e).__name__}: {e})") from None

    def resumed_line(self, pos: Position) -> str:
        return f"resumed after episode {pos.unit} ({pos.step:,} env steps, {self.agent.updates:,} updates)"

    def start_unit(self, unit: int, rng: np.random.Generator) -> None:
        self.obs, _ = self.env.reset(seed=self.cfg.seed * 1_000_003 + unit)  # the environment's RNG: a function of (seed, episode)
        self.total, self.done, self.episode = 0.0, False, unit

    def batches(self, unit: int, rng: np.random.Generator):
        while not self.done:
            yield None

    def samples(self, batch: Any) -> int:
        return 1

    def train_step(self, batch: Any, pos: Position) -> tuple[dict[str, float], float]:
        c, a, replay = self.cfg, self.agent, self.replay
        self.eps = eps = epsilon_at(pos.step, c.epsilon, c.epsilon_end, c.epsilon_decay)
        action = int(self.rng.integers(a.actions)) if self.rng.random() < eps else a.act(self.obs)
        obs2, r, term, trunc, _ = self.env.step(action)
        replay.add(self.obs, action, float(r), obs2, term)
        self.obs, self.total, self.done = obs2, self.total + float(r), term or trunc
        if pos.step + 1 >= c.warmup and len(replay) >= c.batch:
            loss = a.train_step(*replay.sample(self.rng, c.batch))
            if math.isfinite(loss) and a.updates % c.target_update == 0:
                a.sync_target()
            return {"loss": loss}, 1
        return {}, 1

    def nonfinite(self, name: str, value: float, pos: Position, unit: int, i: int) -> TrainError:
        return TrainError(
            f"the {name} became {value} at env step {pos.step + 1} (episode {unit + 1}); training stopped (the last checkpoint is kept)"
        )

    def end_unit(self, unit: int, means: dict[str, float], pos: Position, seconds: float, samples: int) -> dict[str, Any]:
        c = self.cfg
        record = {
            "episode": unit + 1,
            "return": self.total,
            "steps": pos.step,
            "epsilon": round(self.eps, 4),
            "loss": means.get("loss"),
            "seconds": round(clock() - self.started, 2),
        }
        if (unit + 1) % c.eval_every == 0 or unit + 1 == c.episodes:
            record["eval_return"] = float(np.mean(self.evaluate(self.eval_env, 10, 10_000 + unit)))
        self.last_record = record
        return record

    def score(self, record: dict[str, Any]) -> float | None:
        return record.get("eval_return")

    def checkpoint_due(self, record: dict[str, Any]) -> bool:
        return record.get("eval_return") is not None

    def best_checkpoint(self, pos: Position, record: dict[str, Any]):
        from .. import resume as exact

        self.best_ep = pos.unit
        meta = {"episode": str(pos.unit), "eval_return": str(record["eval_return"]), "model": self.cfg.model}
        return {"model": self.agent.q}, {**meta, exact.SPEC_KEY: self._spec_sha()}

    def _spec_sha(self) -> str:
        from ..train import file_digest

        return file_digest(self.dir / "spec.dl") if (self.dir / "spec.dl").exists() else ""

    def progress(self, i: int, means: dict[str, float], rate: float, compiling: bool) -> None:
        rec = getattr(self, "last_record", None)
        if rec is not None:
            recent = self._recent()
            self.bars.step(i, f"return {rec['return']:.0f} (mean of last 20: {recent:.1f})  ε {rec['epsilon']:.3f}  {rec['steps']:,} steps")

    def _recent(self) -> float:
        return float(np.mean([r["return"] for r in self.record.history[-20:]] or [0.0]))

    def unit_line(self, record: dict[str, Any]) -> str:
        return (
            f"episode {record['episode']}/{self.cfg.episodes}: return {record['return']:.0f}, mean of last 20 {self._recent():.1f}, "
            f"greedy eval {record['eval_return']:.1f}, ε {record['epsilon']:.3f}, {record['steps']:,} env steps"
        )

    def plot(self, history: list[dict]) -> None:
        plot_curves(self.dir / "returns", _return_series(history), xlabel="episode", title=f"{self.cfg.model} on {self.env_id}")

    def evaluate(self, env, episodes: int, seed: int) -> list[float]:
        """Returns of ``episodes`` greedy episodes (seeds ``seed``, ``seed + 1``, …)."""
        out = []
        for k in range(episodes):
            obs, _ = env.reset(seed=seed + k)
            total, done = 0.0, False
            while not done:
                obs, r, term, trunc, _ = env.step(self.agent.act(obs))
                total += float(r)
                done = term or trunc
            out.append(total)
        return out

    def summary(self, history: list[dict], pos: Position, wall: float, samples: int) -> dict[str, Any]:
        from ..train import atomic_write_text
        from .common import load_checkpoint

        c, a, best_ep = self.cfg, self.agent, self.best_ep
        # the final evaluation: the best weights, eval_episodes greedy episodes
        if (self.dir / "best.safetensors").exists():
            load_checkpoint(self.dir / "best.safetensors", {"model": a.q})
        t0 = clock()
        returns = self.evaluate(self.eval_env, c.eval_episodes, 1_000_000)
        final = float(np.mean(returns))
        self.log(
            f"evaluation of the best weights (episode {best_ep}): mean return {final:.1f} over {c.eval_episodes} episodes (min {min(returns):.0f}, max {max(returns):.0f})"
        )
        atomic_write_text(
            self.dir / "eval.json",
            json.dumps(
                {"returns": returns, "mean": final, "episodes": c.eval_episodes, "weights": f"best.safetensors (episode {best_ep})"},
                indent=2,
            ),
        )
        return {
            "run_dir": str(self.dir),
            "kind": "dqn",
            "model": c.model,
            "env": self.env_id,
            "device": a.device,
            "episodes": len(history),
            "env_steps": pos.step,
            "updates": a.updates,
            "best_episode": best_ep,
            "best_eval_return": pos.best,
            "eval_episodes": c.eval_episodes,
            "eval_mean_return": final,
            "eval_min_return": min(returns),
            "eval_max_return": max(returns),
            "solved": final >= 195.0,
            "train_wall_seconds": round(wall, 1),
            "eval_wall_seconds": round(clock() - t0, 1),
            "metrics": {
                "return_last_20": float(np.mean([r["return"] for r in history[-20:]])) if history else None,
                "eval_mean_return": final,
            },
            "first": {"return_first_20": float(np.mean([r["return"] for r in history[:20]])) if history else None},
        }

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()


def _return_series(history: list[dict]) -> dict[str, list[float]]:
    ret = [r["return"] for r in history]
    mean20 = [float(np.mean(ret[max(0, i - 19) : i + 1])) for i in range(len(ret))]
    ev, last = [], float("nan")
    for r in history:
        last = r.get("eval_return", last)
        ev.append(last)
    return {"return": ret, "mean of last 20": mean20, "greedy eval (10 episodes)": ev}
