"""Typed configuration: recipes, base chains, overrides, and errors that say what and where."""

import re
from pathlib import Path

import pytest
import yaml

from toolrl.cli import main as cli_main
from toolrl.config import MOVED, Config, ConfigError, check_rl, from_dict, load_config, load_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def flat(config: Config) -> dict[str, object]:
    return {
        f"{section}.{key}": value
        for section, values in config.to_dict().items()
        for key, value in values.items()
    }


def test_defaults_are_the_papers_recipe():
    c = Config()
    assert (c.algorithm.clip_ratio_low, c.algorithm.clip_ratio_high) == (0.2, 0.28)
    assert c.algorithm.clip_ratio_c == 10.0 and c.algorithm.loss_agg_mode == "token-mean"
    assert c.rollout.n == 16 and c.rollout.max_turns == 16
    assert c.rollout.max_response_length == 20480 and c.reward.overlong_buffer == 4096
    assert c.tools.output_max_chars == 256
    assert c.trainer.lr == 1e-6 and c.algorithm.kl_coef == 0.0
    assert (c.eval.k, c.eval.temperature, c.eval.top_p) == (32, 1.0, 0.6)


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_loads_and_round_trips(recipe):
    config = load_config(recipe)
    again = from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config


def test_override_changes_exactly_one_field():
    base = flat(load_config(RECIPES / "demystify_qwen3_4b.yaml"))
    changed = flat(
        load_config(RECIPES / "demystify_qwen3_4b.yaml", ["algorithm.clip_ratio_high=0.315"])
    )
    diff = {k for k in base if base[k] != changed[k]}
    assert diff == {"algorithm.clip_ratio_high"}
    assert changed["algorithm.clip_ratio_high"] == 0.315


def test_overrides_parse_lists_bools_and_keep_strings():
    c = load_config(
        None,
        [
            "data.train_files=[a.parquet, b.jsonl]",
            "reward.tool_shaping=false",
            "trainer.run_name=1e-3",
            "eval.benchmarks={aime24: x.parquet}",
        ],
    )
    assert c.data.train_files == ["a.parquet", "b.jsonl"]
    assert c.reward.tool_shaping is False
    assert c.trainer.run_name == "1e-3"
    assert c.eval.benchmarks == {"aime24": "x.parquet"}


def test_variant_recipes_differ_from_their_base_only_where_they_say():
    tcr = flat(load_config("demystify_qwen3_4b"))
    grpo_t = flat(load_config("grpo_t"))
    diff = {k for k in tcr if tcr[k] != grpo_t[k]}
    assert diff == {"algorithm.clip_ratio_high", "reward.overlong_shaping", "trainer.run_name"}
    scr = load_config("grpo_scr")
    assert scr.algorithm.policy_loss == "gspo"
    assert (scr.algorithm.clip_ratio_low, scr.algorithm.clip_ratio_high) == (3e-4, 4e-4)


def test_misspelt_override_suggests_the_closest_key():
    with pytest.raises(ConfigError, match=r"did you mean `algorithm\.clip_ratio_high`"):
        load_config(None, ["algorithm.clip_ratio_hihg=0.3"])
    with pytest.raises(ConfigError, match=r"did you mean `algorithm`"):
        load_config(None, ["algoritm.clip_ratio_high=0.3"])


def test_misspelt_key_in_a_recipe_names_the_file_and_suggests(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("rollout:\n  temprature: 0.7\n")
    with pytest.raises(ConfigError) as err:
        load_config(recipe)
    assert str(recipe) in str(err.value)
    assert "`rollout.temprature`" in str(err.value)
    assert "did you mean `rollout.temperature`" in str(err.value)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("rollout:\n  n: sixteen\n", "rollout.n"),
        ("rollout:\n  n: 2.5\n", "rollout.n"),
        ("reward:\n  tool_shaping: 1\n", "reward.tool_shaping"),
        ("algorithm:\n  loss_agg_mode: token_mean\n", "algorithm.loss_agg_mode"),
        ("data:\n  train_files: a.parquet\n", "data.train_files"),
        ("trainer: 3\n", "trainer"),
    ],
)
def test_wrong_type_fails_with_the_key_path(tmp_path, text, path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=rf"`{path}`"):
        load_config(recipe)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer:\n  lr: 1e-6\n")
    assert load_config(recipe).trainer.lr == 1e-6
    assert load_config(None, ["trainer.lr=3e-4"]).trainer.lr == 3e-4
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["trainer.lr=fast"])


def test_int_is_accepted_where_a_float_is_expected():
    assert load_config(None, ["algorithm.clip_ratio_c=3"]).algorithm.clip_ratio_c == 3.0


def test_cross_field_checks_name_the_keys():
    with pytest.raises(ConfigError, match="overlong_buffer"):
        load_config(None, ["reward.overlong_buffer=30000"])
    with pytest.raises(ConfigError, match="train_batch_size"):
        check_rl(load_config(None, ["data.train_batch_size=10"]))
    with pytest.raises(ConfigError, match="clip_ratio_low"):
        load_config(None, ["algorithm.clip_ratio_low=1.5"])


def test_async_runs_under_ray_but_never_with_the_engines_log_probs_as_pi_old():
    config = load_config(None, ["trainer.mode=async", "cluster.backend=ray"])
    assert (config.trainer.mode, config.cluster.backend) == ("async", "ray")
    with pytest.raises(ConfigError, match="π_old must be recomputed"):
        load_config(
            None, ["trainer.mode=async", "cluster.backend=ray", "algorithm.old_log_probs=rollout"]
        )


def test_base_chains_merge_and_loops_fail(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nrollout:\n  n: 4\n")
    (tmp_path / "b.yaml").write_text("rollout:\n  n: 8\n  max_turns: 3\n")
    data = load_recipe(tmp_path / "a.yaml")
    assert data == {"rollout": {"n": 4, "max_turns": 3}}
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_recipe(tmp_path / "a.yaml")


def test_malformed_override_and_missing_recipe():
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["clip_ratio_high=0.3"])
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config("no_such_recipe")


def test_config_show_cli(capsys):
    assert (
        cli_main(["config", "show", "demystify_qwen3_4b", "algorithm.clip_ratio_high=0.315"]) == 0
    )
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["algorithm"]["clip_ratio_high"] == 0.315
    assert cli_main(["config", "show", "demystify_qwen3_4b", "algorithm.clip_ratio_hihg=0.3"]) == 2
    assert "did you mean `algorithm.clip_ratio_high`" in capsys.readouterr().err


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_key_names_its_new_place_in_an_override_and_a_recipe(old, tmp_path):
    new = MOVED[old]
    section, name = old.split(".")
    value = {"trainer.backend": "ray"}.get(old, 1)
    with pytest.raises(ConfigError, match=rf"`{old}` has moved: it is `{new}` now"):
        load_config(None, [f"{old}={value}"])
    recipe = tmp_path / "old.yaml"
    recipe.write_text(f"{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError, match=rf"old.yaml: `{old}` has moved: it is `{new}` now"):
        load_config(str(recipe), [])
    new_section, new_name = new.split(".")
    assert hasattr(getattr(Config(), new_section), new_name)


def test_a_nested_group_takes_overrides_and_checks_them():
    config = load_config(
        None,
        [
            "algorithm.rollout_correction.rollout_is=token",
            "algorithm.rollout_correction.rollout_rs=geometric",
            "algorithm.rollout_correction.rollout_rs_threshold=1.001",
        ],
    )
    rc = config.algorithm.rollout_correction
    assert (rc.rollout_is, rc.rollout_rs, rc.rollout_rs_threshold) == ("token", "geometric", 1.001)
    assert load_config(None, []).algorithm.rollout_correction.rollout_is is None  # off by default
    cases = {
        "algorithm.rollout_correction.rollout_iss=token": "did you mean `algorithm.rollout_correction.rollout_is`",
        "algorithm.rollout_correction=token": "is a group; set its keys",
        "algorithm.clip_ratio_low.x=1": "has no keys inside",
        "algorithm.rollout_correction.rollout_is=tok": "one of 'token', 'sequence' or null",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [override])
    with pytest.raises(ConfigError, match="bypass_mode` uses π_rollout as π_old"):
        load_config(
            None,
            [
                "algorithm.rollout_correction.bypass_mode=true",
                "algorithm.rollout_correction.rollout_is=token",
            ],
        )
    with pytest.raises(ConfigError, match="old_log_probs=rollout` makes them the same"):
        load_config(
            None,
            ["algorithm.old_log_probs=rollout", "algorithm.rollout_correction.rollout_rs=token"],
        )


def test_self_imitation_is_off_by_default_and_its_settings_are_checked(capsys):
    si = load_config(None, []).algorithm.self_imitation
    assert not si.enabled
    assert (si.buffer_size, si.max_age, si.baseline_percentile) == (2048, 5, 50.0)  # release
    assert (si.loss_coef, si.warmup_steps, si.tool_reward, si.tool_reward_steps) == (
        1.0,
        300,
        "cosine",
        200,
    )
    on = load_config(
        None,
        [
            "algorithm.self_imitation.enabled=true",
            "algorithm.self_imitation.buffer_size=4",
            "algorithm.self_imitation.capacity=7",
            "algorithm.self_imitation.tool_reward=none",
        ],
    ).algorithm.self_imitation
    assert (on.enabled, on.buffer_size, on.capacity, on.tool_reward) == (True, 4, 7, "none")
    group = "algorithm.self_imitation"
    cases = {
        f"{group}.capacity=6": f"`{group}.capacity` (6) must exceed 1.5 × buffer_size (6)",
        f"{group}.buffer_size=0": f"`{group}.buffer_size` and `{group}.baseline_size` must be",
        f"{group}.baseline_percentile=101": f"`{group}.baseline_percentile` must be in [0, 100]",
        f"{group}.loss_coef=-1": f"`{group}.loss_coef` must be >= 0, got -1",
        f"{group}.max_age=-1": f"`{group}.max_age` and `{group}.warmup_steps` must be >= 0",
        f"{group}.tool_reward_steps=0": f"`{group}.tool_reward_steps` must be >= 1",
        f"{group}.tool_reward=linear": "one of 'none', 'constant', 'cosine'",
        f"{group}.buffer_sise=4": f"did you mean `{group}.buffer_size`",
    }
    overrides = {f"{group}.capacity=6": [f"{group}.buffer_size=4"]}
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [*overrides.get(override, []), override])
    assert cli_main(["config", "show", "tiny", f"{group}.capacity=1"]) == 2
    err = capsys.readouterr().err
    assert "must exceed 1.5 × buffer_size" in err and "Traceback" not in err


def test_code_execution_is_isolated_for_rewards_and_official_for_evaluation(capsys):
    c = Config()
    assert (c.reward.code_execution, c.eval.code_execution) == ("isolated", "official")
    both = load_config(None, ["reward.code_execution=official", "eval.code_execution=isolated"])
    assert (both.reward.code_execution, both.eval.code_execution) == ("official", "isolated")
    expected = r"`eval.code_execution` must be one of 'official', 'isolated', got 'oficial'"
    with pytest.raises(ConfigError, match=expected):
        load_config(None, ["eval.code_execution=oficial"])
    assert cli_main(["config", "show", "tiny", "reward.code_execution=fast"]) == 2
    err = capsys.readouterr().err
    assert "`reward.code_execution` must be one of 'isolated', 'official'" in err
    assert "Traceback" not in err
