"""Forecast running batches from a calibration: intervals, release odds, harvest advice."""

from ._forecast import (
    KEY_RUN_COLUMNS as KEY_RUN_COLUMNS,
    Forecast as Forecast,
    ForecastSettings as ForecastSettings,
    forecast as forecast,
    planned_events as planned_events,
)
from ._plots import plot_backtest as plot_backtest, plot_fan_chart as plot_fan_chart
from ._predictive import (
    FORECAST_COLUMNS as FORECAST_COLUMNS,
    FORECAST_VARIABLES as FORECAST_VARIABLES,
)
