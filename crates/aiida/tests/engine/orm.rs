use aiida::orm::query::Op;
use aiida::orm::{Comment, Computer, Group, LinkType, Log, Node, OrmError, QueryBuilder, User, add_link, data};
use aiida::storage::Storage;
use serde_json::{Map, json};

use crate::common::{TestProfile, aiida_template};

fn storage() -> (TestProfile, Storage) {
    let t = TestProfile::new(&aiida_template());
    let storage = Storage::initialise(&t.profile).unwrap();
    (t, storage)
}

fn stored(mut node: Node, storage: &Storage) -> Node {
    node.store(storage).unwrap();
    node
}

fn calculation() -> Node {
    let mut node = Node::new("process.calculation.calcfunction.CalcFunctionNode.");
    node.set_process_type("aiida.calculations:core.arithmetic.add").unwrap();
    node
}

#[test]
fn computers_have_unique_labels_and_per_user_configuration() {
    let (_t, storage) = storage();
    let mut localhost = Computer::new("localhost", "localhost", "core.local", "core.direct")
        .with_description("this machine")
        .with_workdir("/tmp/aiida/{username}")
        .with_minimum_poll_interval(0.0);
    localhost.store(&storage).unwrap();
    let loaded = Computer::load_label(&storage, "localhost").unwrap();
    assert_eq!(loaded, localhost);
    assert_eq!(loaded.workdir(), Some("/tmp/aiida/{username}"));
    assert_eq!(loaded.metadata()["minimum_scheduler_poll_interval"], json!(0.0));

    let err = Computer::new("localhost", "other", "core.local", "core.direct").store(&storage).unwrap_err();
    assert_eq!(err.to_string(), "a computer labelled `localhost` exists already; choose another label");
    assert_eq!(Computer::list(&storage).unwrap().len(), 1, "the duplicate changed nothing");

    let user = User::default_user(&storage).unwrap();
    assert!(!localhost.is_configured(&storage, &user).unwrap());
    assert!(matches!(localhost.authinfo(&storage, &user), Err(OrmError::NotConfigured { .. })));
    let mut params = Map::new();
    params.insert("safe_interval".into(), json!(0));
    params.insert("use_login_shell".into(), json!(false));
    let auth = localhost.configure(&storage, &user, params.clone()).unwrap();
    assert_eq!(auth.auth_params(), &params);
    assert!(localhost.is_configured(&storage, &user).unwrap());
    let other = User::get_or_create(&storage, "other@example.com").unwrap();
    assert!(!localhost.is_configured(&storage, &other).unwrap(), "configuration is per user");

    let remote = stored(data::remote(&localhost, "/tmp/x").unwrap(), &storage);
    assert_eq!(Node::load(&storage, remote.pk().unwrap()).unwrap().computer_pk(), localhost.pk());
    let code =
        stored(data::installed_code(&localhost, "/bin/bash", "bash", Some("core.arithmetic.add")).unwrap(), &storage);
    let code = Node::load(&storage, code.pk().unwrap()).unwrap();
    assert_eq!(code.node_type(), "data.core.code.installed.InstalledCode.");
    assert_eq!(code.attribute("filepath_executable"), Some(&json!("/bin/bash")));
    assert_eq!(code.attribute("input_plugin"), Some(&json!("core.arithmetic.add")));
    assert_eq!(code.label(), "bash");
}

#[test]
fn file_data_types_keep_their_files_in_the_repository() {
    let (_t, storage) = storage();
    let single = stored(data::singlefile("input.txt", "1 2"), &storage);
    let single = Node::load(&storage, single.pk().unwrap()).unwrap();
    assert_eq!(single.attribute("filename"), Some(&json!("input.txt")));
    assert_eq!(single.file(&storage, "input.txt").unwrap(), b"1 2");
    let folder = stored(data::folder([("a/b.txt", "b"), ("c.txt", "c")]), &storage);
    let folder = Node::load(&storage, folder.pk().unwrap()).unwrap();
    assert_eq!(folder.node_type(), "data.core.folder.FolderData.");
    assert_eq!(folder.file(&storage, "a/b.txt").unwrap(), b"b");
    assert!(matches!(folder.file(&storage, "a"), Err(OrmError::NotFound { .. })), "a folder is not a file");
}

#[test]
fn storing_keeps_aiida_cores_hash_in_an_extra() {
    let (_t, storage) = storage();
    let folder = stored(data::folder([("a/b.txt", "b"), ("c.txt", "c")]), &storage);
    let loaded = Node::load(&storage, folder.pk().unwrap()).unwrap();
    assert_eq!(loaded.extras(), folder.extras());
    assert_eq!(loaded.extras()["_aiida_hash"], loaded.compute_hash(&storage).unwrap());
    // aiida-core 2.9.4's hash of an Int 42 (see src/orm/hash.rs).
    let int = stored(data::int(42), &storage);
    assert_eq!(int.extras()["_aiida_hash"], "bb1b385ba40bdb75cadccf353dcf4cb5806e00540c77220efc1a50cef5db93bd");
    // A process node's hash covers its inputs: those linked by the time it is computed.
    let calc = stored(calculation(), &storage);
    assert_eq!(calc.extras()["_aiida_hash"], calc.compute_hash(&storage).unwrap());
    add_link(&storage, &int, &calc, LinkType::InputCalc, "x").unwrap();
    assert_ne!(calc.extras()["_aiida_hash"], calc.compute_hash(&storage).unwrap());
    assert!(matches!(data::int(1).compute_hash(&storage), Err(OrmError::NotStored)));
}

#[test]
fn links_follow_aiidas_rules() {
    let (_t, storage) = storage();
    let (x, y) = (stored(data::int(1), &storage), stored(data::int(2), &storage));
    let calc = stored(calculation(), &storage);
    let sum = stored(data::int(3), &storage);
    add_link(&storage, &x, &calc, LinkType::InputCalc, "x").unwrap();
    add_link(&storage, &y, &calc, LinkType::InputCalc, "y").unwrap();
    add_link(&storage, &calc, &sum, LinkType::Create, "sum").unwrap();

    let inputs: Vec<(String, i64)> = calc
        .incoming(&storage)
        .unwrap()
        .into_iter()
        .map(|l| (l.label, l.node.attribute("value").unwrap().as_i64().unwrap()))
        .collect();
    assert_eq!(inputs, [("x".to_owned(), 1), ("y".to_owned(), 2)]);
    assert_eq!(sum.incoming(&storage).unwrap()[0].link_type, LinkType::Create);

    let rule = |r: Result<(), OrmError>| r.unwrap_err().to_string();
    let other_calc = stored(calculation(), &storage);
    assert!(rule(add_link(&storage, &other_calc, &sum, LinkType::Create, "again")).contains("already has a creator"));
    assert!(
        rule(add_link(&storage, &sum, &calc, LinkType::InputCalc, "x")).contains("already has an input labelled `x`")
    );
    let extra = stored(data::int(9), &storage);
    assert!(
        rule(add_link(&storage, &calc, &extra, LinkType::Create, "sum"))
            .contains("already has an output labelled `sum`")
    );
    assert!(
        rule(add_link(&storage, &x, &y, LinkType::InputCalc, "z"))
            .contains("must go from a Data node to a Calculation node")
    );
    assert!(rule(add_link(&storage, &extra, &calc, LinkType::InputCalc, "bad label")).contains("identifier"));
    assert!(matches!(add_link(&storage, &data::int(1), &calc, LinkType::InputCalc, "u"), Err(OrmError::NotStored)));
    assert_eq!(calc.incoming(&storage).unwrap().len(), 2, "refused links changed nothing");
    assert!(rule(add_link(&storage, &x, &calc, LinkType::InputCalc, "x")).contains("already has an input"));

    // A workflow may call several processes under one label (aiida's default `CALL`), but not
    // the same one twice, and a process has one caller.
    let workflow = stored(Node::new("process.workflow.workchain.WorkChainNode."), &storage);
    let (first, second) = (stored(calculation(), &storage), stored(calculation(), &storage));
    add_link(&storage, &workflow, &first, LinkType::CallCalc, "CALL").unwrap();
    add_link(&storage, &workflow, &second, LinkType::CallCalc, "CALL").unwrap();
    assert!(rule(add_link(&storage, &workflow, &first, LinkType::CallCalc, "CALL")).contains("already has a caller"));
    let other_workflow = stored(Node::new("process.workflow.workchain.WorkChainNode."), &storage);
    assert!(
        rule(add_link(&storage, &other_workflow, &second, LinkType::CallCalc, "CALL")).contains("already has a caller")
    );
}

#[test]
fn groups_comments_and_logs() {
    let (_t, storage) = storage();
    let (a, b) = (stored(data::int(1), &storage), stored(data::string("b"), &storage));
    let mut group = Group::new("results");
    group.store(&storage).unwrap();
    group.add_nodes(&storage, &[&a, &b, &a]).unwrap();
    assert_eq!(group.node_pks(&storage).unwrap(), [a.pk().unwrap(), b.pk().unwrap()]);
    group.remove_nodes(&storage, &[&a]).unwrap();
    assert_eq!(group.node_pks(&storage).unwrap(), [b.pk().unwrap()]);
    assert_eq!(Group::load_label(&storage, "results").unwrap().uuid(), group.uuid());
    assert!(matches!(Group::new("results").store(&storage), Err(OrmError::Duplicate { entity: "group", .. })));
    Group::with_type("results", "core.auto").store(&storage).unwrap();

    let user = User::default_user(&storage).unwrap();
    Comment::add(&storage, &a, &user, "looks right").unwrap();
    let comments = Comment::of(&storage, &a).unwrap();
    assert_eq!((comments[0].content.as_str(), comments[0].user_email.as_str()), ("looks right", "test@localhost"));
    Log::add(&storage, &a, "aiida.test", "REPORT", "step 1 done").unwrap();
    let logs = Log::of(&storage, &a).unwrap();
    assert_eq!((logs[0].levelname.as_str(), logs[0].message.as_str()), ("REPORT", "step 1 done"));
    let info = storage.info().unwrap();
    let count = |e: &str| info.counts.iter().find(|(k, _)| k == e).unwrap().1;
    assert_eq!((count("groups"), count("comments"), count("logs")), (2, 1, 1));
}

#[test]
fn queries_filter_order_count_and_follow_links() {
    let (_t, storage) = storage();
    let ints: Vec<Node> = [5, 1, 12, 30].into_iter().map(|v| stored(data::int(v), &storage)).collect();
    let mut labelled = data::float(2.5);
    labelled.set_label("half").unwrap();
    let float = stored(labelled, &storage);
    let mut nested = data::dict(serde_json::from_value(json!({"params": {"cutoff": 40}, "kind": "scf"})).unwrap());
    nested.set_extra(&storage, "tag", "dft").unwrap();
    let dict = stored(nested, &storage);

    let values = |nodes: Vec<Node>| -> Vec<i64> {
        nodes.iter().map(|n| n.attribute("value").unwrap().as_i64().unwrap()).collect()
    };
    let ints_q = QueryBuilder::nodes().of_type(&data::INT);
    assert_eq!(ints_q.count(&storage).unwrap(), 4);
    assert_eq!(values(ints_q.clone().attribute("value", Op::Gt, 4).all(&storage).unwrap()), [5, 12, 30]);
    assert_eq!(values(ints_q.clone().attribute("value", Op::In, json!([1, 30])).all(&storage).unwrap()), [1, 30]);
    assert_eq!(values(ints_q.clone().order_by("pk", true).limit(2).all(&storage).unwrap()), [30, 12]);
    assert_eq!(values(ints_q.clone().order_by("pk", false).offset(3).all(&storage).unwrap()), [30]);
    assert_eq!(ints_q.clone().column("pk", Op::Eq, ints[1].pk().unwrap()).first(&storage).unwrap().unwrap(), ints[1]);
    assert!(ints_q.clone().attribute("value", Op::Lt, 0).first(&storage).unwrap().is_none());

    assert_eq!(QueryBuilder::nodes().node_type("data.", true).count(&storage).unwrap(), 6, "all data");
    assert_eq!(
        QueryBuilder::nodes().column("label", Op::Like, "ha%").all(&storage).unwrap(),
        std::slice::from_ref(&float)
    );
    assert_eq!(
        QueryBuilder::nodes().attribute("params.cutoff", Op::Ge, 40).all(&storage).unwrap(),
        std::slice::from_ref(&dict)
    );
    assert_eq!(QueryBuilder::nodes().attribute("kind", Op::Like, "sc%").count(&storage).unwrap(), 1);
    // Ordered comparisons match values of the same JSON type only (jsonb ranks a bool above any number).
    data::boolean(true).store(&storage).unwrap();
    assert_eq!(values(QueryBuilder::nodes().attribute("value", Op::Gt, 10).all(&storage).unwrap()), [12, 30]);
    assert_eq!(QueryBuilder::nodes().extra("tag", Op::Eq, "dft").count(&storage).unwrap(), 1);
    assert_eq!(QueryBuilder::nodes().attribute("params", Op::Exists, json!(null)).count(&storage).unwrap(), 1);

    let calc = stored(calculation(), &storage);
    add_link(&storage, &ints[0], &calc, LinkType::InputCalc, "x").unwrap();
    add_link(&storage, &ints[1], &calc, LinkType::InputCalc, "y").unwrap();
    add_link(&storage, &calc, &ints[2], LinkType::Create, "sum").unwrap();
    let outputs = QueryBuilder::nodes().outgoing_of(&calc, Some(LinkType::Create)).all(&storage).unwrap();
    assert_eq!(values(outputs), [12]);
    let inputs = QueryBuilder::nodes().incoming_of(&calc, None).attribute("value", Op::Lt, 3).all(&storage).unwrap();
    assert_eq!(values(inputs), [1]);
    let creators = QueryBuilder::nodes().incoming_of(&ints[2], Some(LinkType::Create)).count(&storage).unwrap();
    assert_eq!(creators, 1);

    let err = QueryBuilder::nodes().column("password", Op::Eq, 1).all(&storage).unwrap_err();
    assert_eq!(err.to_string(), "invalid query: cannot filter on unknown column `password`");
}

#[test]
fn a_computer_is_deleted_with_its_authinfos_unless_nodes_use_it() {
    let (_t, storage) = storage();
    let user = User::default_user(&storage).unwrap();
    let mut used = Computer::new("used", "localhost", "core.local", "core.direct");
    used.store(&storage).unwrap();
    let mut spare = Computer::new("spare", "localhost", "core.local", "core.direct");
    spare.store(&storage).unwrap();
    spare.configure(&storage, &user, Map::new()).unwrap();
    let remote = stored(data::remote(&used, "/tmp/x").unwrap(), &storage);
    assert_eq!(remote.user_pk(), Some(user.pk()));
    assert_eq!((used.node_count(&storage).unwrap(), spare.node_count(&storage).unwrap()), (1, 0));

    let err = used.delete(&storage).unwrap_err();
    assert!(matches!(err, OrmError::InUse { nodes: 1, .. }), "{err}");
    assert_eq!(err.to_string(), "cannot delete computer `used`: 1 node(s) use it; delete them first");
    spare.delete(&storage).unwrap();
    let left: Vec<String> = Computer::list(&storage).unwrap().iter().map(|c| c.label().to_owned()).collect();
    assert_eq!(left, ["used"]);
    assert!(matches!(spare.authinfo(&storage, &user), Err(OrmError::NotConfigured { .. })), "its authinfo went too");
    assert!(matches!(spare.delete(&storage), Err(OrmError::NotFound { .. })));
}

#[test]
fn a_process_gets_outputs_once_per_label_until_it_is_sealed() {
    let (_t, storage) = storage();
    let mut process = Node::new("process.calculation.calcjob.CalcJobNode.");
    process.set_attribute("process_state", "created").unwrap();
    let input = stored(data::int(1), &storage);
    process.store_process(&storage, &[("x", &input)]).unwrap();
    let mut sum = data::int(3);
    process.add_output(&storage, &mut sum, "sum").unwrap();
    let outputs = process.outgoing(&storage).unwrap();
    assert_eq!((outputs.len(), outputs[0].label.as_str(), outputs[0].link_type), (1, "sum", LinkType::Create));
    let err = process.add_output(&storage, &mut data::int(4), "sum").unwrap_err();
    assert!(err.to_string().contains("already has an output labelled `sum`"), "{err}");
    let mut sealed = Map::new();
    sealed.insert("sealed".into(), json!(true));
    process.update_process(&storage, sealed, &[]).unwrap();
    assert!(matches!(process.add_output(&storage, &mut data::int(5), "other"), Err(OrmError::Sealed { .. })));
}
