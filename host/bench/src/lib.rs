//! Benchmarks of the gateway against the direct path (see benches/).
