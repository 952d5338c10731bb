"""Calibration: fit the kinetic model to run data, with donor variability and uncertainty.

A hierarchical MAP fit (population parameters plus donor effects, Gaussian priors on the
estimation scale, the assay noise model of :mod:`twin.assays` as likelihood) by
Levenberg-Marquardt with block-structured forward-mode Jacobians, and a Laplace approximation
of the posterior at the optimum. Modules:

- ``_problem``: run data -> padded arrays; ``_model``: parameter layout, residuals, Jacobian;
- ``_solve``: the Levenberg-Marquardt loop and starts; ``_laplace``: covariance and intervals;
- ``_profile``: profile likelihood; ``_calibrate``: the driver; ``_io``: ``calibration.nc``;
- ``_bands``: fitted trajectories with measurement bands; ``_plots``: figures;
- ``_misfit``: residuals averaged over runs by assay and day (systematic misfit).
"""

from ._bands import fit_bands as fit_bands
from ._calibrate import calibrate as calibrate, run_devices as run_devices
from ._config import (
    CalibrationConfig as CalibrationConfig,
    DiscrepancySettings as DiscrepancySettings,
    calibration_from_config as calibration_from_config,
    check_calibration_config as check_calibration_config,
)
from ._io import (
    calibration_dataset as calibration_dataset,
    load_calibration as load_calibration,
    write_calibration as write_calibration,
)
from ._misfit import (
    describe_misfit as describe_misfit,
    residual_trends as residual_trends,
)
from ._model import (
    ModelSpec as ModelSpec,
    ObjectiveData as ObjectiveData,
    ParameterLayout as ParameterLayout,
    make_prior as make_prior,
    objective as objective,
    residuals as residuals,
    residuals_and_jacobian as residuals_and_jacobian,
)
from ._plots import (
    plot_fits as plot_fits,
    plot_parameter_intervals as plot_parameter_intervals,
    plot_profiles as plot_profiles,
    plot_residuals as plot_residuals,
)
from ._problem import (
    CalibrationArrays as CalibrationArrays,
    CalibrationProblem as CalibrationProblem,
    build_problem as build_problem,
)
from ._result import Calibration as Calibration
from ._solve import LMOptions as LMOptions, LMResult as LMResult, fit_one as fit_one
