use aiida::orm::{Node, OrmError, User, data};
use aiida::storage::{Repository, Storage, StorageError};
use serde_json::{Value, json};
use testpg::{Binaries, Cluster, ClusterOptions, Template};

use crate::common::{TestProfile, aiida_template, psql_dos};

fn count(storage: &Storage, entity: &str) -> i64 {
    storage.info().unwrap().counts.into_iter().find(|(e, _)| e == entity).unwrap().1
}

#[test]
fn initialising_creates_the_schema_repository_and_default_user() {
    let t = TestProfile::new(&aiida_template());
    let storage = Storage::initialise(&t.profile).unwrap();
    let info = storage.info().unwrap();
    assert_eq!(info.schema, "main_0002");
    assert_eq!((count(&storage, "users"), count(&storage, "nodes")), (1, 0));
    assert_eq!(User::default_user(&storage).unwrap().email(), "test@localhost");
    assert!(t.repository().join("container/packs.idx").is_file());
    assert_eq!(storage.setting("repository|uuid").unwrap(), Some(Value::String(info.container_id.clone())));
    // Opening again checks the schema and the repository: both fine.
    Storage::open(&t.profile).unwrap();
}

#[test]
fn nodes_round_trip_with_attributes_extras_and_files() {
    let t = TestProfile::new(&aiida_template());
    let storage = Storage::initialise(&t.profile).unwrap();
    let mut node = data::int(42);
    node.set_label("answer").unwrap();
    node.put_file("sub/file.txt", "content").unwrap();
    node.store(&storage).unwrap();
    let pk = node.pk().unwrap();

    let loaded = Node::load(&storage, pk).unwrap();
    assert_eq!(loaded.node_type(), "data.core.int.Int.");
    assert_eq!(loaded.attribute("value"), Some(&json!(42)));
    assert_eq!(loaded.label(), "answer");
    assert_eq!(loaded.file(&storage, "sub/file.txt").unwrap(), b"content");
    assert_eq!(loaded.repository_metadata()["o"]["sub"]["o"]["file.txt"]["k"].as_str().unwrap().len(), 64);
    assert_eq!(Node::load_uuid(&storage, node.uuid()).unwrap().pk(), Some(pk));

    let mut stored = loaded;
    assert!(matches!(stored.set_attribute("value", 1), Err(OrmError::Frozen { .. })));
    stored.set_extra(&storage, "tag", "kept").unwrap();
    assert_eq!(Node::load(&storage, pk).unwrap().extras().get("tag"), Some(&json!("kept")));
    assert!(matches!(Node::load(&storage, pk + 1000), Err(OrmError::NotFound { .. })));
}

#[test]
fn clean_empties_everything_but_the_settings_and_schema() {
    let t = TestProfile::new(&aiida_template());
    let storage = Storage::initialise(&t.profile).unwrap();
    let before = storage.info().unwrap().container_id;
    let mut extra_user_node = data::string("x");
    extra_user_node.put_file("f", "y").unwrap();
    extra_user_node.store(&storage).unwrap();
    data::float(1.5).store(&storage).unwrap();
    User::get_or_create(&storage, "other@example.com").unwrap();

    storage.clean().unwrap();
    let info = storage.info().unwrap();
    assert_eq!((count(&storage, "nodes"), count(&storage, "users"), info.objects), (0, 1, 0));
    assert_ne!(info.container_id, before, "a new repository container");
    assert_eq!(storage.setting("repository|uuid").unwrap(), Some(Value::String(info.container_id)));
    assert_eq!(info.schema, "main_0002");
    let mut again = data::int(1);
    assert_eq!(again.store(&storage).unwrap().pk(), Some(1), "ids start again");
    Storage::open(&t.profile).unwrap();
}

#[test]
fn storage_problems_are_reported_clearly() {
    // An empty database.
    let t = TestProfile::new(&Template::empty());
    let err = Storage::open(&t.profile).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the database of profile `test` is not initialised; run `verdi -p test storage migrate`"
    );

    // A schema revision we do not know.
    let t = TestProfile::new(&aiida_template());
    let storage = Storage::initialise(&t.profile).unwrap();
    let mut admin = postgres::Client::connect(&t.db.connection().key_value(), postgres::NoTls).unwrap();
    admin.batch_execute("UPDATE alembic_version SET version_num = 'main_0003'").unwrap();
    assert!(matches!(Storage::open(&t.profile), Err(StorageError::SchemaVersion { found }) if found == "main_0003"));
    admin.batch_execute("UPDATE alembic_version SET version_num = 'main_0002'").unwrap();

    // A missing repository is reported, and migrating does not replace it by an empty one.
    std::fs::rename(t.repository().join("container"), t.repository().join("moved")).unwrap();
    assert!(matches!(Storage::open(&t.profile), Err(StorageError::RepositoryMissing { .. })));
    let err = Storage::initialise(&t.profile).unwrap_err();
    assert!(err.to_string().contains("is missing, but the database expects container"), "{err}");
    assert!(!t.repository().join("container").exists());
    std::fs::rename(t.repository().join("moved"), t.repository().join("container")).unwrap();
    Storage::open(&t.profile).unwrap();

    // A repository that is not this database's.
    drop(storage);
    Repository::new(&t.repository()).create().unwrap();
    let err = Storage::open(&t.profile).unwrap_err();
    assert!(matches!(err, StorageError::RepositoryMismatch { .. }), "{err}");
}

#[test]
fn a_wrong_password_is_a_clear_error() {
    let binaries = Binaries::discover().unwrap();
    let dir = testpg::base_dir().join(format!("test-aiida-pw-{}", std::process::id()));
    let cluster = Cluster::start(&binaries, &dir, &ClusterOptions::default().with_tcp(true)).unwrap();
    let mut info = cluster.tcp_connection().unwrap();
    info.password = Some("wrong".into());
    let profile = aiida::config::Profile::new("pw", &psql_dos(&info, &dir.join("repo")), "x@y");
    let err = Storage::open(&profile).unwrap_err();
    assert!(matches!(err, StorageError::Connect { .. }), "{err}");
    // The message says what to do; the driver's error, its source, says what the server said.
    assert!(err.to_string().contains("verdi profile show") && !err.to_string().contains("password"), "{err}");
    let text = aiida::report::Chain(&err).to_string();
    assert!(text.contains("password authentication failed"), "{text}");
}
