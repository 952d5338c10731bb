"""Unit operations, schedules and recipes of one Cell Shuttle cartridge."""

from ._design import (
    DESIGN_VALUES as DESIGN_VALUES,
)
from ._design import (
    recipe_values as recipe_values,
)
from ._design import (
    recipe_with_values as recipe_with_values,
)
from ._design import (
    schedule_from_values as schedule_from_values,
)
from ._operations import JUMP_MAPS as JUMP_MAPS
from ._operations import EventValues as EventValues
from ._recipe import ExchangeStep as ExchangeStep
from ._recipe import FeedStep as FeedStep
from ._recipe import Recipe as Recipe
from ._schedule import (
    EVENT_FIELDS as EVENT_FIELDS,
)
from ._schedule import (
    OPERATION_CODE as OPERATION_CODE,
)
from ._schedule import (
    OPERATIONS as OPERATIONS,
)
from ._schedule import (
    Event as Event,
)
from ._schedule import (
    EventProblem as EventProblem,
)
from ._schedule import (
    Schedule as Schedule,
)
from ._schedule import (
    build_schedule as build_schedule,
)
from ._schedule import (
    check_events as check_events,
)
from ._schedule import (
    pad_schedule as pad_schedule,
)
from ._schedule import (
    schedule_to_events as schedule_to_events,
)
from ._schedule import (
    stack_schedules as stack_schedules,
)
