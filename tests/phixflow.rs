//! PhixFlow end to end on SQLite and PostgreSQL: hub records reach the fake actionflows in
//! both API modes, a failed record is kept with its message and retried, the rest succeed.

mod common;

use common::{backends, connection, counts, engine, org, Opts};
use ferry_connectors::phixflow::fake::FakePhixFlow;
use ferry_connectors::phixflow::Mode;

use ferry_framework::sandbox::{Fault, Target};
use ferry_framework::sync::SyncOptions;
use serde_json::json;

#[tokio::test]
async fn hub_records_reach_the_actionflows_and_failures_are_retried() {
    for mode in [Mode::Wait, Mode::Poll] {
        // A fresh database per mode: each starts from an empty hub.
        let dir = tempfile::tempdir().unwrap();
        for url in backends(dir.path()) {
            let e = engine(&url, &Opts::default());
            let fake = FakePhixFlow::new();
            fake.set_mode("Sync People", mode);
            fake.set_mode("Sync Organizations", mode);
            let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let conn = connection(
                "phixflow",
                "phixflow",
                FakePhixFlow::settings(addr, mode),
                &["organization", "person"],
                Default::default(),
            );
            let o = org(vec![conn.clone()]);
            let p = e.prepare(&o, &conn, Some(FakePhixFlow::secrets())).unwrap();
            let put = |entity: &str, uid: Option<&str>, data: serde_json::Value| {
                e.store
                    .hub_put(&e.hub, p.org_id, entity, uid, data, None)
                    .unwrap()
            };
            let acme = put("Organization", None, json!({"name": "Acme AS"}));
            put(
                "Person",
                None,
                json!({"first_name": "Kari", "email": "kari@acme.example", "organization_id": acme}),
            );
            let bad = put(
                "Person",
                None,
                json!({"first_name": "FAIL me", "email": "x@acme.example"}),
            );
            put(
                "Person",
                None,
                json!({"first_name": "Ola", "email": "ola@acme.example"}),
            );

            let r = e.run(&p, &SyncOptions::default(), &|_| {}).await.unwrap();
            assert_eq!(r.status.as_str(), "partial", "{mode:?}: {r:?}");
            let people = counts(&r, "person");
            assert_eq!(
                (people.created_in_app, people.errors),
                (2, 1),
                "{mode:?}: {r:?}"
            );
            assert_eq!(counts(&r, "organization").created_in_app, 1);
            let received = fake.records("Sync People");
            assert_eq!(received.len(), 2, "{received:?}");
            let kari = received.iter().find(|r| r["first_name"] == "Kari").unwrap();
            let org_rec = &fake.records("Sync Organizations")[0];
            assert_eq!(
                kari["organization_id"], org_rec["ferry_id"],
                "the reference is PhixFlow's id"
            );
            let maps = e.store.idmaps_of(&[p.connection_id]).unwrap();
            let failed = maps
                .iter()
                .find(|m| m.hub_id.as_deref() == Some(bad.as_str()))
                .unwrap();
            let err = failed.last_error.as_deref().unwrap();
            assert!(err.contains("rejected by the actionflow"), "{err}");
            assert_eq!(failed.retry_to.as_deref(), Some("external"));
            if mode == Mode::Poll {
                assert!(fake.calls("status") >= 3, "the outcome was polled");
            }

            // The record is fixed in the hub: the next run sends it, and only it.
            let before = fake.calls("trigger");
            put(
                "Person",
                Some(&bad),
                json!({"first_name": "Fixed", "email": "x@acme.example"}),
            );
            let r = e.run(&p, &SyncOptions::default(), &|_| {}).await.unwrap();
            assert_eq!(r.status.as_str(), "success", "{r:?}");
            assert_eq!(fake.calls("trigger"), before + 1);
            assert_eq!(fake.records("Sync People").len(), 3);

            // An update goes to the same record; an idle run sends nothing.
            put(
                "Person",
                Some(&bad),
                json!({"first_name": "Fixed", "last_name": "Again", "email": "x@acme.example"}),
            );
            e.run(&p, &SyncOptions::default(), &|_| {}).await.unwrap();
            let people = fake.records("Sync People");
            assert_eq!(people.len(), 3);
            assert!(people.iter().any(|r| r["last_name"] == "Again"));
            let before = fake.calls("trigger");
            let r = e.run(&p, &SyncOptions::default(), &|_| {}).await.unwrap();
            assert!(r.entities.iter().all(|x| x.counts.writes() == 0), "{r:?}");
            assert_eq!(fake.calls("trigger"), before);
        }
    }
}

/// A create whose answer was lost is sent again with the same `ferry_id` (the hub
/// record's id, its idempotency key), so the actionflow, which upserts by it, holds the
/// record once.
#[tokio::test]
async fn a_create_whose_answer_was_lost_is_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = engine(&url, &Opts::default());
        let fake = FakePhixFlow::new();
        let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let conn = connection(
            "phixflow",
            "phixflow",
            FakePhixFlow::settings(addr, Mode::Wait),
            &["organization"],
            Default::default(),
        );
        let o = org(vec![conn.clone()]);
        let p = e.prepare(&o, &conn, Some(FakePhixFlow::secrets())).unwrap();
        let uid = e
            .store
            .hub_put(
                &e.hub,
                p.org_id,
                "Organization",
                None,
                json!({"name": "Acme AS"}),
                None,
            )
            .unwrap();
        // The actionflow stores the record, and its answer never arrives: the client
        // sends it again.
        fake.fail_next(Target::Kind("trigger"), Fault::StoreThenFail(500));
        let r = e.run(&p, &SyncOptions::default(), &|_| {}).await.unwrap();
        assert!(!r.has_errors(), "{r:?}");
        assert_eq!(fake.calls("trigger"), 2, "the create went twice");
        // A later run sends nothing more.
        e.run(&p, &SyncOptions::default(), &|_| {}).await.unwrap();
        let got = fake.records("Sync Organizations");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["ferry_id"], json!(uid));
    }
}
