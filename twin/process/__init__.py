"""Unit operations, schedules and recipes of one Cell Shuttle cartridge."""

from ._bounds import (
    DEFAULT_BOUNDS as DEFAULT_BOUNDS,
    PlausibilityBounds as PlausibilityBounds,
    bounds_in_force as bounds_in_force,
)
from ._design import (
    DESIGN_VALUES as DESIGN_VALUES,
    recipe_values as recipe_values,
    recipe_with_values as recipe_with_values,
    schedule_from_values as schedule_from_values,
)
from ._downstream import Downstream as Downstream, product as product
from ._operations import (
    JUMP_MAPS as JUMP_MAPS,
    UNIT_OPERATIONS as UNIT_OPERATIONS,
    EventValues as EventValues,
    UnitOperation as UnitOperation,
    operation_tables as operation_tables,
)
from ._recipe import ExchangeStep as ExchangeStep, FeedStep as FeedStep, Recipe as Recipe
from ._schedule import (
    EVENT_FIELDS as EVENT_FIELDS,
    OPERATION_CODE as OPERATION_CODE,
    OPERATIONS as OPERATIONS,
    OPTIONAL_FIELDS as OPTIONAL_FIELDS,
    RECORDED_OPERATIONS as RECORDED_OPERATIONS,
    REQUIRED_FIELDS as REQUIRED_FIELDS,
    Event as Event,
    EventProblem as EventProblem,
    Schedule as Schedule,
    build_schedule as build_schedule,
    check_events as check_events,
    pad_schedule as pad_schedule,
    schedule_to_events as schedule_to_events,
    stack_schedules as stack_schedules,
)
