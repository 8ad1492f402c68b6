//! One storage shared by many tasks, and the synchronous surface inside a caller's runtime.

use std::collections::BTreeSet;

use aiida::orm::{LinkType, Node, QueryBuilder, add_link, add_link_async, data};
use aiida::storage::Storage;

use crate::common::{TestProfile, aiida_template};

/// The pool serves several tasks at once: eight tasks store 1,000 nodes through clones of one
/// storage, each on the connection the pool hands it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_store_a_thousand_nodes_through_one_storage() {
    let t = TestProfile::new(&aiida_template());
    let storage = Storage::initialise_async(&t.profile).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let mut pks = Vec::new();
                for i in 0..125 {
                    let mut node = data::int(task * 1000 + i);
                    node.store_async(&storage).await.unwrap();
                    pks.push(node.pk().unwrap());
                }
                pks
            })
        })
        .collect();
    let mut pks = BTreeSet::new();
    for task in tasks {
        pks.extend(task.await.unwrap());
    }
    assert_eq!(pks.len(), 1000, "every store got a pk of its own");
    let stored = QueryBuilder::nodes().all_async(&storage).await.unwrap();
    let values: BTreeSet<i64> = stored.iter().map(|n| n.attribute("value").unwrap().as_i64().unwrap()).collect();
    let expected: BTreeSet<i64> = (0..8).flat_map(|task| (0..125).map(move |i| task * 1000 + i)).collect();
    assert_eq!(values, expected, "all 1,000 values are there, each once");
    assert_eq!(stored.iter().map(|n| n.pk().unwrap()).collect::<BTreeSet<_>>(), pks);
}

/// Inside a current-thread runtime (a plain `#[tokio::test]`), the blocking calls work and mix
/// with the async ones on one storage: connections never depend on the caller's runtime, which a
/// blocking call holds up.
#[tokio::test]
async fn blocking_and_async_calls_mix_inside_a_callers_runtime() {
    let t = TestProfile::new(&aiida_template());
    let storage = Storage::initialise_async(&t.profile).await.unwrap();
    let mut calculation = Node::new("process.calculation.calcfunction.CalcFunctionNode.");
    calculation.store_async(&storage).await.unwrap();
    let mut x = data::int(1);
    x.store(&storage).unwrap();
    add_link_async(&storage, &x, &calculation, LinkType::InputCalc, "x").await.unwrap();
    let mut y = data::int(2);
    y.store_async(&storage).await.unwrap();
    add_link(&storage, &y, &calculation, LinkType::InputCalc, "y").unwrap();
    // A refused link rolls its transaction back and leaves the pool's connections usable.
    assert!(add_link(&storage, &y, &calculation, LinkType::InputCalc, "y").is_err());
    let labels: Vec<String> =
        calculation.incoming_async(&storage).await.unwrap().into_iter().map(|l| l.label).collect();
    assert_eq!(labels, ["x", "y"]);
    assert_eq!(QueryBuilder::nodes().count(&storage).unwrap(), 3);
}
