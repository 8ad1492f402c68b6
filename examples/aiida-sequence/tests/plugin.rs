//! How a plugin tests itself with aiida-fixtures.

use aiida::orm::{Node, QueryBuilder};
use aiida_fixtures::prelude::*;
use aiida_sequence::{SEQUENCE, sequence, stats, values};

#[rstest]
fn sequences_round_trip_through_storage(aiida_profile: AiidaProfile) {
    let mut node = sequence(&[1.0, 2.0, 4.5]);
    node.store(&aiida_profile).unwrap();
    let loaded = Node::load(&aiida_profile, node.pk().unwrap()).unwrap();
    assert_eq!(values(&loaded).unwrap(), [1.0, 2.0, 4.5]);
    assert_eq!(QueryBuilder::nodes().of_type(&SEQUENCE).count(&aiida_profile).unwrap(), 1);
}

#[rstest]
fn the_data_type_is_an_entry_point() {
    let data_type = aiida::orm::data::data_factory("example.sequence").unwrap();
    assert_eq!(*data_type, SEQUENCE);
}

#[rstest]
fn the_verdi_command_prints_statistics(aiida_profile_clean: AiidaProfile) {
    let pk = sequence(&[2.0, 4.0]).store(&aiida_profile_clean).unwrap().pk().unwrap().to_string();
    let mut out = Vec::new();
    let instance = aiida_profile_clean.instance().instance();
    aiida_cli::run_args(["verdi", "data", "example.sequence", "stats", &pk], instance, &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "sum 6 mean 3\n");
}

#[rstest]
fn a_test_can_replace_the_plugin_for_itself(mut entry_points: EntryPointManager) {
    entry_points.remove("aiida.data:example.sequence").unwrap();
    assert!(aiida::orm::data::data_factory("example.sequence").is_err());
}

#[test]
fn statistics() {
    assert_eq!(stats(&[1.0, 2.0, 3.0]), Some((6.0, 2.0)));
    assert_eq!(stats(&[]), None);
}

/// The manifest in Cargo.toml (what the hub publishes) declares exactly the entry points this
/// crate registers.
#[test]
fn the_manifest_declares_the_entry_points_the_crate_registers() {
    let manifest =
        aiida_registry::PluginManifest::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    assert!(manifest.problems().is_empty(), "{:?}", manifest.problems());
    assert_eq!(manifest.declared(), ["aiida.cmdline.data:example.sequence", "aiida.data:example.sequence"]);
    assert_eq!(manifest.compare_linked(), aiida_registry::manifest::LinkedDifference::default());
}
