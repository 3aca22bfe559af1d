"""Environment demo: level sheets of each distribution, oracle episodes, and a measured summary.

``python -m experiments.demo`` (Hydra; any ``env.*`` key can be overridden). For every named
distribution it draws a sheet of levels (PNG) and runs two exact-planning oracles on
``summary_levels`` levels: one heads for the maze end, one for the green arrow. On ``train`` they
behave identically; off it, only the end-seeker solves the maze: the ambiguity the suite measures.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from analysis.planning import distance_maps, shortest_path_action
from envs.arrow_maze import ArrowMazeCore
from envs.config import ArrowMazeConfig, load_arrow_maze_config
from envs.render import save_episode

log = logging.getLogger(__name__)


def level_sheet(core: ArrowMazeCore, count: int, tile_size: int) -> np.ndarray:
    """The first ``count`` levels of the core's bank side by side, with a gap between them."""
    core.reset(level_ids=torch.arange(count) % len(core.levels))
    frames = [core.render_rgb(i, tile_size=tile_size).cpu().numpy() for i in range(count)]
    gap = np.full((frames[0].shape[0], tile_size, 3), 255, dtype=np.uint8)
    row = [part for f in frames for part in (f, gap)][:-1]
    return np.concatenate(row, axis=1)


def run_oracle(core: ArrowMazeCore, goal: str, num: int, record: int | None = None) -> dict:
    """One episode of a shortest-path agent towards ``goal`` ("end" or "arrow") on each of ``num``
    levels; returns how often the base objective was achieved and the end / arrow reached."""
    level_ids = torch.arange(num, device=core.device) % len(core.levels)
    core = ArrowMazeCore(core.cfg, core.distribution, num_envs=num, seed=0, device=core.device)
    core.reset(level_ids=level_ids)
    targets = core.levels.end if goal == "end" else core.levels.arrow
    env_dist = distance_maps(core, targets, level_ids)
    done = torch.zeros(num, dtype=torch.bool, device=core.device)
    success = torch.zeros_like(done)
    end_reached = torch.zeros_like(done)
    arrow_reached = torch.zeros_like(done)
    length = torch.zeros(num, dtype=torch.long, device=core.device)
    frames = [] if record is not None else None
    while not bool(done.all()):
        if frames is not None and not bool(done[record]):
            frames.append(core.render_rgb(record).cpu().numpy())
        r = core.step(shortest_path_action(core, env_dist))
        ended = r.done & ~done
        success |= ended & r.terminated
        end_reached |= ended & (r.info["first_end_step"] >= 0)
        arrow_reached |= ended & (r.info["first_arrow_step"] >= 0)
        length = torch.where(ended, r.info["episode_length"], length)
        if frames is not None and bool(ended[record]):
            frames.append(core.render_rgb(record, final=True).cpu().numpy())
        done |= r.done
    return {
        "success": success.float().mean().item(),
        "end_reached": end_reached.float().mean().item(),
        "arrow_reached": arrow_reached.float().mean().item(),
        "mean_length": length.float().mean().item(),
        "frames": frames,
    }


def summarise(cfg: ArrowMazeConfig, name: str, num: int, out: Path, shown: int, tile: int, gif: bool) -> dict:
    core = ArrowMazeCore(cfg, name, num_envs=1, seed=0)
    lv = core.levels
    sheet = level_sheet(ArrowMazeCore(cfg, name, num_envs=shown, seed=0), shown, tile)
    from PIL import Image

    Image.fromarray(sheet).save(out / f"levels_{name}.png")
    record = 0 if gif else None
    end_agent = run_oracle(core, "end", num, record)
    arrow_agent = run_oracle(core, "arrow", num, record)
    if gif:
        for goal, result in (("end", end_agent), ("arrow", arrow_agent)):
            save_episode(result.pop("frames"), out / f"episode_{name}_{goal}_seeker.gif")
    else:
        end_agent.pop("frames"), arrow_agent.pop("frames")
    n = min(num, len(lv))
    return {
        "levels": len(lv),
        "maze_cells_a_side": [int(lv.size.min()), int(lv.size.max())],
        "arrow_on_end": lv.arrow_on_end[:n].float().mean().item(),
        "start_to_end_moves": lv.start_distance[:n].float().mean().item(),
        "end_seeker": end_agent,
        "arrow_seeker": arrow_agent,
    }


@hydra.main(config_path="../configs", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    env_cfg = load_arrow_maze_config(base=cfg.env)
    start = time.perf_counter()
    summary = {}
    for name in env_cfg.distributions:
        summary[name] = summarise(
            env_cfg, name, cfg.summary_levels, out, cfg.levels_shown, cfg.tile_size, cfg.gif and name == "shift_both"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    header = f"{'distribution':<12} {'cells':>6} {'arrow on end':>13} {'start→end':>10} "
    header += f"{'end-seeker success':>19} {'arrow-seeker success':>21}"
    lines = [header]
    for name, s in summary.items():
        lo, hi = s["maze_cells_a_side"]
        lines.append(
            f"{name:<12} {f'{lo}-{hi}':>6} {s['arrow_on_end']:>13.0%} {s['start_to_end_moves']:>10.1f} "
            f"{s['end_seeker']['success']:>19.1%} {s['arrow_seeker']['success']:>21.1%}"
        )
    print("\n".join(lines))
    print(f"\n{cfg.summary_levels} levels per distribution, base objective '{env_cfg.base_objective}'.")
    print(f"Pictures and summary.json in {out} ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
