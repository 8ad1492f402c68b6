use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use serde_json::json;

use super::*;
use crate::groups::Transports;

/// A transport whose home is a fresh temporary folder, without a login shell (fast).
fn transport() -> (tempfile::TempDir, LocalTransport) {
    let dir = tempfile::tempdir().unwrap();
    let transport = LocalTransport::with_home(dir.path().to_owned(), false);
    (dir, transport)
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

fn params(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[tokio::test]
async fn the_plugin_is_registered_and_checks_its_parameters() {
    let plugin = aiida::plugins::factory::<Transports>("core.local").unwrap();
    assert_eq!(plugin.default_safe_interval(), Duration::ZERO);
    assert_eq!(plugin.default_minimum_job_poll_interval(), Duration::from_millis(100));
    let names: Vec<_> = plugin.auth_options().iter().map(|o| o.name).collect();
    assert_eq!(names, ["use_login_shell", "safe_interval"]);
    plugin.open("localhost", &Map::new()).await.unwrap();

    let local = LocalTransportType;
    assert!(local.open_local(&Map::new()).unwrap().use_login_shell(), "a login shell by default");
    let opened = local.open_local(&params(json!({"use_login_shell": false, "safe_interval": 0.5}))).unwrap();
    assert!(!opened.use_login_shell());
    assert_eq!(opened.home(), std::env::home_dir().unwrap());

    let err = local.open_local(&params(json!({"use_login_shell": "yes"}))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the transport parameter `use_login_shell` = \"yes\" is invalid: expected true or false"
    );
    let err = local.open_local(&params(json!({"safe_interval": -1}))).unwrap_err();
    assert!(err.to_string().contains("`safe_interval` = -1"), "{err}");
    let err = plugin.open("localhost", &params(json!({"key_filename": "/x"}))).await.unwrap_err();
    assert!(err.to_string().contains("`key_filename`") && err.to_string().contains("use_login_shell"), "{err}");
}

#[tokio::test]
async fn put_copies_into_an_existing_folder_or_as_the_target() {
    let (remote, t) = transport();
    let local = tempfile::tempdir().unwrap();
    let l = local.path();
    let r = remote.path();
    write(&l.join("in.txt"), "one");
    write(&l.join("tree/a.txt"), "a");
    write(&l.join("tree/sub/b.txt"), "b");
    fs::create_dir(r.join("dest")).unwrap();

    t.put(&l.join("in.txt"), &r.join("dest")).await.unwrap();
    assert_eq!(read(&r.join("dest/in.txt")), "one", "into an existing folder");
    t.put(&l.join("in.txt"), &r.join("renamed.txt")).await.unwrap();
    assert_eq!(read(&r.join("renamed.txt")), "one", "as the target");
    write(&l.join("in.txt"), "two");
    t.put(&l.join("in.txt"), &r.join("renamed.txt")).await.unwrap();
    assert_eq!(read(&r.join("renamed.txt")), "two", "overwriting");

    t.put(&l.join("tree"), &r.join("dest")).await.unwrap();
    assert_eq!(read(&r.join("dest/tree/sub/b.txt")), "b", "a folder goes into an existing folder");
    t.put(&l.join("tree"), &r.join("copy")).await.unwrap();
    assert_eq!(read(&r.join("copy/a.txt")), "a", "or becomes the target");
    write(&l.join("tree/a.txt"), "a2");
    t.put(&l.join("tree"), &r.join("dest")).await.unwrap();
    assert_eq!(read(&r.join("dest/tree/a.txt")), "a2", "and is merged into an existing copy");
    t.put(Path::new(&format!("{}/", l.join("tree").display())), &r.join("dest")).await.unwrap();
    assert_eq!(read(&r.join("dest/sub/b.txt")), "b", "a trailing slash copies the contents");

    // Relative remote paths are taken from the home folder.
    t.put(&l.join("in.txt"), Path::new("relative.txt")).await.unwrap();
    assert_eq!(read(&r.join("relative.txt")), "two");
}

#[tokio::test]
async fn put_refuses_what_aiida_refuses() {
    let (remote, t) = transport();
    let local = tempfile::tempdir().unwrap();
    let (l, r) = (local.path(), remote.path());
    write(&l.join("x.in"), "x");
    write(&l.join("y.in"), "y");
    fs::create_dir(l.join("tree")).unwrap();
    write(&r.join("file"), "f");

    let err = t.put(Path::new("x.in"), &r.join("x")).await.unwrap_err();
    assert!(matches!(err, TransportError::InvalidPath { .. }), "{err}");
    let err = t.put(&l.join("missing"), &r.join("x")).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} does not exist", l.join("missing").display()));
    let err = t.put(&l.join("tree"), &r.join("file")).await.unwrap_err();
    assert!(err.to_string().contains("is a file"), "{err}");
    let err = t.put(&l.join("*.in"), &r.join("nowhere")).await.unwrap_err();
    assert!(matches!(err, TransportError::Missing(_)), "several matches need an existing folder: {err}");
    let err = t.put(&l.join("*.in"), &r.join("file")).await.unwrap_err();
    assert!(err.to_string().contains("not a folder"), "{err}");
    let err = t.put(&l.join("*.in"), &r.join("*")).await.unwrap_err();
    assert!(err.to_string().contains("glob pattern"), "{err}");

    fs::create_dir(r.join("inputs")).unwrap();
    t.put(&l.join("*.in"), &r.join("inputs")).await.unwrap();
    assert_eq!(t.listdir(&r.join("inputs")).await.unwrap(), ["x.in", "y.in"]);
    t.put(&l.join("x*"), &r.join("single")).await.unwrap();
    assert_eq!(read(&r.join("single")), "x", "one match may be copied as the target");
}

#[tokio::test]
async fn get_mirrors_put_and_may_ignore_a_missing_path() {
    let (remote, t) = transport();
    let local = tempfile::tempdir().unwrap();
    let (l, r) = (local.path(), remote.path());
    write(&r.join("work/aiida.out"), "3\n");
    write(&r.join("work/_scheduler-stdout.txt"), "");
    write(&r.join("work/sub/deep.txt"), "deep");

    t.get(&r.join("work/aiida.out"), l, false).await.unwrap();
    assert_eq!(read(&l.join("aiida.out")), "3\n");
    t.get(&r.join("work/aiida.out"), &l.join("named.out"), false).await.unwrap();
    assert_eq!(read(&l.join("named.out")), "3\n");
    t.get(&r.join("work/sub"), l, false).await.unwrap();
    assert_eq!(read(&l.join("sub/deep.txt")), "deep");
    fs::create_dir(l.join("all")).unwrap();
    t.get(&r.join("work/*.txt"), &l.join("all"), false).await.unwrap();
    assert_eq!(fs::read_dir(l.join("all")).unwrap().count(), 1);
    t.get(Path::new("work/aiida.out"), &l.join("relative.out"), false).await.unwrap();
    assert_eq!(read(&l.join("relative.out")), "3\n");

    let err = t.get(&r.join("work/missing"), l, false).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} does not exist", r.join("work/missing").display()));
    t.get(&r.join("work/missing"), l, true).await.unwrap();
    let err = t.get(&r.join("work/aiida.out"), Path::new("relative"), false).await.unwrap_err();
    assert!(matches!(err, TransportError::InvalidPath { .. }), "{err}");
}

#[tokio::test]
async fn copy_nests_an_existing_destination_and_keeps_links() {
    let (remote, t) = transport();
    let r = remote.path();
    write(&r.join("src/a.txt"), "a");
    symlink("a.txt", r.join("src/link")).unwrap();
    write(&r.join("f.txt"), "f");

    t.copy(&r.join("src"), &r.join("dst")).await.unwrap();
    assert_eq!(read(&r.join("dst/a.txt")), "a");
    assert_eq!(fs::read_link(r.join("dst/link")).unwrap(), Path::new("a.txt"), "links are kept");
    t.copy(&r.join("src"), &r.join("dst")).await.unwrap();
    assert_eq!(read(&r.join("dst/src/a.txt")), "a", "the second copy nests");
    let err = t.copy(&r.join("src"), &r.join("dst")).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} exists already", r.join("dst/src").display()));

    t.copy(&r.join("f.txt"), &r.join("dst")).await.unwrap();
    assert_eq!(read(&r.join("dst/f.txt")), "f", "a file goes into a folder");
    t.copy(&r.join("f.txt"), &r.join("g.txt")).await.unwrap();
    assert_eq!(read(&r.join("g.txt")), "f");
    t.copy(&r.join("src"), &r.join("src/inner")).await.unwrap();
    assert_eq!(t.listdir(&r.join("src/inner")).await.unwrap(), ["a.txt", "link"], "a copy into itself ends");

    let err = t.copy(&r.join("missing"), &r.join("x")).await.unwrap_err();
    assert!(matches!(err, TransportError::Missing(_)), "{err}");
    let err = t.copy(&r.join("f.txt"), &r.join("f.txt")).await.unwrap_err();
    assert!(err.to_string().contains("onto itself"), "{err}");
    let err = t.copy(&r.join("*.txt"), &r.join("nowhere")).await.unwrap_err();
    assert!(matches!(err, TransportError::Missing(_)), "{err}");
    fs::create_dir(r.join("globbed")).unwrap();
    t.copy(&r.join("*.txt"), &r.join("globbed")).await.unwrap();
    assert_eq!(t.listdir(&r.join("globbed")).await.unwrap(), ["f.txt", "g.txt"]);
}

#[tokio::test]
async fn put_follows_links_and_copies_permissions() {
    let (remote, t) = transport();
    let local = tempfile::tempdir().unwrap();
    let (l, r) = (local.path(), remote.path());
    write(&l.join("tree/run.sh"), "#!/bin/sh\n");
    fs::set_permissions(l.join("tree/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink(l.join("tree/run.sh"), l.join("tree/link.sh")).unwrap();
    t.put(&l.join("tree"), &r.join("tree")).await.unwrap();
    assert!(!r.join("tree/link.sh").is_symlink(), "put dereferences");
    assert_eq!(read(&r.join("tree/link.sh")), "#!/bin/sh\n");
    assert_eq!(fs::metadata(r.join("tree/run.sh")).unwrap().permissions().mode() & 0o777, 0o750);
}

#[tokio::test]
async fn symlink_links_a_path_or_each_match() {
    let (remote, t) = transport();
    let r = remote.path();
    write(&r.join("data/a.upf"), "a");
    write(&r.join("data/b.upf"), "b");
    fs::create_dir(r.join("calc")).unwrap();

    t.symlink(&r.join("data/a.upf"), &r.join("calc/a")).await.unwrap();
    assert_eq!(read(&r.join("calc/a")), "a");
    t.symlink(Path::new("../data/b.upf"), &r.join("calc/b")).await.unwrap();
    assert_eq!(fs::read_link(r.join("calc/b")).unwrap(), Path::new("../data/b.upf"), "the target as given");
    let err = t.symlink(&r.join("data/a.upf"), &r.join("calc/a")).await.unwrap_err();
    assert!(matches!(err, TransportError::Exists(_)), "{err}");

    fs::create_dir(r.join("pseudos")).unwrap();
    t.symlink(&r.join("data/*.upf"), &r.join("pseudos")).await.unwrap();
    assert_eq!(t.listdir(&r.join("pseudos")).await.unwrap(), ["a.upf", "b.upf"]);
    assert_eq!(fs::read_link(r.join("pseudos/b.upf")).unwrap(), r.join("data/b.upf"));
}

#[tokio::test]
async fn folders_are_listed_sorted_globbed_created_and_removed() {
    let (remote, t) = transport();
    let r = remote.path();
    for name in ["c", "a", "B", ".aiida"] {
        write(&r.join("d").join(name), name);
    }
    assert_eq!(t.listdir(&r.join("d")).await.unwrap(), [".aiida", "B", "a", "c"]);
    assert_eq!(t.listdir(Path::new("d")).await.unwrap().len(), 4, "relative to home");
    let err = t.listdir(&r.join("missing")).await.unwrap_err();
    assert!(matches!(err, TransportError::Missing(_)), "{err}");
    assert_eq!(t.glob(&r.join("d/[a-c]")).await.unwrap(), [r.join("d/a"), r.join("d/c")]);
    assert_eq!(t.glob(Path::new("d/*")).await.unwrap().len(), 3, "relative, hidden names left out");

    t.mkdir(&r.join("new"), false).await.unwrap();
    let err = t.mkdir(&r.join("new"), false).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} exists already", r.join("new").display()));
    t.mkdir(&r.join("new"), true).await.unwrap();
    let err = t.mkdir(&r.join("d/a"), true).await.unwrap_err();
    assert!(matches!(err, TransportError::Exists(_)), "a file is no folder: {err}");
    let err = t.mkdir(&r.join("x/y"), false).await.unwrap_err();
    assert!(err.to_string().starts_with("cannot create the folder"), "{err}");

    t.makedirs(&r.join("x/y/z"), false).await.unwrap();
    assert!(t.is_dir(&r.join("x/y/z")).await.unwrap());
    let err = t.makedirs(&r.join("x/y/z"), false).await.unwrap_err();
    assert!(matches!(err, TransportError::Exists(_)), "{err}");
    t.makedirs(&r.join("x/y/z"), true).await.unwrap();
    let err = t.makedirs(&r.join("d/a"), true).await.unwrap_err();
    assert!(matches!(err, TransportError::Exists(_)), "{err}");

    symlink(r.join("d"), r.join("x/link")).unwrap();
    t.rmtree(&r.join("x/link")).await.unwrap();
    assert!(r.join("d/a").exists(), "removing a link leaves its target");
    t.rmtree(&r.join("x")).await.unwrap();
    assert!(!r.join("x").exists());
    t.rmtree(&r.join("x")).await.unwrap();
    t.rmtree(&r.join("d/a")).await.unwrap();
    assert!(!r.join("d/a").exists(), "a file is removed too");
}

#[tokio::test]
async fn rename_needs_a_source_and_a_free_destination() {
    let (remote, t) = transport();
    let r = remote.path();
    write(&r.join("old"), "o");
    write(&r.join("taken"), "t");
    t.rename(&r.join("old"), &r.join("new")).await.unwrap();
    assert_eq!(read(&r.join("new")), "o");
    let err = t.rename(&r.join("old"), &r.join("other")).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} does not exist", r.join("old").display()));
    let err = t.rename(&r.join("new"), &r.join("taken")).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} exists already", r.join("taken").display()));
    assert_eq!(read(&r.join("taken")), "t");
}

#[tokio::test]
async fn paths_are_tested_and_their_modes_set() {
    let (remote, t) = transport();
    let r = remote.path();
    write(&r.join("f"), "f");
    symlink(r.join("nothing"), r.join("dangling")).unwrap();
    assert!(t.path_exists(&r.join("f")).await.unwrap());
    assert!(!t.path_exists(&r.join("missing")).await.unwrap());
    assert!(!t.path_exists(&r.join("f/below")).await.unwrap());
    assert!(!t.path_exists(&r.join("dangling")).await.unwrap(), "links are followed");
    assert!(!t.path_exists(Path::new("")).await.unwrap());
    assert!(t.is_dir(r).await.unwrap());
    assert!(!t.is_dir(&r.join("f")).await.unwrap());
    assert!(!t.is_dir(Path::new("")).await.unwrap());

    t.chmod(&r.join("f"), 0o640).await.unwrap();
    assert_eq!(fs::metadata(r.join("f")).unwrap().permissions().mode() & 0o777, 0o640);
    let err = t.chmod(&r.join("missing"), 0o640).await.unwrap_err();
    assert!(matches!(err, TransportError::Missing(_)), "{err}");
}

#[tokio::test]
async fn commands_run_in_bash_in_the_workdir_or_home() {
    let (remote, t) = transport();
    let r = remote.path();
    fs::create_dir(r.join("work")).unwrap();

    let out = t.exec_command_wait("echo $0; pwd; echo oops >&2; exit 3", Some(&r.join("work")), None).await.unwrap();
    assert_eq!(out.retval, 3);
    assert_eq!(out.stdout_text(), format!("bash\n{}\n", r.join("work").display()));
    assert_eq!(out.stderr_text(), "oops\n");
    let out = t.exec_command_wait("pwd", None, None).await.unwrap();
    assert_eq!(out.stdout_text().trim(), r.display().to_string(), "home without a workdir");
    let out = t.exec_command_wait("pwd", Some(Path::new("work")), None).await.unwrap();
    assert_eq!(out.stdout_text().trim(), r.join("work").display().to_string(), "a relative workdir");

    let out = t.exec_command_wait("tr a-z A-Z", None, Some(b"it's quoted\n")).await.unwrap();
    assert_eq!(out.stdout_text(), "IT'S QUOTED\n");
    let big = vec![b'x'; 4 << 20];
    let out = t.exec_command_wait("cat; cat >&2 <<< done", None, Some(&big)).await.unwrap();
    assert_eq!((out.stdout.len(), out.stderr_text().as_str()), (big.len(), "done\n"), "no pipe deadlock");
    let out = t.exec_command_wait("true", None, Some(&big)).await.unwrap();
    assert_eq!(out.retval, 0, "input the command does not read is no error");
    let out = t.exec_command_wait("cat", None, None).await.unwrap();
    assert_eq!(out.stdout, b"", "without input, stdin is empty");

    let out = t.exec_command_wait("ps -o pgid= -p $$; echo $$", None, None).await.unwrap();
    let text = out.stdout_text();
    let ids: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(ids[0], ids[1], "the command leads its own process group");
    let out = t.exec_command_wait("shopt -q login_shell", None, None).await.unwrap();
    assert_eq!(out.retval, 1, "no login shell");
}

#[tokio::test]
async fn a_login_shell_is_the_default() {
    let t = LocalTransportType.open_local(&Map::new()).unwrap();
    let out = t.exec_command_wait("shopt -q login_shell && echo $0", None, None).await.unwrap();
    assert_eq!((out.retval, out.stdout_text().as_str()), (0, "bash\n"));
    assert!(!t.whoami().await.unwrap().is_empty());
}

#[tokio::test]
async fn commands_fail_clearly_without_their_workdir() {
    let (remote, t) = transport();
    let r = remote.path();
    let err = t.exec_command_wait("true", Some(&r.join("missing")), None).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} does not exist", r.join("missing").display()));
    write(&r.join("file"), "");
    let err = t.exec_command_wait("true", Some(&r.join("file")), None).await.unwrap_err();
    assert!(err.to_string().contains("not a folder"), "{err}");
    let out = t.exec_command_wait("no-such-command-here", None, None).await.unwrap();
    assert_eq!(out.retval, 127);
    assert!(out.stderr_text().contains("no-such-command-here: command not found"), "{}", out.stderr_text());
}
