//! The sluice client commands: login, init, run, deploy, call, feeds, keys, sources, logs.
