//! The registry client over a registry of 1,000 plugins (synthetic, today's shape, each with a
//! handful of entry points), cached in a temporary folder: loading the cache, a pattern search,
//! and finding the plugin behind an entry point (the last one's, the worst case for the scan).
//!
//! `cargo bench -p aiida-registry`; `BENCH_ITERATIONS` sets the sample size.

use std::time::Instant;

use aiida_registry::RegistryClient;
use aiida_registry::testing::{Reply, Server};

fn median(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    (samples[n / 2], samples[n / 10], samples[(n * 9) / 10])
}

fn report(what: &str, samples: Vec<f64>) {
    let n = samples.len();
    let (m, p10, p90) = median(samples);
    println!("{what:<52} median {m:>8.3} ms   p10 {p10:>8.3}   p90 {p90:>8.3}   n={n}");
}

fn main() {
    let n: usize = std::env::var("BENCH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let mut registry = serde_json::Map::new();
    for i in 0..1000 {
        let prefix = format!("plugin{i:04}");
        registry.insert(
            format!("aiida-{prefix}"),
            serde_json::json!({
                "name": format!("aiida-{prefix}"), "entry_point_prefix": prefix,
                "code_home": format!("https://example.org/aiida-{prefix}"), "development_status": "stable",
                "pip_install_cmd": format!("pip install aiida-{prefix}"),
                "metadata": {"version": "1.0.0", "description": format!("Plugin number {i} for simulations"),
                             "author": format!("Author {}", i % 37), "classifiers": ["Framework :: AiiDA"]},
                "entry_points": {
                    "aiida.calculations": {format!("{prefix}.calc"): {"class": "m:Calc", "description": ["x"]}},
                    "aiida.parsers": {format!("{prefix}.parser"): "m:Parser"},
                    "aiida.data": {format!("{prefix}.data"): "m:Data", format!("{prefix}.more"): "m:More"},
                    "aiida.workflows": {format!("{prefix}.base"): {"class": "m:Base"}}
                }
            }),
        );
    }
    let body = serde_json::Value::Object(registry).to_string();
    let server = Server::start().expect("a loopback port");
    server.reply("/plugins_metadata.json", Reply::Json(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let client = RegistryClient::new(server.url("/plugins_metadata.json"), dir.path().join("cache"));
    let start = Instant::now();
    client.update(true, None, None).unwrap();
    println!("aiida-registry benchmarks (release build), a registry of 1,000 plugins ({} kB)", body.len() / 1000);
    println!(
        "{:<52} {:>8.1} ms (download from loopback, 1,000 info files)",
        "update with info",
        start.elapsed().as_secs_f64() * 1e3
    );

    let time = |f: &mut dyn FnMut()| {
        let samples: Vec<f64> = (0..n)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        samples
    };
    report(
        "load_cached, a new client (reads and parses the file)",
        time(&mut || {
            let fresh = RegistryClient::new(client.registry_url(), client.cache_dir());
            assert_eq!(fresh.load_cached().unwrap().len(), 1000)
        }),
    );
    report(
        "load_cached again (the file unchanged)",
        time(&mut || assert_eq!(client.load_cached().unwrap().len(), 1000)),
    );
    let pattern = regex::Regex::new("(?i)number 99\\d").unwrap();
    report(
        "find_by_pattern (description), ranked",
        time(&mut || assert_eq!(client.find_by_pattern(&pattern, true).unwrap().len(), 10)),
    );
    report(
        "find_for_entry_point(plugin0999.more)",
        time(&mut || assert_eq!(client.find_for_entry_point("plugin0999.more").unwrap().unwrap().key, "plugin0999")),
    );
    report("entry(plugin0500) (its info file)", time(&mut || assert!(client.entry("plugin0500").unwrap().is_some())));
    assert_eq!(server.hits("/plugins_metadata.json"), 1, "all from the cache after the update");
}
