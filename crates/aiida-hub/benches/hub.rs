//! A pass of the hub over 1,000 plugins replayed from a loopback PyPI (each with a wheel), its
//! store on a temporary PostgreSQL: the first pass (everything new), a pass with nothing
//! changed, and one with 10 new versions; time and requests of each.
//!
//! `cargo bench -p aiida-hub`.

use std::time::Instant;

use aiida_hub::pipeline::{Sources, registry, update};
use aiida_hub::source_list::SourceList;
use aiida_hub::sources::{CratesIo, Pypi};
use aiida_hub::store::Store;
use aiida_registry::testing::{Reply, Server};

fn wheel(entry_points: &str) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    writer.start_file("p-1.0.dist-info/entry_points.txt", options).unwrap();
    writer.write_all(entry_points.as_bytes()).unwrap();
    writer.finish().unwrap().into_inner()
}

fn publish(server: &Server, project: &str, prefix: &str, version: &str) {
    let file = format!("/files/{project}-{version}.whl");
    let release = serde_json::json!({
        "info": {"name": project, "version": version, "summary": "a plugin", "requires_dist": ["aiida-core>=2.6"]},
        "urls": [{"packagetype": "bdist_wheel", "url": server.url(&file), "upload_time": "2026-11-01T00:00:00"}]
    })
    .to_string();
    server.reply(&format!("/pypi/{project}/json"), Reply::Json(release.clone()));
    server.reply(&format!("/pypi/{project}/{version}/json"), Reply::Json(release));
    let entry_points = format!("[aiida.calculations]\n{prefix}.calc = m:C\n[aiida.parsers]\n{prefix}.parser = m:P\n");
    server.reply(&file, Reply::Bytes(wheel(&entry_points), "application/zip"));
}

fn requests(server: &Server, projects: &[String]) -> usize {
    projects
        .iter()
        .map(|p| {
            server.hits(&format!("/pypi/{p}/json"))
                + server.hits(&format!("/pypi/{p}/1.0.0/json"))
                + server.hits(&format!("/pypi/{p}/1.1.0/json"))
        })
        .sum::<usize>()
        + projects
            .iter()
            .map(|p| server.hits(&format!("/files/{p}-1.0.0.whl")) + server.hits(&format!("/files/{p}-1.1.0.whl")))
            .sum::<usize>()
}

fn main() {
    let db = testpg::Server::shared().unwrap().database(&testpg::Template::empty()).unwrap();
    let mut store = Store::connect(&db.url()).unwrap();
    let server = Server::start().unwrap();
    let mut text = String::new();
    let mut projects = Vec::new();
    for i in 0..1000 {
        let (project, prefix) = (format!("aiida-p{i:04}"), format!("p{i:04}"));
        publish(&server, &project, &prefix, "1.0.0");
        text.push_str(&format!("{project}:\n  entry_point_prefix: {prefix}\n  code_home: h\n  pip_url: {project}\n"));
        projects.push(project);
    }
    let list = SourceList::parse(&text).unwrap();
    let sources = Sources {
        pypi: Pypi::new(server.url("")),
        crates_io: CratesIo::new(server.url(""), server.url("/files")),
        github: None,
    };
    println!("aiida-hub benchmarks (release build), 1,000 plugins on a loopback PyPI");
    let mut done = 0;
    let mut timed = |what: &str, server: &Server| {
        let start = Instant::now();
        let summary = update(&list, &sources, &mut store).unwrap();
        let elapsed = start.elapsed().as_secs_f64() * 1e3;
        let total = requests(server, &projects);
        println!(
            "{what:<40} {elapsed:>9.1} ms   {:>5} requests   ({} new, {} updated, {} unchanged)",
            total - done,
            summary.new.len(),
            summary.updated.len(),
            summary.unchanged
        );
        done = total;
    };
    timed("first pass (all new)", &server);
    timed("second pass (nothing changed)", &server);
    for project in projects.iter().take(10) {
        publish(&server, project, &project.replace("aiida-", ""), "1.1.0");
    }
    timed("a pass with 10 new versions", &server);
    let start = Instant::now();
    let published = registry(&list, &mut store).unwrap();
    println!(
        "{:<40} {:>9.1} ms   ({} plugins)",
        "the registry file",
        start.elapsed().as_secs_f64() * 1e3,
        published.as_object().unwrap().len()
    );
}
