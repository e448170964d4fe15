//! Operations tests through the real binary: SIGHUP reload, SIGTERM drain, switching user, startup errors.
