//! Nothing to link: this package exists for its integration tests (see Cargo.toml). The shared helpers
//! are in `support/` and are compiled into each test binary that uses them.
