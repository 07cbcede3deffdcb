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
    std::fs::create_dir_all(dir.path().join("config/organizations")).unwrap();
    for f in [
        "settings.yml",
        "config/hub.yml",
        "config/organizations/acme.yml",
    ] {
        std::fs::copy(repo.join(f), dir.path().join(f)).unwrap();
    }
    for connector in std::fs::read_dir(repo.join("mappers")).unwrap() {
        let connector = connector.unwrap().path();
        let to = dir
            .path()
            .join("mappers")
            .join(connector.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&connector).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
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
    assert!(
        out.contains("workflowmax") && out.contains("client / contact"),
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
    assert!(out.contains("Head of Sales"), "{out}");
    // A person created in SuperOffice is a WorkflowMax Contact under the right Client
    // (whose industry, an empty user-defined field in SuperOffice, is empty).
    assert!(
        out.contains(
            "Client \"Nordic Freight AS Group\" {\"Industry\":\"\"}\n       Contact \"Ingrid Solberg\""
        ),
        "{out}"
    );
    // An edit made in WorkflowMax reached SuperOffice.
    let edited = out
        .split("set the mobile of WorkflowMax Contact \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the demo edits a WorkflowMax contact");
    let in_superoffice = out.rsplit("in superoffice now:").next().unwrap();
    assert!(
        in_superoffice
            .lines()
            .any(|l| l.contains(edited) && l.ends_with("mobile +47 900 00 001")),
        "{edited}: {out}"
    );
    // A person created in WorkflowMax reached SuperOffice.
    assert!(out.contains("Aroha Ngata (Contact "), "{out}");
    // A BlizWork case reached SuperOffice as a company.
    assert!(out.contains("\"Tidewater Marine AS\""), "{out}");
    assert!(
        out.contains("writes to the applications: 0, hub changes: 0"),
        "{out}"
    );
    // PhixFlow, outbound only, received every organization and person.
    assert!(
        out.contains("actionflow \"Sync People\" received \"ingrid@nordicfreight.example\""),
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
    // 5 organizations and 5 persons in SuperOffice, WorkflowMax and PhixFlow; the 5
    // organizations as BlizWork cases.
    assert_eq!(maps.as_array().unwrap().len(), 35);
    let idmaps = |extra: &[&str]| {
        let mut args = vec!["--settings", "demo-settings.yml", "idmaps", "--org", "demo"];
        args.extend(extra);
        let o = ferry(dir.path(), &args);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let json_len = |out: String| {
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    // Filters an operator narrows with: the persons of the three person-holding apps; none
    // failed.
    assert_eq!(json_len(idmaps(&["--entity", "Person", "--json"])), 15);
    assert_eq!(json_len(idmaps(&["--errors", "--json"])), 0);
    assert_eq!(json_len(idmaps(&["--limit", "7", "--json"])), 7);
    // The conflict log reads as JSON and as a table.
    json_len(idmaps(&["--conflicts", "--json"]));
    assert!(idmaps(&["--conflicts"]).contains("winner"));
    // The table says when it shows only part.
    let table = idmaps(&["--limit", "2"]);
    assert!(table.contains("2 of 35 shown"), "{table}");
    assert!(!idmaps(&[]).contains("shown"));
}

#[test]
fn sync_against_the_sandbox_with_the_shipped_config() {
    let dir = workspace();
    // Point the shipped org at sandboxes on free ports.
    let free = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (so_port, wfm_port) = (free(), free());
    let p = dir.path().join("config/organizations/acme.yml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("7701", &so_port.to_string())
        .replace("7702", &wfm_port.to_string());
    std::fs::write(&p, text).unwrap();
    let mut sandboxes: Vec<_> = [("superoffice", so_port), ("workflowmax", wfm_port)]
        .iter()
        .map(|(name, port)| {
            Command::new(env!("CARGO_BIN_EXE_ferry"))
                .current_dir(dir.path())
                .args([
                    "sandbox",
                    name,
                    "--seed",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for port in [so_port, wfm_port] {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let sync = || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .current_dir(dir.path())
            .args(["sync"])
            .env("SUPEROFFICE_CLIENT_SECRET", "sandbox-client-secret")
            .env("SUPEROFFICE_REFRESH_TOKEN", "sandbox-refresh-token")
            .env("WORKFLOWMAX_CLIENT_SECRET", "sandbox-client-secret")
            .env("WORKFLOWMAX_REFRESH_TOKEN", "sandbox-wfm-refresh-token")
            .output()
            .unwrap()
    };
    let first = sync();
    // A second process: the sandbox has rotated the refresh token from the environment
    // away, so this works only with the one the first run stored.
    let second = sync();
    let people = ferry(
        dir.path(),
        &[
            "hub", "list", "--org", "acme", "--entity", "Person", "--json",
        ],
    );
    for s in &mut sandboxes {
        let _ = s.kill();
        let _ = s.wait();
    }
    for o in [&first, &second] {
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(o)
        );
    }
    let people: serde_json::Value = serde_json::from_slice(&people.stdout).unwrap();
    // Three from SuperOffice, one from WorkflowMax.
    assert_eq!(people.as_array().unwrap().len(), 4, "{people}");
    let st = ferry(dir.path(), &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    for conn in status.as_array().unwrap() {
        assert_eq!(conn["last_run"]["status"], "success", "{conn}");
    }
}

#[test]
fn bench_measures_idle_and_changed_syncs() {
    let dir = workspace();
    let out = dir.path().join("bench.json");
    let o = ferry(
        dir.path(),
        &[
            "bench",
            "--sizes",
            "300",
            "--page-size",
            "100",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let r = &v["results"][0];
    assert_eq!(r["records"], 300);
    assert_eq!(
        r["first_sync"]["api_calls"], 4,
        "3 pages, TotalRecords saying how many, and the first read again at the end \
         (a numbered list is read from its end): {r}"
    );
    assert_eq!(r["idle"]["writes"], 0);
    assert_eq!(r["idle"]["hub_changes"], 0);
    assert_eq!(r["idle"]["api_calls"], 1);
    let k = r["changes_each_side"].as_u64().unwrap();
    assert_eq!(r["changed"]["writes"].as_u64(), Some(2 * k), "{r}");
    assert_eq!(
        r["write_floor"]["records"], 300,
        "the write floor writes every record the first sync wrote: {r}"
    );
    assert!(r["write_floor"]["seconds"].as_f64().unwrap() > 0.0);
    assert!(v["machine"]["cpus"].as_u64().unwrap() >= 1);
}
