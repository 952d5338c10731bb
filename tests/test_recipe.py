"""Recipes compile to ordered, checked events; bad recipes name the offending config key."""

import re

import pytest

from twin import TwinInputError
from twin.process import (
    OPERATION_CODE,
    ExchangeStep,
    FeedStep,
    Recipe,
    check_events,
    schedule_to_events,
)


def _raise_message(recipe: Recipe, **kwargs) -> TwinInputError:
    with pytest.raises(TwinInputError) as info:
        recipe.events(**kwargs)
    return info.value


# ---------------------------------------------------------------- valid recipes


def test_default_recipe_events_are_ordered_seed_first_harvest_last():
    events = Recipe().events()
    times = [e.time_h for e in events]
    assert times == sorted(times)
    operations = [e.operation for e in events]
    assert operations[0] == "seed"
    assert operations.count("seed") == 1
    assert operations[-1] == "harvest"
    assert operations.count("harvest") == 1
    assert events[0].time_h == 0.0
    assert check_events(events, require_harvest=True) == []


def test_default_recipe_event_counts_and_same_time_order():
    recipe = Recipe()
    operations = [e.operation for e in recipe.events()]
    assert operations.count("exchange") == len(recipe.exchanges)
    assert operations.count("feed") == len(recipe.feeds)
    assert operations.count("sample") == len(recipe.sample_times_h)
    assert operations.count("activate") == 1
    assert operations.count("transduce") == 1
    # at 24 h the QC sample is drawn before the vector is added; at the harvest time the last
    # sample precedes the harvest
    at_24 = [e.operation for e in recipe.events() if e.time_h == 24.0]
    assert at_24 == ["sample", "transduce"]
    at_end = [e.operation for e in recipe.events() if e.time_h == recipe.harvest_time_h]
    assert at_end == ["sample", "harvest"]


def test_recipe_with_unsorted_lists_is_sorted():
    recipe = Recipe(
        exchanges=[ExchangeStep(150.0, 0.3), ExchangeStep(110.0, 0.6)],
        feeds=[FeedStep(90.0, 50.0), FeedStep(60.0, 40.0)],
        sample_times_h=[100.0, 10.0],
    )
    events = recipe.events()
    times = [e.time_h for e in events]
    assert times == sorted(times)
    assert [e.fraction for e in events if e.operation == "exchange"] == [0.6, 0.3]


def test_schedule_round_trips_to_the_events():
    recipe = Recipe()
    schedule = recipe.schedule(n_events=30)
    assert schedule.n_events == 30
    assert int(schedule.operation[0]) == OPERATION_CODE["seed"]
    assert schedule_to_events(schedule) == recipe.events()
    assert float(schedule.end_time_h) == recipe.harvest_time_h


# ---------------------------------------------------------------- invalid recipes


@pytest.mark.parametrize(
    ("recipe", "kwargs", "expected"),
    [
        pytest.param(Recipe(moi=-1.0), {}, ["recipe.moi=-1.0", ">= 0"], id="negative-moi"),
        pytest.param(
            Recipe(feeds=[FeedStep(72.0, -10.0), FeedStep(96.0, 300.0)]),
            {},
            ["recipe.feeds[0].volume_ml=-10.0", ">= 0"],
            id="negative-feed-volume",
        ),
        pytest.param(
            Recipe(exchanges=[ExchangeStep(120.0, 1.5)]),
            {},
            ["recipe.exchanges[0].fraction=1.5", "[0, 1]"],
            id="exchange-fraction-above-one",
        ),
        pytest.param(
            Recipe(feeds=[FeedStep(72.0, 150.0), FeedStep(200.0, 300.0)]),
            {},
            ["recipe.feeds[1].time_h=200", "after", "recipe.harvest_time_h=192"],
            id="feed-after-harvest",
        ),
        pytest.param(
            Recipe(),
            {"capacity_ml": 500.0},
            ["recipe.feeds[1].volume_ml=300.0", "cartridge", "500 mL"],
            id="volume-beyond-capacity",
        ),
        pytest.param(
            Recipe(seed_viability=0.0),
            {},
            ["recipe.seed_viability=0.0", "> 0"],
            id="zero-seed-viability",
        ),
        pytest.param(
            Recipe(seed_viability=1.2),
            {},
            ["recipe.seed_viability=1.2", "[0, 1]"],
            id="seed-viability-above-one",
        ),
        pytest.param(
            Recipe(seed_volume_ml=0.0), {}, ["recipe.seed_volume_ml=0.0"], id="zero-seed-volume"
        ),
        pytest.param(
            Recipe(sample_volume_ml=150.0),
            {},
            ["recipe.sample_volume_ml=150.0", "culture volume"],
            id="sample-larger-than-culture",
        ),
        pytest.param(
            Recipe(transduction_time_h=300.0),
            {},
            ["recipe.transduction_time_h=300", "after"],
            id="transduction-after-harvest",
        ),
        pytest.param(Recipe(moi=float("nan")), {}, ["recipe.moi=nan", "finite"], id="nan-moi"),
        pytest.param(
            Recipe(medium_glucose_mM=-1.0),
            {},
            ["recipe.medium_glucose_mM=-1.0", ">= 0"],
            id="negative-medium-glucose",
        ),
    ],
)
def test_invalid_recipe_names_key_and_value(recipe, kwargs, expected):
    error = _raise_message(recipe, **kwargs)
    assert isinstance(error, ValueError)  # TwinInputError is a ValueError
    first_line = error.problems[0]
    for fragment in expected:
        assert fragment in first_line, (fragment, str(error))
    # the first line is also the start of the message
    assert str(error).startswith(first_line)


def test_schedule_raises_the_same_input_error():
    with pytest.raises(TwinInputError, match=re.escape("recipe.moi=-2.0")):
        Recipe(moi=-2.0).schedule()


def test_negative_harvest_time_blames_the_harvest_time():
    error = _raise_message(Recipe(harvest_time_h=-1.0))
    assert "recipe.harvest_time_h=-1" in str(error)
    assert "recipe.seed_cells" not in str(error)


@pytest.mark.parametrize(
    ("recipe", "key"),
    [
        (Recipe(exchanges=[ExchangeStep(-5.0, 0.5)]), "recipe.exchanges[0].time_h=-5.0"),
        (Recipe(activation_time_h=-2.0), "recipe.activation_time_h=-2.0"),
    ],
    ids=["exchange", "activation"],
)
def test_negative_event_time_blames_only_that_time(recipe, key):
    error = _raise_message(recipe)
    assert key in error.problems[0]
    assert not any("recipe.seed_cells" in line for line in error.problems)
