//! The `ferry` binary: exit codes, bad-input messages and the demo.

use std::path::Path;
use std::process::{Command, Output};

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(dir)
        .args(args)
        .env_remove("FERRY_SETTINGS")
        .env(
            "FERRY_SECRET_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("SUPEROFFICE_CLIENT_SECRET", "x")
        .env("SUPEROFFICE_REFRESH_TOKEN", "y")
        .output()
        .unwrap()
}

/// A copy of the shipped config in a temp dir, for tests that break it.
fn workspace() -> tempfile::TempDir {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for d in ["config/organizations", "mappers/superoffice"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    for f in [
        "settings.yml",
        "config/hub.yml",
        "config/organizations/acme.yml",
        "mappers/superoffice/contact.yml",
        "mappers/superoffice/person.yml",
    ] {
        std::fs::copy(repo.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn malformed_settings_exit_2_naming_the_file() {
    let dir = workspace();
    std::fs::write(
        dir.path().join("settings.yml"),
        "database:\n  url: x.db\n  pool: 3\n",
    )
    .unwrap();
    let o = ferry(dir.path(), &["sync"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("settings.yml"), "{}", stderr(&o));
    assert!(stderr(&o).contains("pool"), "{}", stderr(&o));
}

#[test]
fn unknown_mapping_field_exits_2_with_file_line_and_field_and_writes_nothing() {
    let dir = workspace();
    let p = dir.path().join("mappers/superoffice/person.yml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("hub: job_title", "hub: job_titel");
    std::fs::write(&p, text).unwrap();
    let o = ferry(dir.path(), &["sync"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("person.yml:12"), "{err}");
    assert!(err.contains("job_titel"), "{err}");
    assert!(
        !dir.path().join(".ferry/ferry.db").exists() || {
            let o = ferry(dir.path(), &["status", "--json"]);
            String::from_utf8_lossy(&o.stdout).trim() == "[]"
        }
    );
}

#[test]
fn unknown_transform_exits_2() {
    let dir = workspace();
    let p = dir.path().join("mappers/superoffice/contact.yml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("to_hub: trim", "to_hub: trimm");
    std::fs::write(&p, text).unwrap();
    let o = ferry(dir.path(), &["sync"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown transform `trimm`"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("contact.yml:"), "{}", stderr(&o));
}

#[test]
fn a_missing_secret_names_its_environment_variable() {
    let dir = workspace();
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(dir.path())
        .args(["sync"])
        .env_remove("SUPEROFFICE_CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("SUPEROFFICE_CLIENT_SECRET"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn connectors_lists_superoffice_with_its_entities() {
    let dir = workspace();
    let o = ferry(dir.path(), &["connectors"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("superoffice")
            && out.contains("Contact")
            && out.contains("read, create, update"),
        "{out}"
    );
}

#[test]
fn the_demo_syncs_both_ways_and_ends_with_an_idle_run() {
    let dir = workspace();
    let o = ferry(dir.path(), &["demo"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(
        out.contains("Contact 7 \"Harbour Logistics Ltd\"")
            || out.contains("\"Harbour Logistics Ltd\""),
        "{out}"
    );
    assert!(out.contains("Nordic Freight AS Group"), "{out}");
    assert!(out.contains("Head of Sales"), "{out}");
    assert!(
        out.contains("writes to superoffice: 0, hub changes: 0"),
        "{out}"
    );
    // The demo's database is a real one the other commands can read.
    std::fs::write(
        dir.path().join("demo-settings.yml"),
        "database:\n  url: .ferry/demo.db\n",
    )
    .unwrap();
    let o = ferry(
        dir.path(),
        &[
            "--settings",
            "demo-settings.yml",
            "idmaps",
            "--org",
            "demo",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let maps: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(maps.as_array().unwrap().len(), 7);
}

#[test]
fn sync_against_the_sandbox_with_the_shipped_config() {
    let dir = workspace();
    // Point the shipped org at a sandbox on a free port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let p = dir.path().join("config/organizations/acme.yml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("7701", &port.to_string());
    std::fs::write(&p, text).unwrap();
    let mut sandbox = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(dir.path())
        .args([
            "sandbox",
            "superoffice",
            "--seed",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .current_dir(dir.path())
        .args(["sync"])
        .env("SUPEROFFICE_CLIENT_SECRET", "sandbox-client-secret")
        .env("SUPEROFFICE_REFRESH_TOKEN", "sandbox-refresh-token")
        .output()
        .unwrap();
    let dry = ferry(
        dir.path(),
        &[
            "hub", "list", "--org", "acme", "--entity", "Person", "--json",
        ],
    );
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let people: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(people.as_array().unwrap().len(), 3);
    let st = ferry(dir.path(), &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(status[0]["last_run"]["status"], "success");
}
