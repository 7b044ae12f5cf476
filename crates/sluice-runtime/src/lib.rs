//! Local runtime: uv environments, warm Python worker pools, the framed worker protocol.
