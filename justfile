# Everyday commands. `cargo install just` if you do not have it.

# The README's test command: both runners, then a check that nothing was left behind.
test:
    cargo test --workspace --all-features
    scripts/check-clean
    cargo nextest run --workspace --all-features
    scripts/check-clean

# Tests in a process per test.
nextest *ARGS:
    cargo nextest run --workspace {{ARGS}}

# Benchmarks: medians of what fixtures cost (release), then what a suite pays under both runners (debug).
bench:
    cargo bench --workspace
    scripts/bench-suite

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --all-features -- -D warnings

# The README's main command.
demo:
    cargo run --example quickstart
