"""Design-space sweeps: chunked, sharded over local devices, resumable, mergeable.

A :class:`SweepSpace` (:func:`sweep_space`) says what varies; a design (:data:`DESIGNS`)
places the points; :func:`run_sweep` simulates them chunk by chunk (one compiled program per
chunk shape, the points of a chunk split over all local devices) into a Zarr store that
:func:`open_sweep` reads as an xarray Dataset; :func:`merge_stores` joins the stores of
shards run elsewhere; the analysis functions read the store. See docs/sweep.md.
"""

from ._analysis import (
    design_space_region as design_space_region,
    plot_design_space as plot_design_space,
    plot_surface as plot_surface,
    response_surface as response_surface,
    sensitivity_indices as sensitivity_indices,
)
from ._evaluate import (
    FAILURES as FAILURES,
    OUTCOMES as OUTCOMES,
    SweepModel as SweepModel,
    bytes_per_point as bytes_per_point,
    chunk_function as chunk_function,
    point_outcomes as point_outcomes,
)
from ._run import (
    SweepReport as SweepReport,
    chunk_size_for as chunk_size_for,
    local_devices as local_devices,
    make_chunk_evaluator as make_chunk_evaluator,
    merge_stores as merge_stores,
    run_sweep as run_sweep,
)
from ._space import (
    DESIGNS as DESIGNS,
    SweepSpace as SweepSpace,
    check_design as check_design,
    design_blocks as design_blocks,
    design_size as design_size,
    salib_problem as salib_problem,
    sweep_space as sweep_space,
)
from ._store import (
    STORE_NAME as STORE_NAME,
    SweepPlan as SweepPlan,
    open_sweep as open_sweep,
    shard_range as shard_range,
)
