"""The regression gate's expectations files: a malformed one fails loudly with its file and line (the CLI
exits 2 before any work), valid ones load, and violations are still listed (the CLI exits 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.expectations import ExpectationsError, check_expectations, load_expectations
from analysis.objectives import objectives_of
from analysis.policy_specs import load_actor
from analysis.trajectories import collect_episodes
from tests.conftest import ROOT, kc_config, run_module, small_config

DISTRIBUTIONS = ["train", "shift_arrow"]
ARROW = {"objectives": ("end", "arrow"), "env_metrics": ("reached_end", "reached_arrow")}

MALFORMED = [
    # (id, text, line of the problem, a fragment of the message)
    ("empty", "", 1, "empty"),
    ("only_comments", "# nothing\n\n# expected\n", 1, "empty"),
    ("top_level_list", "- train\n- shift_arrow\n", 1, "got a list"),
    ("top_level_scalar", "robust\n", 1, "got a single value"),
    ("top_level_empty_mapping", "{}\n", 1, "got an empty mapping"),
    ("yaml_bad_indent", "shift_arrow:\n  verdict: robust\n capability: {min: 1}\n", 3, "not valid YAML"),
    ("yaml_tab", "shift_arrow:\n\tverdict: robust\n", 2, "not valid YAML"),
    ("yaml_two_documents", "train:\n  verdict: robust\n---\nshift_arrow:\n  verdict: robust\n", 3, "not valid YAML"),
    ("yaml_unknown_tag", "shift_arrow:\n  verdict: !robust robust\n", 2, "not valid YAML"),
    ("yaml_merge_key", "train: &t\n  verdict: robust\nshift_arrow:\n  <<: *t\n", 4, "merge keys"),
    (
        "unknown_distribution",
        "train:\n  verdict: robust\nnowhere:\n  verdict: robust\n",
        3,
        "'nowhere' is not evaluated",
    ),
    ("distribution_without_spec", "train:\n  verdict: robust\nshift_arrow:\n", 3, "shift_arrow has no expectations"),
    ("distribution_with_empty_spec", "train:\n  verdict: robust\nshift_arrow: {}\n", 3, "has no expectations"),
    ("distribution_with_scalar_spec", "shift_arrow: robust\n", 1, "expected a mapping of expectations"),
    (
        "duplicate_distribution",
        "shift_arrow:\n  verdict: robust\nshift_arrow:\n  success: {min: 0.5}\n",
        3,
        "duplicate",
    ),
    ("duplicate_key", "shift_arrow:\n  verdict: robust\n  verdict: capability_failure\n", 3, "duplicate key 'verdict'"),
    ("duplicate_bound", "shift_arrow:\n  capability:\n    min: 0.1\n    min: 0.2\n", 4, "duplicate key 'min'"),
    (
        "duplicate_env_metric",
        "train:\n  env_metrics:\n    reached_end: {min: 1}\n    reached_end: {max: 1}\n",
        4,
        "dup",
    ),
    ("unknown_key", "shift_arrow:\n  verdict: robust\n  speed: {min: 1}\n", 3, "shift_arrow.speed is not one of ["),
    ("unknown_verdict", "shift_arrow:\n  verdict: misgeneralised\n", 2, "'objective_misgeneralisation'"),
    ("bool_verdict", "train:\n  identifiable: false\n  verdict: yes\n", 3, "verdict must be one of"),
    ("unknown_behavioural_objective", "shift_arrow:\n  behavioural_objective: exit\n", 2, "'arrow', 'random', null]"),
    ("other_envs_objective", "shift_arrow:\n  behavioural_objective: open_chests\n", 2, "must be one of"),
    ("null_map_objective", "shift_arrow:\n  map_objective: null\n", 2, "map_objective must be one of"),
    ("identifiable_string", "train:\n  identifiable: 'false'\n", 2, "must be true or false"),
    ("identifiable_number", "train:\n  identifiable: 0\n", 2, "must be true or false"),
    ("bounds_scalar", "shift_arrow:\n  capability: 0.5\n", 2, "must be {min: x, max: y}"),
    ("bounds_empty", "shift_arrow:\n  verdict: robust\n  regret: {}\n", 3, "must be {min: x, max: y}"),
    ("bounds_unknown_key", "shift_arrow:\n  capability: {min: 0.5, mx: 1}\n", 2, "capability.mx is not one of"),
    ("bound_not_a_number", "shift_arrow:\n  capability:\n    min: high\n", 3, "capability.min must be a number"),
    ("bound_null", "shift_arrow:\n  capability: {min: null}\n", 2, "must be a number"),
    ("bound_bool", "shift_arrow:\n  success: {min: true}\n", 2, "must be a number"),
    ("bound_nan", "shift_arrow:\n  regret: {max: .nan}\n", 2, "regret.max must be a number"),
    ("bound_infinite", "shift_arrow:\n  base_return: {min: .inf}\n", 2, "must be a number"),
    ("min_above_max", "shift_arrow:\n  verdict: robust\n  base_return: {min: 0.8, max: 0.2}\n", 3, "min 0.8 > max 0.2"),
    ("capability_min_above_1", "shift_arrow:\n  capability: {min: 1.5}\n", 2, "can never hold"),
    ("robustness_max_below_0", "shift_arrow:\n  objective_robustness: {max: -0.1}\n", 2, "can never hold"),
    ("success_min_above_1", "train:\n  verdict: robust\n  success:\n    min: 2\n", 4, "can never hold"),
    ("regret_max_below_0", "shift_arrow:\n  regret: {max: -0.5}\n", 2, "can never hold"),
    ("unknown_env_metric", "shift_arrow:\n  env_metrics:\n    excess_keys: {max: 1}\n", 3, "not a metric of the env"),
    ("env_metrics_empty", "shift_arrow:\n  env_metrics: {}\n", 2, "must map the env's metric names"),
    ("env_metrics_list", "shift_arrow:\n  env_metrics: [reached_end]\n", 2, "must map the env's metric names"),
    ("env_metric_bounds_scalar", "shift_arrow:\n  env_metrics: {reached_end: 1}\n", 2, "must be {min: x, max: y}"),
    ("complex_key", "? [train, shift_arrow]\n: {verdict: robust}\n", 1, "a key must be a name"),
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("name", "text", "line", "fragment"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_file_fails_naming_its_file_and_line(tmp_path, name, text, line, fragment):
    path = _write(tmp_path, name, text)
    with pytest.raises(ExpectationsError) as caught:
        load_expectations(path, DISTRIBUTIONS, **ARROW)
    err = caught.value
    assert (err.path, err.line, str(err)) == (str(path), line, f"{path}:{line}: {err.what}")
    assert fragment in err.what


def test_an_unreadable_file_fails_naming_it(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(ExpectationsError, match=r"missing\.yaml: cannot be read"):
        load_expectations(path, DISTRIBUTIONS, **ARROW)


def test_a_file_that_is_not_utf8_fails_at_the_line_of_the_bad_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"train:\n  verdict: robust\nshift_arrow:\n  verdict: r\xe9bust\n")
    with pytest.raises(ExpectationsError, match=r"latin1\.yaml:4: not UTF-8"):
        load_expectations(path, DISTRIBUTIONS, **ARROW)


def _reported_env_metrics(env_cfg) -> list[str]:
    """The env metric names a report of ``env_cfg``'s env carries, as the CLI finds them."""
    traj = collect_episodes(load_actor("random", env_cfg), env_cfg, "train", 1)
    return list(objectives_of(env_cfg).env_metrics(traj))


@pytest.mark.parametrize(("env", "hidden"), [("arrow_maze", False), ("keys_chests", False), ("keys_chests", True)])
def test_the_declared_env_metric_names_are_those_a_report_carries(env, hidden):
    env_cfg = small_config() if env == "arrow_maze" else kc_config(hidden_chests=hidden)
    assert list(objectives_of(env_cfg).env_metric_names) == _reported_env_metrics(env_cfg)


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "expectations").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_shipped_expectations_load(path):
    env_cfg = small_config()
    names = objectives_of(env_cfg).names
    loaded = load_expectations(
        path, list(env_cfg.distributions), objectives=names, env_metrics=_reported_env_metrics(env_cfg)
    )
    assert set(loaded) >= {"train", "shift_arrow"} and all(loaded.values())


def test_every_value_a_report_can_carry_is_a_valid_expectation(tmp_path):
    text = (
        "train:\n  identifiable: false\n  behavioural_objective: null\n  map_objective: random\n  verdict: robust\n"
        "shift_arrow:\n  behavioural_objective: random\n  capability: {min: 0, max: 1}\n  regret: {min: 0}\n"
        "  base_return: {min: -2.5, max: 1}\n  success: {min: 1}\n  objective_robustness: {max: 0}\n"
        "  env_metrics: {reached_end: {min: 0.5, max: 0.5}, reached_arrow: {max: 0}}\n"
    )
    loaded = load_expectations(_write(tmp_path, "valid", text), DISTRIBUTIONS, **ARROW)
    assert loaded["train"] == {
        "identifiable": False,
        "behavioural_objective": None,
        "map_objective": "random",
        "verdict": "robust",
    }
    assert loaded["shift_arrow"]["env_metrics"] == {
        "reached_end": {"min": 0.5, "max": 0.5},
        "reached_arrow": {"max": 0},
    }


def test_keys_and_chests_metrics_follow_the_env_config(tmp_path):
    text = "shift_ratio:\n  behavioural_objective: collect_keys\n  env_metrics: {hidden_chests_visited: {min: 1}}\n"
    path = _write(tmp_path, "kc", text)
    objectives = objectives_of(kc_config()).names
    hidden = load_expectations(
        path, ["shift_ratio"], objectives=objectives, env_metrics=_reported_env_metrics(kc_config(hidden_chests=True))
    )
    assert hidden["shift_ratio"]["env_metrics"] == {"hidden_chests_visited": {"min": 1}}
    with pytest.raises(ExpectationsError, match=r"kc\.yaml:3: .*hidden_chests_visited is not a metric"):
        load_expectations(path, ["shift_ratio"], objectives=objectives, env_metrics=_reported_env_metrics(kc_config()))


def test_without_the_env_objective_and_metric_names_are_not_checked(tmp_path):
    text = "shift_arrow:\n  behavioural_objective: anything\n  env_metrics: {whatever: {max: 1}}\n"
    loaded = load_expectations(_write(tmp_path, "no_env", text), DISTRIBUTIONS)
    assert loaded["shift_arrow"]["behavioural_objective"] == "anything"


def test_a_valid_file_still_yields_the_violations_of_a_report(tmp_path):
    text = (
        "shift_arrow:\n  verdict: robust\n  behavioural_objective: end\n  capability: {min: 0.9}\n"
        "  env_metrics: {reached_end: {min: 0.99}}\n"
    )
    expectations = load_expectations(_write(tmp_path, "valid", text), DISTRIBUTIONS, **ARROW)
    report = {
        "verdict": "objective_misgeneralisation",
        "behavioural_objective": "arrow",
        "capability": 0.95,
        "env_metrics": {"reached_end": 0.0, "reached_arrow": 1.0},
    }
    assert check_expectations({"shift_arrow": report}, expectations) == [
        "shift_arrow.verdict: expected 'robust', got 'objective_misgeneralisation'",
        "shift_arrow.behavioural_objective: expected 'end', got 'arrow'",
        "shift_arrow.env_metrics.reached_end: 0.000 < min 0.99",
    ]


def test_the_cli_exits_2_on_an_invalid_file_before_any_work_and_1_on_a_violated_one(tmp_path):
    quick = ["policy=oracle:end", "env.device=cpu", "logger=none", "eval.episodes=4", "figures.enabled=false"]
    quick += ["eval.distributions=[train,shift_arrow]", "verdict.bootstrap_resamples=200"]
    bad = _write(tmp_path, "bad", "train:\n  verdict: robust\nshift_arrow:\n  env_metrics: {excess_keys: {max: 1}}\n")
    proc = run_module("experiments.evaluate", tmp_path / "bad_run", *quick, f"expect={bad}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"expect={bad}:4: shift_arrow.env_metrics.excess_keys is not a metric of the env" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad_run" / "report.json").exists()

    violated = _write(tmp_path, "violated", "shift_arrow:\n  verdict: capability_failure\n")
    proc = run_module("experiments.evaluate", tmp_path / "violated_run", *quick, f"expect={violated}")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "shift_arrow.verdict: expected 'capability_failure', got 'robust'" in proc.stderr


def test_shares_and_the_new_flags_are_checked_against_the_report(tmp_path):
    path = _write(
        tmp_path,
        "shares",
        "train:\n  map_objective: end=arrow\n  shares: {end: {min: 0.5}}\n"
        "shift_arrow:\n  mixed: true\n  shares: {arrow: {min: 0.5}, random: {max: 0.1}}\n",
    )
    want = load_expectations(path, DISTRIBUTIONS, **ARROW)
    report = {
        "train": {"map_objective": "end=arrow", "shares": {"end=arrow": 1.0, "random": 0.0}},
        "shift_arrow": {"mixed": False, "shares": {"end": 0.6, "arrow": 0.35, "random": 0.05}},
    }
    assert check_expectations(report, want) == [
        "train.shares.end: not identifiable here (one component: end=arrow)",
        "shift_arrow.mixed: expected True, got False",
        "shift_arrow.shares.arrow: 0.350 < min 0.5",
    ]
    bad = _write(tmp_path, "bad_share", "shift_arrow:\n  shares: {corner: {min: 0.5}}\n")
    with pytest.raises(ExpectationsError, match=r"shares\.corner is not a candidate objective"):
        load_expectations(bad, DISTRIBUTIONS, **ARROW)
    never = _write(tmp_path, "never", "shift_arrow:\n  shares: {end: {min: 1.5}}\n")
    with pytest.raises(ExpectationsError, match="can never hold"):
        load_expectations(never, DISTRIBUTIONS, **ARROW)
