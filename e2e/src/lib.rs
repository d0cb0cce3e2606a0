//! Nothing to see here: the end-to-end tests and their harness live in `tests/e2e/`
//! (`cargo test -p st2-matrix-e2e`). The package exists so that the test-only dependencies
//! (matrix-sdk and the ruma features it turns on) stay out of the bridge's own build.
