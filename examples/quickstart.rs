//! Quickstart: what the harness does around every test, step by step, with timings.
//!
//! `cargo run --example quickstart`

use std::time::Instant;

use aiida::orm::query::Op;
use aiida::orm::{LinkType, Node, QueryBuilder, add_link, data};
use aiida_engine::ProcessBuilder;
use aiida_fixtures::prelude::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let value = f()?;
    println!("{:>9.2} ms  {what}", start.elapsed().as_secs_f64() * 1e3);
    Ok(value)
}

fn main() -> std::process::ExitCode {
    match quickstart() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn quickstart() -> Result<()> {
    println!("aiida-fixtures quickstart: an isolated AiiDA instance on a temporary PostgreSQL\n");
    let total = Instant::now();
    let cluster = step("start (or join) this run's PostgreSQL server", || Ok(PostgresCluster::shared()?))?;
    println!("             {:?} server at {}", cluster.server().backend(), cluster.server().admin());
    let profile = step("create an instance folder and a test profile (schema migrated, cloned)", || {
        Ok(AiidaProfile::create(&AiidaInstance::temporary()?, ProfileOptions::default())?)
    })?;
    println!("             profile `{}` in {}", profile.name(), profile.instance().dir().display());
    let again = step("a second test's profile (clone from the warm pool)", || {
        Ok(AiidaProfile::create(&AiidaInstance::temporary()?, ProfileOptions::default())?)
    })?;

    let sum = step("store x=1, y=2, a calculation, and its output sum=3 (with links)", || {
        let x = data::int(1).store(&profile)?.clone();
        let y = data::int(2).store(&profile)?.clone();
        let mut calc = Node::new("process.calculation.calcfunction.CalcFunctionNode.");
        calc.set_process_type("aiida.calculations:core.arithmetic.add")?;
        calc.store(&profile)?;
        let mut sum = data::int(3);
        sum.put_file("result.txt", "3\n")?;
        sum.store(&profile)?;
        add_link(&profile, &x, &calc, LinkType::InputCalc, "x")?;
        add_link(&profile, &y, &calc, LinkType::InputCalc, "y")?;
        add_link(&profile, &calc, &sum, LinkType::Create, "sum")?;
        Ok(sum)
    })?;
    let (big, created) = step("query: Int nodes with value > 1; what created `sum`", || {
        let big = QueryBuilder::nodes().of_type(&data::INT).attribute("value", Op::Gt, 1).count(&profile)?;
        let creator = QueryBuilder::nodes().incoming_of(&sum, Some(LinkType::Create)).first(&profile)?;
        Ok((big, creator.and_then(|c| c.process_type().map(str::to_owned))))
    })?;
    println!("             {big} Int nodes above 1; `sum` was created by {}", created.unwrap_or_default());
    let code = step("a computer `localhost` (core.local + core.direct, no login shell) and a code", || {
        // Without a login shell, commands do not pay for the start-up files of whoever runs this
        // (aiida's default runs every command in a login shell).
        let no_login_shell = serde_json::json!({"use_login_shell": false}).as_object().cloned();
        let localhost = ComputerFactory::for_profile(profile.clone()).get(ComputerSpec {
            label: Some("localhost".into()),
            configuration_kwargs: no_login_shell,
            ..ComputerSpec::default()
        })?;
        let mut code = data::installed_code(&localhost, "/bin/bash", "bash", Some("core.arithmetic.add"))?;
        code.store(&profile)?;
        Ok(code)
    })?;
    let outputs = step("run core.arithmetic.add 1 + 2 (upload, submit, poll, retrieve, parse)", || {
        let mut builder = ProcessBuilder::for_code(&code)?;
        builder.value("x", 1).value("y", 2);
        Ok(aiida_engine::run(&profile, &builder)?)
    })?;
    println!("             sum = {}", outputs["sum"].attribute("value").cloned().unwrap_or_default());
    let daemon = step("start a daemon worker (this program run again, serving the profile)", || {
        let daemon = aiida_daemon::DaemonClient::new(&profile, profile.instance().dir()).tied_to_this_process();
        daemon.start(1)?;
        Ok(daemon)
    })?;
    let node = step("submit core.arithmetic.add 20 + 22 to the daemon and await it", || {
        let mut builder = ProcessBuilder::for_code(&code)?;
        builder.value("x", 20).value("y", 22);
        Ok(daemon.submit_and_await(&builder, "finished", std::time::Duration::from_secs(20))?)
    })?;
    println!(
        "             process {} finished [{}] on worker {:?}",
        node.pk().unwrap_or_default(),
        node.attribute("exit_status").cloned().unwrap_or_default(),
        daemon.worker_pids()
    );
    step("stop the daemon", || Ok(daemon.stop(std::time::Duration::from_secs(5))?))?;
    let other = step("the second profile sees none of it", || Ok(QueryBuilder::nodes().count(&again)?))?;
    assert_eq!(other, 0, "profiles are isolated");
    step("clean the first profile (as aiida_profile_clean does)", || Ok(profile.clean()?))?;
    assert_eq!(QueryBuilder::nodes().count(&profile)?, 0);
    step("tear both profiles down (databases handed back, folders removed)", || {
        drop((profile, again));
        Ok(())
    })?;
    println!(
        "\n{:.0} ms in all. The server stops, and its folder ({}) goes, when this process exits.",
        total.elapsed().as_secs_f64() * 1e3,
        cluster.server().run_dir().display()
    );
    Ok(())
}
