//! BlizWork end to end on SQLite and PostgreSQL, what is BlizWork's own: case fields filled
//! through the process's forms, and extension webhooks confirmed by the handshake call. The
//! standard cases (edits both ways, idle runs, faults) are the conformance kit's.

mod common;

use common::{backends, connection, counts, engine, eventually, org, served, Opts};
use ferry_connectors::blizwork::fake::{self, FakeBlizWork, PROCESS};
use ferry_framework::store::jobs::status;
use ferry_framework::sync::SyncOptions;
use serde_json::json;

#[tokio::test]
async fn case_fields_sync_both_ways_through_the_process_forms() {
    let dir = tempfile::tempdir().unwrap();
    for url in backends(dir.path()) {
        let e = engine(&url, &Opts::default());
        let bw = FakeBlizWork::new();
        let first = bw.add_case(
            PROCESS,
            json!({"company_name": "Tidewater AS", "industry": "Shipping"}),
        );
        bw.add_case(PROCESS, json!({"company_name": "Fjellheim AS"}));
        let addr = bw.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let conn = connection(
            "blizwork",
            "blizwork",
            FakeBlizWork::settings(addr),
            &[PROCESS],
            Default::default(),
        );
        let o = org(vec![conn.clone()]);
        let p = e.prepare(&o, &conn, Some(FakeBlizWork::secrets())).unwrap();
        let run = || async { e.run(&p, &SyncOptions::default(), &|_| {}).await.unwrap() };

        let r = run().await;
        assert_eq!(counts(&r, PROCESS).created_in_hub, 2, "{r:?}");
        let hub = |name: &str| {
            e.store
                .hub_list(p.org_id, "Organization", 100)
                .unwrap()
                .into_iter()
                .find(|h| h.data["name"] == name)
        };
        assert_eq!(hub("Tidewater AS").unwrap().data["industry"], "Shipping");

        // A hub organization becomes a case with its fields filled.
        e.store
            .hub_put(
                &e.hub,
                p.org_id,
                "Organization",
                None,
                json!({"name": "Nordlys AS", "website": "https://nordlys.example"}),
                None,
            )
            .unwrap();
        let r = run().await;
        assert_eq!(counts(&r, PROCESS).created_in_app, 1, "{r:?}");
        let created = bw
            .cases(PROCESS)
            .into_iter()
            .find(|c| c["fields"]["company_name"] == "Nordlys AS")
            .expect("a new case");
        assert_eq!(created["fields"]["website"], "https://nordlys.example");
        assert_eq!(
            created["history"][0]["currentActivity"]["formId"],
            "qualify"
        );

        // A user's change in BlizWork reaches the hub; a hub change reaches the case.
        bw.edit_case(PROCESS, first, json!({"industry": "Offshore"}));
        run().await;
        assert_eq!(hub("Tidewater AS").unwrap().data["industry"], "Offshore");
        let mut data = hub("Fjellheim AS").unwrap().data;
        data["industry"] = "Tourism".into();
        let uid = hub("Fjellheim AS").unwrap().uid;
        e.store
            .hub_put(&e.hub, p.org_id, "Organization", Some(&uid), data, None)
            .unwrap();
        run().await;
        assert!(bw
            .cases(PROCESS)
            .iter()
            .any(|c| c["fields"]["industry"] == "Tourism"));
        assert_eq!(bw.cases(PROCESS).len(), 3);
    }
}

fn workspace(db: &str, addr: std::net::SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo();
    std::fs::create_dir_all(dir.path().join("config/organizations")).unwrap();
    std::fs::create_dir_all(dir.path().join("mappers/blizwork")).unwrap();
    std::fs::copy(
        repo.join("config/hub.yml"),
        dir.path().join("config/hub.yml"),
    )
    .unwrap();
    std::fs::copy(
        repo.join("mappers/blizwork/sales-process.yml"),
        dir.path().join("mappers/blizwork/sales-process.yml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("settings.yml"),
        format!(
            "database: {{ url: {db:?} }}\nsecrets: {{ key_env: FERRY_SECRET_KEY, key_file: secret.key }}\n\
             runtime: {{ poll_millis: 100, webhook_coalesce_seconds: 0 }}\n"
        ),
    )
    .unwrap();
    for (slug, handshake) in [("docs", "docs"), ("library", "library")] {
        std::fs::write(
            dir.path().join(format!("config/organizations/{slug}.yml")),
            format!(
                "slug: {slug}\nname: {slug}\nconnections:\n  - name: blizwork\n    connector: blizwork\n    settings:\n      company_id: {company}\n      user_email: {user}\n      environment: http://{addr}/\n      handshake: {handshake}\n      draft_calls: refuse\n      processes:\n        {PROCESS}: {{ hub_entity: Organization, form_id: qualify }}\n    secrets:\n      api_token: {{ env: FERRY_TEST_BW_TOKEN }}\n    webhooks: {{}}\n    entities:\n      {PROCESS}: {{}}\n",
                company = fake::COMPANY_ID,
                user = fake::USER,
            ),
        )
        .unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn an_extension_webhook_is_confirmed_by_handshake_and_syncs_only_its_case() {
    std::env::set_var(
        "FERRY_SECRET_KEY",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    std::env::set_var("FERRY_TEST_BW_TOKEN", fake::API_TOKEN);
    let dir = tempfile::tempdir().unwrap();
    for db in backends(dir.path()) {
        let bw = FakeBlizWork::new();
        let one = bw.add_case(PROCESS, json!({"company_name": "One AS"}));
        let two = bw.add_case(PROCESS, json!({"company_name": "Two AS"}));
        let addr = bw.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let s = served(workspace(&db, addr)).await;
        s.start_worker();
        let (rt, base) = (&s.rt, &s.base);
        let http = reqwest::Client::new();
        for org in ["docs", "library"] {
            let url = format!("{base}/webhooks/{org}/blizwork");
            let p = rt.find(org, "blizwork").unwrap();
            let events = || rt.store().webhook_events_of(p.connection_id).unwrap();
            let status_of = |body: &serde_json::Value| {
                let req = http.post(&url).json(body);
                async move { req.send().await.unwrap().status().as_u16() }
            };

            // A handshake BlizWork does not confirm: refused, nothing stored.
            let forged = json!({"environment": "production", "processId": PROCESS, "processVersion": 1,
                                "caseNumber": one, "handshakeToken": "000000000000000000000000"});
            let resp = http.post(&url).json(&forged).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{org}");
            assert!(events().is_empty());
            // Draft calls are refused by this connection's setting.
            let draft = bw.extension_call(PROCESS, one, "draft");
            assert_eq!(status_of(&draft).await, 401);
            assert!(events().is_empty());

            // A confirmed call: stored once, and a sync of exactly that case.
            let (lists, gets) = (bw.calls("process/case-list"), bw.calls("process/case"));
            bw.edit_case(PROCESS, two, json!({"industry": "Fishing"}));
            let call = bw.extension_call(PROCESS, two, "production");
            let resp = http.post(&url).json(&call).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 202, "{org}");
            let job: serde_json::Value = resp.json().await.unwrap();
            let job = job["job"].as_i64().unwrap();
            // The handshake token is single-use: a replay is refused.
            assert_eq!(status_of(&call).await, 401);
            eventually(30, "the job to run", || {
                rt.store()
                    .job(job)
                    .unwrap()
                    .is_some_and(|j| j.status == status::DONE)
            })
            .await;
            assert_eq!(bw.calls("process/case-list"), lists, "no listing");
            assert_eq!(bw.calls("process/case"), gets + 1, "one case read");
            let hub = rt.store().hub_list(p.org_id, "Organization", 10).unwrap();
            assert_eq!(hub.len(), 1, "only the named case arrived");
            assert_eq!(hub[0].data["name"], "Two AS");
            assert_eq!(hub[0].data["industry"], "Fishing");
            assert_eq!(events().len(), 1);
        }
        let _ = s.stop.send(true);
    }
}
