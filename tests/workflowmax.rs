//! WorkflowMax end to end, on SQLite and PostgreSQL, against the fake WorkflowMax (and the
//! fake SuperOffice for the trip through the hub).

mod common;

use common::Hub as _;

use std::sync::Arc;

use chrono::TimeZone;
use common::{backends, counts, hubbed, quick_limits};
use ferry_connectors::workflowmax::fake::{Fault, Limits, Target};
use ferry_framework::connector::{self, ConnectionContext};
use ferry_framework::entity::PageRequest;
use ferry_framework::http::rate::{RateBudget, RateLimits};
use ferry_framework::http::{ApiStats, TokenStore, Transport};
use ferry_framework::store::idmaps::LinkState;
use serde_json::json;

fn tokens_of(e: &common::Hubbed) -> TokenStore {
    TokenStore::new(
        e.engine.store.clone(),
        e.engine.cipher.clone(),
        e.wfm_conn.connection_id,
    )
}

/// The connector's client for the test connection, as a sync worker opens it.
fn open_client(e: &common::Hubbed) -> Arc<dyn ferry_framework::entity::ExternalClient> {
    connector::find("workflowmax")
        .unwrap()
        .open(ConnectionContext {
            connection_id: e.wfm_conn.connection_id,
            connection_name: "wfm".into(),
            settings: e.wfm_conn.config.settings.clone(),
            secrets: e.wfm_conn.secrets.clone(),
            tokens: tokens_of(e),
            transport: Transport {
                http: reqwest::Client::new(),
                stats: Arc::new(ApiStats::default()),
                budget: Arc::new(RateBudget::new(quick_limits().1)),
                max_retries: 1,
            },
            reads: Default::default(),
        })
        .unwrap()
}

fn contact_names(client: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = client["Contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_client_with_two_contacts_becomes_an_organization_and_two_linked_persons() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = hubbed(&url, false, quick_limits(), json!({})).await;
        let client = e
            .wfm
            .add_client("Harbour Ltd", json!({"Email": "hi@harbour.example"}));
        e.wfm
            .add_contact(
                &client,
                "Aroha Ngata",
                json!({"Email": "Aroha@harbour.example"}),
            )
            .unwrap();
        e.wfm
            .add_contact(&client, "Tane Mahuta", json!({"Mobile": "+64 21 000"}))
            .unwrap();

        let r = e.sync_wfm().await;
        assert_eq!(r.status.as_str(), "success", "{r:?} {:?}", e.wfm_idmaps());
        assert_eq!(counts(&r, "client").created_in_hub, 1);
        assert_eq!(counts(&r, "contact").created_in_hub, 2);
        let org = e.hub_named("Organization", "name", "Harbour Ltd").unwrap();
        assert_eq!(org.data["source"], "workflowmax");
        let aroha = e.hub_named("Person", "first_name", "Aroha").unwrap();
        assert_eq!(aroha.data["last_name"], "Ngata");
        assert_eq!(aroha.data["email"], "aroha@harbour.example");
        assert_eq!(aroha.data["organization_id"], org.uid.as_str());
        let tane = e.hub_named("Person", "first_name", "Tane").unwrap();
        assert_eq!(tane.data["organization_id"], org.uid.as_str());
        let maps = e.wfm_idmaps();
        assert_eq!(maps.len(), 3);
        assert!(maps.iter().all(|m| m.state() == LinkState::Linked));
        let contact_maps: Vec<_> = maps
            .iter()
            .filter(|m| m.external_entity == "Contact")
            .collect();
        assert!(contact_maps
            .iter()
            .all(|m| m.parent().as_deref() == Some(client.as_str())));

        // A person added to that organization in the hub appears under the same Client.
        e.put(
            "Person",
            None,
            json!({"first_name": "Mere", "last_name": "Kahu", "email": "mere@harbour.example",
                   "organization_id": org.uid}),
        );
        // A person without an organization has no place in WorkflowMax.
        e.put(
            "Person",
            None,
            json!({"first_name": "Solo", "email": "solo@example.com"}),
        );
        let r = e.sync_wfm().await;
        assert_eq!(counts(&r, "contact").created_in_app, 1, "{r:?}");
        assert_eq!(counts(&r, "client").created_in_app, 0);
        let stored = e.wfm.client(&client).unwrap();
        assert_eq!(
            contact_names(&stored),
            ["Aroha Ngata", "Mere Kahu", "Tane Mahuta"]
        );
        assert_eq!(e.wfm.clients().len(), 1);

        // Nothing changed: nothing is written anywhere.
        let (writes, seq) = (e.wfm.writes(), e.hub_seq());
        let r = e.sync_wfm().await;
        assert!(r.entities.iter().all(|x| x.counts.writes() == 0), "{r:?}");
        assert_eq!(e.wfm.writes(), writes);
        assert_eq!(e.hub_seq(), seq);
    }
}

#[tokio::test]
async fn custom_fields_round_trip_including_a_link_and_xml_special_characters() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = hubbed(
            &url,
            false,
            quick_limits(),
            json!({"verify_custom_fields": true}),
        )
        .await;
        let tricky = r#"R&D <Labs> "quoted" 'single'"#;
        let link = "https://www.linkedin.com/company/r-and-d?x=1&y=2";
        let client = e.wfm.add_client("Labs & Co", json!({}));
        assert!(e.wfm.set_custom(&client, "Industry", tricky));
        assert!(e.wfm.set_custom(&client, "LinkedIn", link));
        e.sync_wfm().await;
        let org = e.hub_named("Organization", "name", "Labs & Co").unwrap();
        assert_eq!(org.data["industry"], tricky);
        assert_eq!(org.data["linkedin_url"], link);

        // One field changes in the hub: both are sent together, so the other survives the
        // application's replace-the-whole-set PUT; the Link keeps its full URL.
        let changed = r#"A & B <c> "d" 'e'"#;
        let mut data = org.data.clone();
        data["industry"] = changed.into();
        e.put("Organization", Some(&org.uid), data);
        let r = e.sync_wfm().await;
        assert_eq!(counts(&r, "client").updated_in_app, 1, "{r:?}");
        let stored = e.wfm.client(&client).unwrap();
        assert_eq!(stored["CustomFields"]["Industry"], changed);
        assert_eq!(stored["CustomFields"]["LinkedIn"], link);
        assert_eq!(stored["Name"], "Labs & Co");

        // A hub organization created with a Link value goes out untemplated.
        let url_only = "https://www.linkedin.com/in/someone";
        e.put(
            "Organization",
            None,
            json!({"name": "Solo <Consulting>", "linkedin_url": url_only, "industry": "IT"}),
        );
        let r = e.sync_wfm().await;
        assert_eq!(r.status.as_str(), "success", "{r:?}");
        let created = e
            .wfm
            .clients()
            .into_iter()
            .find(|c| c["Name"] == "Solo <Consulting>")
            .unwrap();
        assert_eq!(created["CustomFields"]["LinkedIn"], url_only);
        assert_eq!(created["CustomFields"]["Industry"], "IT");

        let writes = e.wfm.writes();
        e.sync_wfm().await;
        assert_eq!(e.wfm.writes(), writes, "custom fields must not echo");
    }
}

#[tokio::test]
async fn a_rotating_refresh_raced_by_two_tasks_keeps_the_newest_token() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = hubbed(&url, false, quick_limits(), json!({})).await;
        e.wfm.add_client("Race Ltd", json!({}));
        let tokens = || tokens_of(&e);
        let entities = connector::find("workflowmax").unwrap().entities();
        let def = &entities[0].parts()[0];
        for round in 0..3 {
            // Two workers of one connection: separate clients, one credential row.
            let (a, b) = (open_client(&e), open_client(&e));
            let page = PageRequest {
                token: None,
                size: 10,
            };
            let (ra, rb) = tokio::join!(
                a.list_changed(def, None, &page),
                b.list_changed(def, None, &page)
            );
            assert_eq!(ra.unwrap().records.len(), 1, "round {round}");
            assert_eq!(rb.unwrap().records.len(), 1, "round {round}");
            let live = e.wfm.live_refresh_tokens();
            assert_eq!(live.len(), 1, "rotation leaves one live refresh token");
            let stored = tokens().load().unwrap();
            assert_eq!(
                stored.refresh_token.as_deref(),
                Some(live[0].as_str()),
                "round {round}"
            );
            // Access tokens expire: the next round refreshes again, racing again.
            e.wfm.expire_tokens();
        }
        // A sync after all that still authenticates with the stored token.
        assert_eq!(e.sync_wfm().await.status.as_str(), "success");
    }
}

#[tokio::test]
async fn a_burst_of_work_stays_within_the_rate_limit_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let per_second = 10;
        let limits = (
            Limits {
                concurrent: 2,
                per_window: per_second,
                window: std::time::Duration::from_secs(1),
                per_day: 10_000,
            },
            RateLimits {
                concurrent: Some(2),
                per_second: Some(per_second as u32),
                // Overrides the connector's 60 a minute, which would dominate here.
                per_minute: Some(10_000),
                per_day: Some(10_000),
            },
        );
        let e = hubbed(&url, false, limits, json!({})).await;
        for i in 0..6 {
            let c = e.wfm.add_client(&format!("Burst {i}"), json!({}));
            e.wfm.set_custom(&c, "Industry", "Retail");
        }
        for i in 0..6 {
            e.put("Organization", None, json!({"name": format!("Hub {i}")}));
        }
        let r = e.sync_wfm().await;
        assert_eq!(r.status.as_str(), "success", "{r:?}");
        assert_eq!(counts(&r, "client").created_in_hub, 6);
        assert_eq!(counts(&r, "client").created_in_app, 6);
        assert!(r.api_calls >= 20, "a real burst: {} calls", r.api_calls);
        let (peak, in_flight, refused) = e.wfm.rate_report();
        assert_eq!(refused, 0, "the fake refused calls over its limits");
        assert!(peak <= per_second, "{peak} calls in one second");
        assert!(in_flight <= 2, "{in_flight} calls at once");
    }
}

#[tokio::test]
async fn an_http_200_error_status_is_recorded_on_the_id_map_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = hubbed(&url, false, quick_limits(), json!({})).await;
        for name in ["One", "Two", "Three"] {
            e.put("Organization", None, json!({"name": name}));
        }
        e.wfm.fail_next(
            Target::Create,
            Fault::Envelope("Invalid field value: Name".into()),
        );
        let r = e.sync_wfm().await;
        assert_eq!(r.status.as_str(), "partial", "{r:?}");
        let c = counts(&r, "client");
        assert_eq!((c.created_in_app, c.errors), (2, 1), "{r:?}");
        let failed: Vec<_> = e
            .wfm_idmaps()
            .into_iter()
            .filter(|m| m.last_error.is_some())
            .collect();
        assert_eq!(failed.len(), 1);
        let err = failed[0].last_error.as_deref().unwrap();
        assert!(
            err.contains("Status ERROR") && err.contains("Invalid field value"),
            "{err}"
        );
        assert_eq!(failed[0].retry_to.as_deref(), Some("external"));
        assert_eq!(e.wfm.clients().len(), 2);

        // Malformed XML for one record's custom fields fails that record only.
        let extra = e.wfm.add_client("Broken", json!({}));
        e.wfm.set_custom(&extra, "Industry", "x");
        e.wfm
            .fail_next(Target::Kind("customfield_get"), Fault::Garbled);
        let r = e.sync_wfm().await;
        let c = counts(&r, "client");
        assert_eq!(c.created_in_app, 1, "the failed create is retried: {r:?}");
        assert_eq!(c.errors, 1, "{r:?}");
        assert!(e.wfm_idmaps().iter().any(|m| m
            .last_error
            .as_deref()
            .is_some_and(|x| x.contains("malformed"))));
        assert_eq!(e.wfm.clients().len(), 4);

        let r = e.sync_wfm().await;
        assert_eq!(r.status.as_str(), "success", "{r:?}");
        assert!(e.hub_named("Organization", "name", "Broken").is_some());
    }
}

#[tokio::test]
async fn superoffice_to_hub_to_workflowmax_and_back() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = hubbed(&url, true, quick_limits(), json!({})).await;
        let nordic =
            e.so.add_contact("Nordic Freight AS", "NO912345678", "https://nordic.example");
        let ingrid =
            e.so.add_person("Ingrid", "Solberg", "ingrid@nordic.example", Some(nordic));
        // A round runs the organization's connections in config order.
        let round = || async {
            let so = e.sync_so().await;
            let wfm = e.sync_wfm().await;
            assert_eq!(so.status.as_str(), "success", "{so:?}");
            assert_eq!(wfm.status.as_str(), "success", "{wfm:?}");
            (so, wfm)
        };

        round().await;
        let client = e
            .wfm
            .clients()
            .into_iter()
            .find(|c| c["Name"] == "Nordic Freight AS")
            .expect("the SuperOffice company reached WorkflowMax");
        assert_eq!(contact_names(&client), ["Ingrid Solberg"]);
        let contact = &client["Contacts"][0];
        assert_eq!(contact["Email"], "ingrid@nordic.example");
        let contact_id = contact["UUID"].as_str().unwrap().to_string();

        // A WorkflowMax user edits the contact: the change reaches SuperOffice.
        assert!(e.wfm.edit(&contact_id, json!({"Mobile": "+47 900 00 001"})));
        round().await;
        round().await;
        let person = e.so.person(ingrid).unwrap();
        assert_eq!(person["MobilePhones"][0]["Value"], "+47 900 00 001");

        // Settled: a further round writes nothing anywhere.
        let (so_writes, wfm_writes, seq) = (e.so.writes(), e.wfm.writes(), e.hub_seq());
        let (so, wfm) = round().await;
        for r in [&so, &wfm] {
            assert!(r.entities.iter().all(|x| x.counts.writes() == 0), "{r:?}");
        }
        assert_eq!(e.so.writes(), so_writes);
        assert_eq!(e.wfm.writes(), wfm_writes);
        assert_eq!(e.hub_seq(), seq);
    }
}

#[tokio::test]
async fn incremental_reads_page_and_filter_by_modifiedsince() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let mut e = hubbed(&url, false, quick_limits(), json!({})).await;
        e.engine.settings.sync.first_sync_batch_size = 2;
        // Five clients last modified yesterday.
        e.wfm
            .set_clock(Some(chrono::Utc::now() - chrono::Duration::days(1)));
        let ids: Vec<String> = (0..5)
            .map(|i| e.wfm.add_client(&format!("Old {i}"), json!({})))
            .collect();
        e.wfm.set_clock(None);
        let r = e.sync_wfm().await;
        assert_eq!(counts(&r, "client").created_in_hub, 5, "{r:?}");
        assert_eq!(
            e.wfm.calls("list"),
            4,
            "pages 1, 3 and 2 of 2, 2 and 1, then page 1 again (a numbered list is read from the end)"
        );

        // Later runs ask only for what changed since the last read (less the lookback).
        e.wfm.edit(&ids[3], json!({"Phone": "+64 9 000"}));
        let r = e.sync_wfm().await;
        let c = counts(&r, "client");
        assert_eq!((c.fetched, c.updated_in_hub), (1, 1), "{r:?}");
        assert_eq!(
            e.hub_named("Organization", "name", "Old 3").unwrap().data["phone"],
            "+64 9 000"
        );

        // A 429 with Retry-After is waited out, not failed.
        e.wfm.fail_next(Target::List, Fault::Status(429));
        let r = e.sync_wfm().await;
        assert_eq!(r.status.as_str(), "success", "{r:?}");
        assert_eq!(e.wfm.rate_report().2, 0, "an injected 429 is not a refusal");
    }
}

#[tokio::test]
async fn listing_pages_follow_the_offsets_of_the_filtered_list_even_when_it_shifts() {
    let dir = tempfile::tempdir().unwrap();
    let url = backends(dir.path()).remove(0);
    let e = hubbed(&url, false, quick_limits(), json!({})).await;
    let at = |m: u32| chrono::Utc.with_ymd_and_hms(2026, m, 1, 0, 0, 0).unwrap();
    e.wfm.set_clock(Some(at(1)));
    let ids: Vec<String> = (0..25)
        .map(|i| e.wfm.add_client(&format!("Client {i:02}"), json!({})))
        .collect();
    // Clients 05..24 change in February; a listing since February holds those 20.
    e.wfm.set_clock(Some(at(2)));
    for id in &ids[5..] {
        assert!(e.wfm.edit(id, json!({"Phone": "+64 9 000"})));
    }
    let client = open_client(&e);
    let def = &connector::find("workflowmax").unwrap().entities()[0].parts()[0].clone();
    let names = |p: &ferry_framework::entity::Page| -> Vec<String> {
        p.records
            .iter()
            .map(|f| match f {
                ferry_framework::entity::Fetched::Record(r) => r["Name"].as_str().unwrap().into(),
                other => panic!("unreadable record {other:?}"),
            })
            .collect()
    };
    let list = |token: Option<String>| {
        let (client, def) = (client.clone(), def.clone());
        async move {
            client
                .list_changed(&def, Some(at(2)), &PageRequest { token, size: 8 })
                .await
                .unwrap()
        }
    };
    let mut token = None;
    let mut seen = Vec::new();
    loop {
        let page = list(token).await;
        seen.extend(names(&page));
        token = page.next;
        if token.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (5..25).map(|i| format!("Client {i:02}")).collect();
    // Pages 1, 3, 2, then 1 again: every client, the first page's twice.
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct, expected, "{seen:?}");
    assert_eq!(seen.len(), 20 + 8);

    // Client 00 changes after page 1: it enters the filtered list ahead of the others
    // (offsets are of the list as it is now), which moves every row one place on; the
    // page read next (the last) still shows the list as it is.
    let first = list(None).await;
    assert_eq!(names(&first).last().map(String::as_str), Some("Client 12"));
    assert!(e.wfm.edit(&ids[0], json!({"Phone": "+64 9 111"})));
    let last = list(first.next).await;
    assert_eq!(
        names(&last).first().map(String::as_str),
        Some("Client 20"),
        "offsets are of the list as it is now"
    );
}
