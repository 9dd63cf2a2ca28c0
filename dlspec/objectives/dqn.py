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
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..train import TrainError, atomic_write_text, file_digest
from .common import Bars, Record, Staging, clock, copy_weights, finite, item, plot_curves, realize_before_step, save_checkpoint
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
        device: str | None = None,
        seed: int = 0,
    ):
        from .. import optim

        self.q = prog.build(model, device=device, seed=seed)
        self.target = prog.build(model, device=device, seed=seed)
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


class DQNRun:
    kind = "dqn"

    def __init__(self, prog, cfg, run_dir: Path, log: Callable[[str], None], ui: Any = None):
        self.prog, self.cfg, self.dir, self.log = prog, cfg, Path(run_dir), log
        self.bars = Bars(ui, log)

    def parts(self) -> dict[str, Any]:
        return {"model": self.agent.q, "target": self.agent.target, "optim": self.agent.opt}

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

    def run(self, resume: bool = False) -> dict[str, Any]:
        from tinygrad import Tensor

        from .. import resume as exact
        from ..train import OPTIMIZER_FIELDS, SpecPlaces

        gym = gymnasium()
        c = self.cfg
        env_id, _, _ = ENVS[c.env]
        last = self.dir / "last.safetensors"
        spec_sha = file_digest(self.dir / "spec.dl") if (self.dir / "spec.dl").exists() else ""
        meta: dict[str, str] = {}
        if resume:  # a damaged checkpoint, or one of another spec, fails before anything is built
            meta = exact.check(last)
            exact.check_identity(last, meta, self.dir / "spec.dl", spec_sha, c.env, None)
            if meta.get("kind", "dqn") != "dqn" or meta.get("model", c.model) != c.model:
                raise TrainError(
                    f"{last}: the checkpoint holds a 'train {meta.get('kind')} {meta.get('model')}' run, not 'train dqn {c.model}'"
                )
            if STATE_KEY not in meta:
                raise TrainError(
                    f"{last}: the checkpoint holds no replay buffer (an earlier dlspec wrote it); it cannot be resumed: start a new run"
                )
        env, eval_env = gym.make(env_id), gym.make(env_id)
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
                device=c.device,
                seed=c.seed,
            )
        except (ValueError, TypeError) as e:
            raise SpecPlaces(self.prog, c).error(f"optimizer {c.optimizer}: {e}", *OPTIMIZER_FIELDS) from None
        self.log(
            f"device {a.device}; {c.model}: {a.q.num_params()[0]:,} params; env {env_id}; {c.episodes} episodes, buffer {c.buffer}, batch {c.batch}, "
            f"γ {c.gamma}, target every {c.target_update} updates, ε {c.epsilon}→{c.epsilon_end} over {c.epsilon_decay} steps, warm-up {c.warmup} steps"
        )
        rng = np.random.default_rng([c.seed, 0xD0])
        replay = Replay(c.buffer, a.obs_shape)
        rec = Record(self.dir)
        start, steps, best, best_ep = 0, 0, None, 0
        if resume:
            from .common import load_checkpoint, read_arrays

            load_checkpoint(last, self.parts(), verify=False)
            try:
                state = json.loads(meta[STATE_KEY])
                start, steps, best, best_ep, a.updates = (
                    state["episode"],
                    state["steps"],
                    state["best"],
                    state["best_episode"],
                    state["updates"],
                )
                rng.bit_generator.state = state["rng"]
                replay.restore(read_arrays(last, "replay"), state["replay"])
            except (KeyError, TypeError, ValueError) as e:
                raise TrainError(f"{last}: the checkpoint's DQN state is not readable ({type(e).__name__}: {e})") from None
            self.log(f"resumed after episode {start} ({steps:,} env steps, {a.updates:,} updates)")
        rec.keep(start, key="episode")
        started = clock()
        self.bars.start(0, 1, c.episodes)
        for ep in range(start, c.episodes):
            exact.reseed(a.device, exact.epoch_seed(c.seed, ep))  # dropout in the Q-network: a function of (seed, episode)
            obs, _ = env.reset(seed=c.seed * 1_000_003 + ep)  # the environment's RNG: a function of (seed, episode)
            total, losses, done = 0.0, [], False
            while not done:
                eps = epsilon_at(steps, c.epsilon, c.epsilon_end, c.epsilon_decay)
                action = int(rng.integers(a.actions)) if rng.random() < eps else a.act(obs)
                obs2, r, term, trunc, _ = env.step(action)
                replay.add(obs, action, float(r), obs2, term)
                obs, total, done = obs2, total + float(r), term or trunc
                steps += 1
                if steps >= c.warmup and len(replay) >= c.batch:
                    losses.append(finite("loss", a.train_step(*replay.sample(rng, c.batch)), f"env step {steps} (episode {ep + 1})"))
                    if a.updates % c.target_update == 0:
                        a.sync_target()
                if c.max_steps is not None and steps >= c.max_steps:
                    break
            record = {
                "episode": ep + 1,
                "return": total,
                "steps": steps,
                "epsilon": round(eps, 4),
                "loss": float(np.mean(losses)) if losses else None,
                "seconds": round(clock() - started, 2),
            }
            if (ep + 1) % c.eval_every == 0 or ep + 1 == c.episodes:
                ev = float(np.mean(self.evaluate(eval_env, 10, 10_000 + ep)))
                record["eval_return"] = ev
                if best is None or ev > best:
                    best, best_ep = ev, ep + 1
                    save_checkpoint(
                        self.dir / "best.safetensors",
                        {"model": a.q},
                        {"episode": str(ep + 1), "eval_return": str(ev), "model": c.model, exact.SPEC_KEY: spec_sha},
                    )
            rec.add(record)
            recent = [r["return"] for r in rec.history[-20:]]
            self.bars.step(ep + 1, f"return {total:.0f} (mean of last 20: {np.mean(recent):.1f})  ε {eps:.3f}  {steps:,} steps")
            if record.get("eval_return") is not None:
                # everything the next episode depends on, in one atomic file: weights, optimizer, replay, ε (a
                # function of the env steps), the exploration/minibatch RNG; the environment is reseeded per episode
                state = {
                    "episode": ep + 1,
                    "steps": steps,
                    "best": best,
                    "best_episode": best_ep,
                    "updates": a.updates,
                    "rng": rng.bit_generator.state,
                    "replay": replay.position(),
                }
                save_checkpoint(
                    last,
                    self.parts(),
                    {
                        "episode": str(ep + 1),
                        "steps": str(steps),
                        "kind": "dqn",
                        "model": c.model,
                        exact.SPEC_KEY: spec_sha,
                        STATE_KEY: json.dumps(state),
                    },
                    arrays={f"replay.{k}": v for k, v in replay.arrays().items()},
                )
                plot_curves(self.dir / "returns", _return_series(rec.history), xlabel="episode", title=f"{c.model} on {env_id}")
                self.log(
                    f"episode {ep + 1}/{c.episodes}: return {total:.0f}, mean of last 20 {np.mean(recent):.1f}, greedy eval {record['eval_return']:.1f}, ε {eps:.3f}, {steps:,} env steps"
                )
            if c.max_steps is not None and steps >= c.max_steps:
                break
        train_wall = clock() - started
        self.bars.end(1)
        # the final evaluation: the best weights, eval_episodes greedy episodes
        if (self.dir / "best.safetensors").exists():
            from .common import load_checkpoint

            load_checkpoint(self.dir / "best.safetensors", {"model": a.q})
        t0 = clock()
        returns = self.evaluate(eval_env, c.eval_episodes, 1_000_000)
        final = float(np.mean(returns))
        self.log(
            f"evaluation of the best weights (episode {best_ep}): mean return {final:.1f} over {c.eval_episodes} episodes (min {min(returns):.0f}, max {max(returns):.0f})"
        )
        summary = {
            "run_dir": str(self.dir),
            "kind": "dqn",
            "model": c.model,
            "env": env_id,
            "device": a.device,
            "episodes": len(rec.history),
            "env_steps": steps,
            "updates": a.updates,
            "best_episode": best_ep,
            "best_eval_return": best,
            "eval_episodes": c.eval_episodes,
            "eval_mean_return": final,
            "eval_min_return": min(returns),
            "eval_max_return": max(returns),
            "solved": final >= 195.0,
            "train_wall_seconds": round(train_wall, 1),
            "eval_wall_seconds": round(clock() - t0, 1),
            "metrics": {
                "return_last_20": float(np.mean([r["return"] for r in rec.history[-20:]])) if rec.history else None,
                "eval_mean_return": final,
            },
            "first": {"return_first_20": float(np.mean([r["return"] for r in rec.history[:20]])) if rec.history else None},
        }
        atomic_write_text(
            self.dir / "eval.json",
            json.dumps(
                {"returns": returns, "mean": final, "episodes": c.eval_episodes, "weights": f"best.safetensors (episode {best_ep})"},
                indent=2,
            ),
        )
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2))
        env.close()
        eval_env.close()
        return summary


def _return_series(history: list[dict]) -> dict[str, list[float]]:
    ret = [r["return"] for r in history]
    mean20 = [float(np.mean(ret[max(0, i - 19) : i + 1])) for i in range(len(ret))]
    ev, last = [], float("nan")
    for r in history:
        last = r.get("eval_return", last)
        ev.append(last)
    return {"return": ret, "mean of last 20": mean20, "greedy eval (10 episodes)": ev}
