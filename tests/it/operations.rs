//! Operations tests, in-process: metrics, admin endpoints, health checks, limits, transfer log, reload, drain.
