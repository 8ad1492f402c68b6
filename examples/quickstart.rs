//! Quickstart: what the harness does under every test, step by step, with timings.
//!
//! `cargo run --example quickstart`

use std::time::Instant;

use aiida_fixtures::testpg::{Server, Template};
use postgres::NoTls;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let value = f()?;
    println!("{:>9.2} ms  {what}", start.elapsed().as_secs_f64() * 1e3);
    Ok(value)
}

fn main() -> Result<()> {
    println!("aiida-fixtures quickstart: a temporary PostgreSQL with a database per test\n");
    let server = step("start (or join) this run's PostgreSQL server", || Ok(Server::shared()?))?;
    println!("             backend {:?}, server at {}", server.backend(), server.admin());
    let schema = Template::new("quickstart-v1", |db| {
        let mut c = postgres::Client::connect(&db.key_value(), NoTls)?;
        c.batch_execute("CREATE TABLE node (id serial PRIMARY KEY, label text NOT NULL, value integer)")?;
        Ok(())
    });
    let first = step("build the template, clone a database for test 1", || Ok(server.database(&schema)?))?;
    let second = step("clone a database for test 2", || Ok(server.database(&schema)?))?;
    let mut c1 = step("connect to test 1's database", || {
        Ok(postgres::Client::connect(&first.connection().key_value(), NoTls)?)
    })?;
    let mut c2 = postgres::Client::connect(&second.connection().key_value(), NoTls)?;
    step("store three nodes in test 1's database", || {
        for (label, value) in [("x", 1), ("y", 2), ("sum", 3)] {
            c1.execute("INSERT INTO node (label, value) VALUES ($1, $2)", &[&label, &value])?;
        }
        Ok(())
    })?;
    let (n1, n2): (i64, i64) = step("count nodes in both databases", || {
        Ok((
            c1.query_one("SELECT count(*) FROM node", &[])?.get(0),
            c2.query_one("SELECT count(*) FROM node", &[])?.get(0),
        ))
    })?;
    println!("             test 1 sees {n1} nodes, test 2 sees {n2}: isolated");
    assert_eq!((n1, n2), (3, 0));
    drop((c1, c2));
    step("hand both databases back (dropped in the background)", || {
        drop((first, second));
        Ok(())
    })?;
    println!("\nThe server stops and its folder ({}) goes when this process exits.", server.run_dir().display());
    Ok(())
}
