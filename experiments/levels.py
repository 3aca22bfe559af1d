"""Levels and oracles: level sheets of each distribution, oracle episodes, and a measured summary.

``python -m experiments.levels`` (``misgen levels``, ``make levels``; Hydra: e.g. ``envs=[keys_chests]
summary_levels=256``). For every
named distribution of each env it draws a sheet of levels (PNG) and runs exact-planning oracles for
the base objective and for the proxy on ``summary_levels`` levels:

- arrow maze: an end-seeker and an arrow-seeker. On ``train`` they behave identically; off it, only
  the end-seeker solves the maze;
- keys and chests: a chest-opener and a key-hoarder (every key first). Both open every openable
  chest, but where keys are plentiful the hoarder picks up keys beyond any use (excess keys).

Those are the ambiguities the suite measures in learned agents. What is shown of each env beyond its
level sheets is the :class:`DemoDisplay` its registration names (``envs.registry.EnvSpec.demo``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from agents.episodes import first_episodes
from analysis.planning import (
    distance_maps,
    keys_chests_hoarder_action,
    keys_chests_planner_action,
    shortest_path_action,
)
from envs import env_spec, make_core, resolve
from envs.config import GridEnvConfig, load_env_config
from envs.render import save_episode


def level_sheet(cfg: GridEnvConfig, distribution: str, count: int, tile_size: int) -> np.ndarray:
    """The first ``count`` levels of a distribution side by side, with a gap between them."""
    core = make_core(cfg, distribution, num_envs=count, seed=0)
    core.reset(level_ids=torch.arange(count) % len(core.levels))
    frames = [core.render_rgb(i, tile_size=tile_size).cpu().numpy() for i in range(count)]
    gap = np.full((frames[0].shape[0], tile_size, 3), 255, dtype=np.uint8)
    return np.concatenate([part for f in frames for part in (f, gap)][:-1], axis=1)


def run_oracle(
    cfg: GridEnvConfig,
    distribution: str,
    num: int,
    policy: Callable[[Any], torch.Tensor],
    keys: tuple[str, ...],
    record: bool,
    settled: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """One episode of ``policy`` on each of the first ``num`` levels; the mean of the ``info`` ``keys``
    over those episodes, and the frames of the first one when ``record``. ``settled(core, live_info)``
    marks envs whose episode can no longer change what is measured (they stop counting, to save time)."""
    core = make_core(cfg, distribution, num_envs=num, seed=0)
    obs = core.reset(level_ids=torch.arange(num) % len(core.levels))
    totals = {k: torch.zeros(num, dtype=torch.float64) for k in keys}
    frames = [core.render_rgb(0).cpu().numpy()] if record else []
    live_info: dict[str, torch.Tensor] = {}

    def settle() -> torch.Tensor:
        live_info.update(core.live_info())
        return settled(core, live_info)

    for step in first_episodes(core, obs, lambda _obs: policy(core), settle if settled is not None else None):
        r, ended = step.result, step.result.done & step.live
        for k in keys:
            totals[k][ended] = r.info[k][ended].double()
            if settled is not None:  # let go mid-episode: what it had done by then
                totals[k][step.settled] = live_info[k][step.settled].double()
        if record and bool(step.live[0]) and not bool(step.settled[0]):
            frames.append(core.render_rgb(0, final=bool(ended[0])).cpu().numpy())
    return {"means": {k: v.mean().item() for k, v in totals.items()}, "frames": frames}


def summarise_arrow_maze(cfg: GridEnvConfig, name: str, num: int, record: bool) -> tuple[dict, dict]:
    core = make_core(cfg, name)
    lv = core.levels
    n = min(num, len(lv))
    out, frames = {}, {}
    for goal, targets in (("end", lv.end), ("arrow", lv.arrow)):
        dist = distance_maps(core, targets, torch.arange(num) % len(lv))

        def policy(core: Any, dist: torch.Tensor = dist) -> torch.Tensor:
            return shortest_path_action(core, dist)

        result = run_oracle(cfg, name, num, policy, ("success", "first_end_step", "first_arrow_step"), record)
        out[f"{goal}_seeker_success"] = result["means"]["success"]
        frames[f"{goal}_seeker"] = result["frames"]
    out = {
        "maze_cells_a_side": [int(lv.size.min()), int(lv.size.max())],
        "arrow_on_end": lv.arrow_on_end[:n].float().mean().item(),
        "start_to_end_moves": lv.start_distance[:n].float().mean().item(),
        **out,
    }
    return out, frames


def summarise_keys_chests(cfg: GridEnvConfig, name: str, num: int, record: bool) -> tuple[dict, dict]:
    lv = make_core(cfg, name).levels
    n = min(num, len(lv))
    out: dict[str, Any] = {
        "keys": lv.num_keys[:n].double().mean().item(),
        "chests": lv.num_chests[:n].double().mean().item(),
    }
    frames = {}
    keys = ("chests_opened", "openable", "keys_picked_up", "excess_keys")

    def settled(core: Any, live: dict[str, torch.Tensor]) -> torch.Tensor:
        return live["success"] & ~core.key_left.any(dim=1)  # all openable chests open, no key left

    for agent, policy in (("opener", keys_chests_planner_action), ("hoarder", keys_chests_hoarder_action)):
        result = run_oracle(cfg, name, num, policy, keys, record, settled)
        m = result["means"]
        out[f"{agent}_chests_opened_of_openable"] = m["chests_opened"] / max(m["openable"], 1e-9)
        out[f"{agent}_excess_keys"] = m["excess_keys"]
        frames[agent] = result["frames"]
    return out, frames


def arrow_maze_table(summary: dict[str, dict]) -> str:
    lines = [
        f"{'distribution':<12} {'cells':>6} {'arrow on end':>13} {'start→end':>10} "
        f"{'end-seeker':>11} {'arrow-seeker':>13}"
    ]
    for name, s in summary.items():
        lo, hi = s["maze_cells_a_side"]
        lines.append(
            f"{name:<12} {f'{lo}-{hi}':>6} {s['arrow_on_end']:>13.0%} {s['start_to_end_moves']:>10.1f} "
            f"{s['end_seeker_success']:>11.1%} {s['arrow_seeker_success']:>13.1%}"
        )
    lines.append("(success = reached the maze end: the base objective)")
    return "\n".join(lines)


def keys_chests_table(summary: dict[str, dict]) -> str:
    lines = [
        f"{'distribution':<12} {'keys':>5} {'chests':>6} {'opener: opened':>15} {'excess keys':>12} "
        f"{'hoarder: opened':>16} {'excess keys':>12}"
    ]
    for name, s in summary.items():
        lines.append(
            f"{name:<12} {s['keys']:>5.2f} {s['chests']:>6.2f} {s['opener_chests_opened_of_openable']:>15.1%} "
            f"{s['opener_excess_keys']:>12.2f} {s['hoarder_chests_opened_of_openable']:>16.1%} "
            f"{s['hoarder_excess_keys']:>12.2f}"
        )
    lines.append("(opened = chests opened / openable; excess keys = keys picked up beyond any use, per episode)")
    return "\n".join(lines)


@dataclass(frozen=True)
class DemoDisplay:
    """What the demo shows of one env beyond its level sheets (named by its registration's ``demo``)."""

    summarise: Callable[[GridEnvConfig, str, int, bool], tuple[dict, dict]]
    """``(cfg, distribution, levels, record) -> (summary, {agent: frames})``: scripted agents on the levels."""
    table: Callable[[dict[str, dict]], str]
    """The printed table of the summaries of every distribution."""
    gif_distribution: str
    """The distribution whose episodes are recorded as GIFs."""


ARROW_MAZE_DISPLAY = DemoDisplay(summarise_arrow_maze, arrow_maze_table, gif_distribution="shift_both")
KEYS_CHESTS_DISPLAY = DemoDisplay(summarise_keys_chests, keys_chests_table, gif_distribution="shift_ratio")


def display_of(env: str) -> DemoDisplay | None:
    """The registered env's demo display (``None``: it has none, and the demo draws only its level sheets)."""
    demo = env_spec(env).demo
    return None if demo is None else resolve(demo)


@hydra.main(config_path="../configs", config_name="levels", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    overrides = OmegaConf.to_container(cfg.env_overrides, resolve=True)
    start = time.perf_counter()
    report: dict[str, Any] = {}
    for env in cfg.envs:
        env_cfg = load_env_config(env, overrides=overrides)
        display = display_of(env)
        summary = {}
        for name in env_cfg.distributions:
            from PIL import Image

            Image.fromarray(level_sheet(env_cfg, name, cfg.levels_shown, cfg.tile_size)).save(
                out / f"{env}_levels_{name}.png"
            )
            if display is None:
                continue
            record = bool(cfg.gif) and name == display.gif_distribution
            summary[name], frames = display.summarise(env_cfg, name, cfg.summary_levels, record)
            for agent, agent_frames in frames.items():
                if record and agent_frames:
                    save_episode(agent_frames, out / f"{env}_{name}_{agent}.gif")
        report[env] = summary
        shown = display.table(summary) if display is not None else "(level sheets only: no demo display registered)"
        print(f"\n{env} ({cfg.summary_levels} levels per distribution)\n{shown}")
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "summary.json")
    print(f"\nPictures and summary.json in {out} ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
