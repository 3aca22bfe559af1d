"""Analysis: planning on grids, the behavioural-objective estimator, metrics and reports (later issues)."""
