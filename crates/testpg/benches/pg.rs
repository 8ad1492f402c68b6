//! What a temporary PostgreSQL costs a test: medians over repeated runs.
//!
//! `cargo bench -p testpg` (or `just bench`). Set `BENCH_ITERATIONS` to change the sample size.

use std::time::{Duration, Instant};

use postgres::NoTls;
use testpg::{Binaries, Cluster, ClusterOptions, ConnectionInfo, Server, Template};

fn connect(info: &ConnectionInfo) -> postgres::Client {
    postgres::Client::connect(&info.key_value(), NoTls).expect("connect")
}

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Stats {
    fn print(mut self) {
        self.samples.sort();
        let n = self.samples.len();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| ms(self.samples[((n - 1) as f64 * q).round() as usize]);
        println!(
            "{:<44} median {:>8.2} ms   p10 {:>8.2}   p90 {:>8.2}   min {:>8.2}   n={n}",
            self.name,
            at(0.5),
            at(0.1),
            at(0.9),
            ms(self.samples[0])
        );
    }
}

/// Times `f` `n` times; `prepare` runs untimed before each sample.
fn bench<S>(name: &'static str, n: usize, mut prepare: impl FnMut() -> S, mut f: impl FnMut(S)) -> Stats {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let state = prepare();
        let start = Instant::now();
        f(state);
        samples.push(start.elapsed());
    }
    Stats { name, samples }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let binaries = Binaries::discover().expect("PostgreSQL binaries");
    println!(
        "testpg benchmarks: PostgreSQL {} in {}, data in {}",
        binaries.version(),
        binaries.dir().display(),
        testpg::base_dir().display()
    );
    let scratch = |i: usize| testpg::base_dir().join(format!("bench-{}-{i}", std::process::id()));

    // Warm the initdb cache, then measure what every later run pays.
    drop(Cluster::start(&binaries, scratch(0), &ClusterOptions::default()).expect("start"));
    let mut i = 0;
    let mut running = Vec::new();
    bench(
        "server ready from the cached cluster",
        n,
        || (),
        |()| {
            i += 1;
            running.push(Cluster::start(&binaries, scratch(i), &ClusterOptions::default()).expect("start"));
        },
    )
    .print();
    bench(
        "server stop (SIGQUIT, wait, remove folder)",
        n,
        || running.pop().expect("a cluster"),
        |c| c.stop().expect("stop"),
    )
    .print();
    bench(
        "cold start with initdb",
        n.min(5),
        || (),
        |()| {
            i += 1;
            let cold = ClusterOptions::default().with_cache(false);
            drop(Cluster::start(&binaries, scratch(i), &cold).expect("cold start"));
        },
    )
    .print();

    let server = Server::shared().expect("the run's server");
    let template = Template::new("bench-v1", |db| {
        let mut c = postgres::Client::connect(&db.key_value(), NoTls)?;
        c.batch_execute(
            "CREATE TABLE node (id serial PRIMARY KEY, uuid uuid UNIQUE, attributes jsonb, label text);
             CREATE INDEX ON node (label); CREATE TABLE link (id serial PRIMARY KEY,
             input_id int REFERENCES node, output_id int REFERENCES node, label text)",
        )?;
        Ok(())
    });
    drop(server.database(&template).expect("build the template"));
    let mut admin = connect(server.admin());
    let pooled = format!("{}p\\_%", server.prefix().replace('_', "\\_"));
    let mut pool_count = move || -> i64 {
        admin.query_one("SELECT count(*) FROM pg_database WHERE datname LIKE $1", &[&pooled]).expect("count").get(0)
    };
    let mut held = Vec::new();
    bench(
        "database handed out from the warm pool",
        n,
        || wait_for("a full pool", || pool_count() >= 4),
        |()| {
            held.push(server.database(&template).expect("database"));
        },
    )
    .print();
    held.clear();
    bench(
        "database cloned without the pool",
        n,
        || (),
        |()| {
            held.push(server.database_unpooled(&template).expect("database"));
        },
    )
    .print();
    let infos: Vec<ConnectionInfo> = held.iter().map(|db| db.connection().clone()).collect();
    let mut next = infos.iter();
    bench(
        "connect + first query",
        infos.len(),
        || next.next().expect("a database"),
        |info| {
            connect(info).query_one("SELECT 1", &[]).expect("query");
        },
    )
    .print();
    bench("hand a database back (drop runs in background)", held.len(), || held.pop().expect("a database"), drop)
        .print();
    let (mut creator, mut admin) = (connect(server.admin()), connect(server.admin()));
    let mut k = 0;
    bench(
        "DROP DATABASE with no connections left",
        n,
        || {
            k += 1;
            let name = format!("bench_drop_{k}");
            creator.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0")).expect("create");
            name
        },
        |name| {
            admin.batch_execute(&format!("DROP DATABASE {name}")).expect("drop");
        },
    )
    .print();
}
