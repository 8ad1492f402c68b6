//! 100 trivial tests, each with a clean profile of its own: `cargo test --test hundred` and
//! `cargo nextest run --test hundred` show what the harness costs per test.

use aiida::orm::{QueryBuilder, data};
use aiida_fixtures::prelude::*;

#[rstest]
fn trivial(
    #[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] tens: i64,
    #[values(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)] ones: i64,
    aiida_profile_clean: AiidaProfile,
) {
    assert_eq!(QueryBuilder::nodes().count(&aiida_profile_clean).unwrap(), 0, "the profile was not empty");
    let mut node = data::int(tens * 10 + ones);
    node.store(&aiida_profile_clean).unwrap();
    let found = QueryBuilder::nodes().of_type(&data::INT).all(&aiida_profile_clean).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].attribute("value"), Some(&(tens * 10 + ones).into()));
}
