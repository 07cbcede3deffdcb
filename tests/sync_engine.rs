//! End-to-end behaviour of the sync engine against the fake SuperOffice, on SQLite and (when
//! FERRY_TEST_POSTGRES_URL is set) PostgreSQL.

mod common;

use common::Hub as _;

use chrono::{Duration, SubsecRound, Utc};
use common::{backends, env, Opts};
use ferry_connectors::superoffice::fake::{Fault, Target};
use ferry_framework::config::ConflictPolicy;
use ferry_framework::store::idmaps::{IdMapFilter, LinkState};
use ferry_framework::sync::SyncOptions;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn two_way_sync_links_both_sides_and_an_idle_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        let nordic = e
            .fake
            .add_contact("Nordic Freight AS", "NO1", "https://nordic.example");
        e.fake
            .add_person("Ingrid", "Solberg", "Ingrid@Nordic.example", Some(nordic));
        let harbour = e.put("Organization", None, json!({"name": "Harbour Ltd"}));
        e.put("Person", None, json!({"first_name": "Nora", "last_name": "Dahl", "email": "nora@harbour.example", "organization_id": harbour}));

        let r = e.sync().await;
        assert!(!r.has_errors(), "{r:?}");
        // SuperOffice -> hub, with the transform and the reference translated.
        let org = e
            .hub_named("Organization", "name", "Nordic Freight AS")
            .expect("contact reached the hub");
        assert_eq!(org.data["website"], "https://nordic.example");
        let ingrid = e
            .hub_named("Person", "first_name", "Ingrid")
            .expect("person reached the hub");
        assert_eq!(ingrid.data["email"], "ingrid@nordic.example");
        assert_eq!(ingrid.data["organization_id"], org.uid.as_str());
        // hub -> SuperOffice, the person under the right company.
        let contact = e
            .fake
            .contacts()
            .into_iter()
            .find(|c| c["Name"] == "Harbour Ltd")
            .expect("hub org reached SuperOffice");
        let nora = e
            .fake
            .persons()
            .into_iter()
            .find(|p| p["Firstname"] == "Nora")
            .expect("hub person reached SuperOffice");
        assert_eq!(nora["Contact"]["ContactId"], contact["ContactId"]);
        assert_eq!(
            e.idmaps()
                .iter()
                .filter(|m| m.state() == LinkState::Linked)
                .count(),
            4
        );

        // Updates both ways.
        e.fake
            .edit("Contact", nordic, json!({"Name": "Nordic Freight Group"}));
        let mut data = e.hub_named("Person", "first_name", "Nora").unwrap().data;
        data["job_title"] = json!("CEO");
        let nora_uid = e.hub_named("Person", "first_name", "Nora").unwrap().uid;
        e.put("Person", Some(&nora_uid), data);
        let writes = e.fake.writes();
        let r = e.sync().await;
        assert!(!r.has_errors());
        assert!(e
            .hub_named("Organization", "name", "Nordic Freight Group")
            .is_some());
        assert!(e
            .fake
            .persons()
            .iter()
            .any(|p| p["Firstname"] == "Nora" && p["Title"] == "CEO"));
        assert_eq!(
            e.fake.writes() - writes,
            1,
            "exactly the one hub change was written out"
        );

        // Idle: nothing written anywhere.
        let (writes, seq) = (e.fake.writes(), e.hub_seq());
        let r = e.sync().await;
        assert_eq!(e.fake.writes(), writes, "idle run wrote to SuperOffice");
        assert_eq!(e.hub_seq(), seq, "idle run wrote to the hub");
        assert!(r.entities.iter().all(|x| x.counts.writes() == 0));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ferrys_own_write_to_superoffice_is_not_echoed_back_to_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        e.put(
            "Organization",
            None,
            json!({"name": "Echo Ltd", "org_number": "42"}),
        );
        let r = e.sync().await;
        assert_eq!(e.counts(&r, "organization").created_in_app, 1);
        let seq = e.hub_seq();
        // The next run reads the record Ferry wrote (it changed in SuperOffice) and skips it.
        let r = e.sync().await;
        let c = e.counts(&r, "organization");
        assert!(c.fetched >= 1);
        assert_eq!(c.updated_in_hub + c.created_in_hub, 0);
        assert_eq!(e.hub_seq(), seq);
    }
}

async fn conflict_case(
    url: &str,
    policy: ConflictPolicy,
    hub_offset: i64,
    app_offset: i64,
) -> (String, String) {
    let e = env(
        url,
        Opts {
            conflict: policy,
            ..Opts::default()
        },
    )
    .await;
    let id = e.fake.add_contact("Original", "", "");
    e.sync().await;
    let uid = e.hub_named("Organization", "name", "Original").unwrap().uid;
    let base = Utc::now().trunc_subsecs(0) + Duration::seconds(30);
    e.engine
        .store
        .hub_put(
            &e.engine.hub,
            e.org_id(),
            "Organization",
            Some(&uid),
            json!({"name": "From hub"}),
            Some(base + Duration::seconds(hub_offset)),
        )
        .unwrap();
    e.fake.set_clock(Some(base + Duration::seconds(app_offset)));
    e.fake.edit("Contact", id, json!({"Name": "From app"}));
    e.fake.set_clock(None);
    let r = e.sync().await;
    assert_eq!(e.counts(&r, "organization").conflicts, 1, "{r:?}");
    let hub = e
        .engine
        .store
        .hub_get(e.org_id(), &uid)
        .unwrap()
        .unwrap()
        .data["name"]
        .as_str()
        .unwrap()
        .to_string();
    let app = e.fake.contact(id).unwrap()["Name"]
        .as_str()
        .unwrap()
        .to_string();
    (hub, app)
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicts_are_settled_by_the_entity_policy() {
    let app = ("From app".to_string(), "From app".to_string());
    let hub = ("From hub".to_string(), "From hub".to_string());
    // (policy, hub change offset, app change offset, expected (hub, app) names)
    let cases = [
        (ConflictPolicy::Newest, 0, 10, &app), // the application changed last
        (ConflictPolicy::Newest, 10, 0, &hub), // the hub changed last
        (ConflictPolicy::Newest, 5, 5, &app),  // a tie goes to the external side
        (ConflictPolicy::Hub, 0, 10, &hub),    // preemption overrides the clocks
        (ConflictPolicy::External, 10, 0, &app),
    ];
    for (policy, hub_at, app_at, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        for url in backends(dir.path()) {
            let got = conflict_case(&url, policy, hub_at, app_at).await;
            assert_eq!(&got, expected, "{policy:?} hub+{hub_at}s app+{app_at}s");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_whose_company_is_not_linked_yet_is_deferred_then_linked() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        let c = e.fake.add_contact("Later AS", "", "");
        e.fake
            .add_person("Per", "Son", "per@later.example", Some(c));
        let r = e
            .sync_with(SyncOptions {
                entities: vec!["person".into()],
                ..Default::default()
            })
            .await;
        assert_eq!(e.counts(&r, "person").deferred, 1);
        assert!(e.hub("Person").is_empty(), "nothing half-linked in the hub");
        let m = e
            .idmaps()
            .into_iter()
            .find(|m| m.hub_entity == "Person")
            .expect("the deferral is recorded");
        assert_eq!(m.state(), LinkState::Deferred);
        assert!(m.last_error.unwrap().contains("not linked yet"));

        let r = e.sync().await;
        assert!(!r.has_errors(), "{r:?}");
        let org = e.hub_named("Organization", "name", "Later AS").unwrap();
        let per = e
            .hub_named("Person", "first_name", "Per")
            .expect("deferred person arrives");
        assert_eq!(per.data["organization_id"], org.uid.as_str());
        assert!(e
            .idmaps()
            .iter()
            .all(|m| m.state() == LinkState::Linked && m.retry_to.is_none()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_after_the_external_create_never_duplicates_the_record() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        e.put("Organization", None, json!({"name": "Crash Safe AS"}));
        // SuperOffice stores the contact, then the connection breaks before Ferry hears back.
        e.fake.fail_next(Target::Create, Fault::StoreThenFail(500));
        let r = e.sync().await;
        assert_eq!(e.counts(&r, "organization").errors, 1);
        assert_eq!(
            e.fake.calls("create"),
            1,
            "a create is never retried blindly"
        );
        let m = e.idmaps().pop().unwrap();
        assert_eq!(m.state(), LinkState::PendingCreate);

        let r = e.sync().await;
        assert!(!r.has_errors(), "{r:?}");
        let same: Vec<_> = e
            .fake
            .contacts()
            .into_iter()
            .filter(|c| c["Name"] == "Crash Safe AS")
            .collect();
        assert_eq!(same.len(), 1, "no duplicate after the retry");
        let m = e.idmaps().pop().unwrap();
        assert_eq!(m.state(), LinkState::Linked);
        assert_eq!(
            m.external_id.as_deref(),
            Some(same[0]["ContactId"].to_string().as_str())
        );
    }
}

/// Five SuperOffice companies that a first sync lists in pages of 2, 2 and 1.
async fn five_companies_in_pages_of_two(url: &str) -> common::Env {
    let e = env(
        url,
        Opts {
            first_sync_batch_size: 2,
            ..Opts::default()
        },
    )
    .await;
    for i in 0..5 {
        e.fake.add_contact(&format!("Company {i}"), "", "");
    }
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn id_maps_are_read_page_by_page_with_the_operators_filters() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = five_companies_in_pages_of_two(&url).await;
        e.fake.add_person("Solo", "Person", "", None);
        assert!(!e.sync().await.has_errors());
        let conns = [e.prepared.connection_id];
        let store = &e.engine.store;
        // Pages of two, each after the last id seen, give every id map once, in id order.
        let (mut after, mut seen) = (0, Vec::new());
        loop {
            let page = store
                .idmaps_after(&IdMapFilter::all(&conns), after, 2)
                .unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = last.id;
            seen.extend(page.into_iter().map(|m| m.id));
        }
        let mut all: Vec<i64> = e.idmaps().into_iter().map(|m| m.id).collect();
        all.sort();
        assert_eq!(seen, all);
        assert_eq!(seen.len(), 6);
        assert_eq!(store.idmaps_count(&IdMapFilter::all(&conns)).unwrap(), 6);
        let persons = IdMapFilter {
            hub_entity: Some("Person"),
            ..IdMapFilter::all(&conns)
        };
        let solo = store.idmaps_after(&persons, 0, 10).unwrap();
        assert_eq!(solo.len(), 1);
        assert_eq!(solo[0].name.as_deref(), Some("Solo Person"));
        let failed = IdMapFilter {
            errors_only: true,
            ..IdMapFilter::all(&conns)
        };
        assert_eq!(store.idmaps_count(&failed).unwrap(), 0);
        // Another organization's connection sees none of them.
        assert!(store
            .idmaps_after(&IdMapFilter::all(&[conns[0] + 1]), 0, 10)
            .unwrap()
            .is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_sync_reads_in_batches_and_a_partial_run_leaves_other_cursors_alone() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = five_companies_in_pages_of_two(&url).await;
        e.fake.add_person("Solo", "Person", "", None);
        let r = e
            .sync_with(SyncOptions {
                entities: vec!["organization".into()],
                ..Default::default()
            })
            .await;
        assert_eq!(e.counts(&r, "organization").created_in_hub, 5);
        assert_eq!(e.fake.calls("list"), 3, "pages of 2, 2 and 1");
        let cursors = e.engine.store.cursors_of(e.prepared.connection_id).unwrap();
        assert_eq!(
            cursors
                .iter()
                .map(|c| c.entity.as_str())
                .collect::<Vec<_>>(),
            vec!["organization"]
        );

        e.sync().await;
        let before = e.engine.store.cursors_of(e.prepared.connection_id).unwrap();
        e.sync_with(SyncOptions {
            entities: vec!["person".into()],
            ..Default::default()
        })
        .await;
        let after = e.engine.store.cursors_of(e.prepared.connection_id).unwrap();
        let org = |v: &Vec<ferry_framework::store::runs::Cursor>| {
            v.iter().find(|c| c.entity == "organization").cloned()
        };
        assert_eq!(
            org(&before),
            org(&after),
            "the organization cursor did not move"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_sync_reads_past_the_cursor_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        // Registered an hour ago: outside the lookback of a later run, by either date.
        e.fake.set_clock(Some(Utc::now() - Duration::hours(1)));
        let id = e.fake.add_contact("Old Name", "", "");
        e.fake.set_clock(None);
        e.put("Organization", None, json!({"name": "Planned AS"}));

        // Dry run: the plan names both directions, nothing is written anywhere.
        let r = e
            .sync_with(SyncOptions {
                dry_run: true,
                ..Default::default()
            })
            .await;
        assert!(
            r.plan.iter().any(|l| l.contains("hub: create")),
            "{:?}",
            r.plan
        );
        assert!(
            r.plan.iter().any(|l| l.contains("create Contact")),
            "{:?}",
            r.plan
        );
        assert_eq!(e.fake.writes(), 0);
        assert_eq!(e.hub("Organization").len(), 1);
        assert!(e.idmaps().is_empty());
        assert!(e
            .engine
            .store
            .cursors_of(e.prepared.connection_id)
            .unwrap()
            .is_empty());
        assert!(e
            .engine
            .store
            .runs_of(e.prepared.connection_id, 10)
            .unwrap()
            .is_empty());

        // A company registered now moves the watermark past the hour-old one.
        e.fake.add_contact("Recent AS", "", "");
        e.sync().await;
        // A change stamped long before the cursor (a restored backup, a clock fix) is missed
        // by an incremental run and caught by --full.
        e.fake.set_clock(Some(Utc::now() - Duration::days(2)));
        e.fake.edit("Contact", id, json!({"Name": "Backdated"}));
        e.fake.set_clock(None);
        e.sync().await;
        assert!(e.hub_named("Organization", "name", "Backdated").is_none());
        let r = e
            .sync_with(SyncOptions {
                full: true,
                ..Default::default()
            })
            .await;
        assert_eq!(e.counts(&r, "organization").updated_in_hub, 1);
        assert!(e.hub_named("Organization", "name", "Backdated").is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_from_the_api_are_recorded_and_do_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        let bad = e.fake.add_contact("placeholder", "", "");
        e.fake
            .edit("Contact", bad, json!({"Name": {"unexpected": "object"}}));
        let typed = e.fake.add_contact("Typed AS", "", "");
        e.fake.edit(
            "Contact",
            typed,
            json!({"UserDefinedFields": {"SuperOffice:1": 42}}),
        );
        e.fake.add_contact("Good AS", "", "");
        let r = e.sync().await;
        let c = e.counts(&r, "organization");
        assert_eq!(c.errors, 2, "{r:?}");
        assert_eq!(c.created_in_hub, 1);
        assert!(r.has_errors());
        let errors: Vec<String> = e
            .idmaps()
            .into_iter()
            .filter_map(|m| m.last_error)
            .collect();
        assert!(
            errors.iter().any(|m| m.contains("field `name`")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|m| m.contains("field `industry`") && m.contains(&format!("Contact {typed}"))),
            "{errors:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_and_expired_tokens_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        e.fake.add_contact("Patient AS", "", "");
        e.sync().await;
        e.fake.expire_tokens();
        e.fake.fail_next(Target::List, Fault::Status(429));
        e.put("Organization", None, json!({"name": "After Refresh AS"}));
        let r = e.sync().await;
        assert!(!r.has_errors(), "{r:?}");
        assert!(
            e.fake.calls("token") >= 2,
            "the expired token was refreshed"
        );
        assert!(e
            .fake
            .contacts()
            .iter()
            .any(|c| c["Name"] == "After Refresh AS"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failing_entity_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        e.fake.add_contact("Still Synced AS", "", "");
        e.fake.add_person("Never", "Listed", "", None);
        // The person list fails on every attempt (the harness allows one retry).
        let r = e
            .sync_with(SyncOptions {
                entities: vec!["organization".into()],
                ..Default::default()
            })
            .await;
        assert!(!r.has_errors());
        e.fake
            .fail_next(Target::ListOf("Person"), Fault::Status(500));
        e.fake
            .fail_next(Target::ListOf("Person"), Fault::Status(500));
        e.put("Organization", None, json!({"name": "Pushed Anyway AS"}));
        let r = e.sync().await;
        assert_eq!(r.status.as_str(), "partial", "{r:?}");
        let failed: Vec<_> = r.entities.iter().filter(|x| x.error.is_some()).collect();
        assert_eq!(failed.len(), 1, "{r:?}");
        assert!(e
            .fake
            .contacts()
            .iter()
            .any(|c| c["Name"] == "Pushed Anyway AS"));
        let run = e
            .engine
            .store
            .runs_of(e.prepared.connection_id, 1)
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(run.status, "partial");
        assert!(run.message.unwrap().contains("HTTP 500"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_that_fails_midway_keeps_the_pages_before_it_and_finishes_next_time() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = five_companies_in_pages_of_two(&url).await;
        // Page 1 answers; page 2 fails on both attempts the harness allows.
        e.fake.fail_next(
            Target::List,
            Fault::Delay(std::time::Duration::from_millis(1)),
        );
        e.fake.fail_next(Target::List, Fault::Status(500));
        e.fake.fail_next(Target::List, Fault::Status(500));
        let only_orgs = || SyncOptions {
            entities: vec!["organization".into()],
            ..Default::default()
        };
        let r = e.sync_with(only_orgs()).await;
        assert_eq!(r.status.as_str(), "error", "{r:?}");
        assert_eq!(e.hub("Organization").len(), 2, "page 1 is kept");

        let r = e.sync_with(only_orgs()).await;
        assert_eq!(r.status.as_str(), "success", "{r:?}");
        let mut names: Vec<String> = e
            .hub("Organization")
            .iter()
            .map(|h| h.data["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        let expected: Vec<String> = (0..5).map(|i| format!("Company {i}")).collect();
        assert_eq!(names, expected, "all five, none twice");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_of_one_connection_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = env(&url, Opts::default()).await;
        let cid = e.prepared.connection_id;
        assert!(e
            .engine
            .store
            .acquire_lease(cid, "other-worker", 60)
            .unwrap());
        let err = e
            .engine
            .run(&e.prepared, &SyncOptions::default(), &|_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already being synced"), "{err}");
        assert_eq!(e.fake.calls("list"), 0);
        // A crashed holder's lease expires and the next run proceeds.
        assert!(e
            .engine
            .store
            .acquire_lease(cid, "other-worker", -1)
            .unwrap());
        assert!(!e.sync().await.has_errors());
        // The run released its lease.
        assert!(e
            .engine
            .store
            .acquire_lease(cid, "third-worker", 60)
            .unwrap());
    }
}
