//! The fakes refuse what the applications' official contracts refuse, so a test that passes
//! on a fake means something: each request here is one the real application rejects, sent
//! as raw HTTP (no client of ours in between).

use ferry_connectors::superoffice::fake::{self as so, FakeSuperOffice};
use ferry_connectors::workflowmax::fake::{self as wfm, FakeWorkflowMax};
use ferry_framework::sandbox::SandboxApp;
use serde_json::{json, Value};

/// An access token from a refresh-token grant at `url` with these credentials.
async fn access_token(url: String, client_id: &str, secret: &str, refresh: &str) -> String {
    let token = grant(url, client_id, secret, refresh).await;
    token["access_token"].as_str().unwrap().to_string()
}

/// The answer of a refresh-token grant at `url` with these credentials.
async fn grant(url: String, client_id: &str, secret: &str, refresh: &str) -> Value {
    reqwest::Client::new()
        .post(url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("refresh_token", refresh),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn so_fake() -> (FakeSuperOffice, String, String) {
    let fake = FakeSuperOffice::new();
    let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{addr}/login/common/oauth/tokens");
    let access = access_token(url, so::CLIENT_ID, so::CLIENT_SECRET, so::REFRESH_TOKEN).await;
    let base = format!("{}v1", fake.tenant_url(&addr.to_string()));
    (fake, base, access)
}

/// The tenant's web API is on a numbered host; the authentication host, and a host the
/// tenant moved away from, answer 421 "Wrong subdomain used to access tenant"; the id
/// token and the state service say where it is (SuperOfficeDocs
/// en/developer-portal/best-practices/tenant-status/check-status.mdx,
/// en/api/authentication/online/validate-security-tokens.mdx).
#[tokio::test(flavor = "multi_thread")]
async fn superoffice_answers_421_away_from_the_tenant() {
    let fake = FakeSuperOffice::new();
    let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let grant = grant(
        format!("http://{addr}/login/common/oauth/tokens"),
        so::CLIENT_ID,
        so::CLIENT_SECRET,
        so::REFRESH_TOKEN,
    )
    .await;
    let access = grant["access_token"].as_str().unwrap();
    let get = |url: String| async move {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(access)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let unnumbered = format!("http://{addr}/{}/api/v1/Contact", so::CONTEXT);
    let (status, body) = get(unnumbered).await;
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("Wrong subdomain"), "{body}");
    let tenant = fake.tenant_url(&addr.to_string());
    assert_eq!(get(format!("{tenant}v1/Contact")).await.0, 200);
    // The id token names the tenant.
    let claims = grant["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    use base64::Engine as _;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(
        claims["http://schemes.superoffice.net/identity/webapi_url"],
        json!(tenant)
    );
    // Moved: the old host answers 421, the state service names the new one.
    fake.move_tenant("sod3");
    assert_eq!(get(format!("{tenant}v1/Contact")).await.0, 421);
    let (status, body) = get(format!("http://{addr}/api/state/{}", so::CONTEXT)).await;
    assert_eq!(status, 200, "{body}");
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        state["Api"],
        json!(format!("http://{addr}/sod3/{}/api", so::CONTEXT))
    );
    assert_eq!(state["IsRunning"], json!(true));
}

/// A PUT replaces the whole entity (rest-webapi/index.mdx): one that leaves out a second
/// e-mail or a description would delete them, so the fake refuses it; and a PUT with
/// `If-Unmodified-Since` before the last change answers 412 (http-headers.mdx).
#[tokio::test(flavor = "multi_thread")]
async fn superoffice_refuses_lossy_and_stale_updates() {
    let (fake, base, access) = so_fake().await;
    let id = fake.add_contact("Nordic Freight AS", "", "");
    let two = json!([
        {"Value": "a@x.example", "StrippedValue": "a@x.example", "Description": "Main"},
        {"Value": "b@x.example", "StrippedValue": "b@x.example", "Description": ""},
    ]);
    fake.edit("Contact", id, json!({"Emails": two}));
    let put = |body: Value, since: Option<String>| {
        let (base, access) = (base.clone(), access.clone());
        async move {
            let mut r = reqwest::Client::new()
                .put(format!("{base}/Contact/{id}"))
                .bearer_auth(&access)
                .json(&body);
            if let Some(s) = since {
                r = r.header("If-Unmodified-Since", s);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let mut whole = fake.contact(id).unwrap();
    whole["Emails"] = json!([{"Value": "a@x.example"}]);
    let (status, body) = put(whole.clone(), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Emails"), "{body}");
    whole["Emails"] = two.clone();
    whole["Department"] = json!("Sales");
    let stale = "Mon, 01 Jan 2001 00:00:00 GMT".to_string();
    let (status, body) = put(whole.clone(), Some(stale)).await;
    assert_eq!(status, 412, "{body}");
    let fresh = (chrono::Utc::now() + chrono::Duration::seconds(5))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let (status, body) = put(whole, Some(fresh)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.contact(id).unwrap()["Emails"], two);
}

async fn so_list(base: &str, access: &str, filter: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{base}/Contact"))
        .bearer_auth(access)
        .query(&[("$select", "contactId"), ("$filter", filter)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// SuperOffice's `after` compares dates and takes a date; a time takes `afterTime`
/// (SuperOffice docs, en/api/search/odata/date.md and datetime.md).
#[tokio::test(flavor = "multi_thread")]
async fn superoffice_refuses_a_time_in_the_date_operator() {
    let (fake, base, access) = so_fake().await;
    let id = fake.add_contact("Nordic Freight AS", "", "");
    let (status, body) = so_list(&base, &access, "updatedDate after '2020-05-28T15:00:01'").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("afterTime"), "{body}");
    assert_eq!(fake.control().off_contract().len(), 1);
    let (status, body) = so_list(&base, &access, "updatedDate after '2020-05-28'").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&id.to_string()), "{body}");
    let (status, body) = so_list(
        &base,
        &access,
        "updatedDate afterTime '2020-05-28T15:00:01'",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&id.to_string()), "{body}");
    // A date after today's lists nothing: `after` is after the whole day.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (_, body) = so_list(&base, &access, &format!("updatedDate after '{today}'")).await;
    assert!(!body.contains(&format!(":{id}")), "{body}");
}

async fn wfm_fake() -> (FakeWorkflowMax, String, String) {
    let fake = FakeWorkflowMax::new();
    let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{addr}/oauth/token");
    let access = access_token(url, wfm::CLIENT_ID, wfm::CLIENT_SECRET, wfm::REFRESH_TOKEN).await;
    (fake, format!("http://{addr}/"), access)
}

async fn wfm_send(base: &str, access: &str, put: bool, path: &str, xml: &str) -> (u16, String) {
    let c = reqwest::Client::new();
    let req = if put {
        c.put(format!("{base}{path}"))
    } else {
        c.post(format!("{base}{path}"))
    };
    let r = req
        .bearer_auth(access)
        .header("account_id", wfm::ORG_ID)
        .header("Content-Type", "application/xml")
        .body(xml.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// XML 1.0 cannot hold U+000B, raw or as a character reference (W3C XML 1.0 §2.2 `Char`,
/// §4.1 "Legal Character").
#[tokio::test(flavor = "multi_thread")]
async fn workflowmax_refuses_characters_xml_cannot_hold() {
    let (fake, base, access) = wfm_fake().await;
    for name in [
        "Tidewater\u{000B}Trading",
        "Tidewater&#11;Trading",
        "Tidewater&#x0B;Trading",
    ] {
        let xml = format!("<Client><Name>{name}</Name></Client>");
        let (status, body) = wfm_send(&base, &access, false, "client.api/add", &xml).await;
        assert_eq!(status, 400, "{name:?}: {body}");
        assert!(body.contains("U+000B"), "{body}");
    }
    assert!(fake.clients().is_empty());
    assert_eq!(fake.control().off_contract().len(), 3);
    let xml = "<Client><Name>Tidewater &amp; Trading ⚓</Name></Client>";
    let (status, body) = wfm_send(&base, &access, false, "client.api/add", xml).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.clients()[0]["Name"], json!("Tidewater & Trading ⚓"));
}

/// `Update_ClientContact` has no flat `Position`; a job title is
/// `Positions/Position{UUID, Position}` (specs/workflowmax/workflowmax_api.yaml).
#[tokio::test(flavor = "multi_thread")]
async fn workflowmax_refuses_a_flat_position_on_contact_update() {
    let (fake, base, access) = wfm_fake().await;
    let client = fake.add_client("Nordic Freight", json!({}));
    let contact = fake
        .add_contact(&client, "Ingrid Solberg", json!({"Position": "Analyst"}))
        .unwrap();
    let path = format!("client.api/contact/{contact}");
    let flat = "<Contact><Name>Ingrid Solberg</Name><Position>Fleet Manager</Position></Contact>";
    let (status, body) = wfm_send(&base, &access, true, &path, flat).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        fake.contact(&contact).unwrap()["Position"],
        json!("Analyst")
    );
    let nested = format!(
        "<Contact><Name>Ingrid Solberg</Name><Positions><Position><UUID>{client}</UUID>\
         <Position>Fleet Manager</Position></Position></Positions></Contact>"
    );
    let (status, body) = wfm_send(&base, &access, true, &path, &nested).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fake.contact(&contact).unwrap()["Position"],
        json!("Fleet Manager")
    );
    // A position names the client it is at: without that, or at another client, it is
    // refused, not silently dropped.
    for positions in [
        "<Positions><Position><Position>Boss</Position></Position></Positions>",
        "<Positions><Position>Boss</Position></Positions>",
        "<Positions><Position><UUID>no-such-client</UUID><Position>Boss</Position></Position></Positions>",
    ] {
        let xml = format!("<Contact><Name>Ingrid Solberg</Name>{positions}</Contact>");
        let (status, body) = wfm_send(&base, &access, true, &path, &xml).await;
        assert_eq!(status, 400, "{positions}: {body}");
    }
    assert_eq!(
        fake.contact(&contact).unwrap()["Position"],
        json!("Fleet Manager")
    );
    // A client has no Position at all (`UpdateClient`), nor any element its schema lacks.
    for element in ["<Position>Boss</Position>", "<Favourite>yes</Favourite>"] {
        let xml = format!("<Client><UUID>{client}</UUID>{element}</Client>");
        let (status, body) = wfm_send(&base, &access, true, "client.api/update", &xml).await;
        assert_eq!(status, 400, "{element}: {body}");
    }
}

/// Text in a CDATA section is literal (W3C XML 1.0 §2.7): `&#11;` there is five characters,
/// not a control character, and is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn workflowmax_reads_cdata_as_text() {
    let (fake, base, access) = wfm_fake().await;
    let xml = "<Client><Name><![CDATA[A&#11;B <Ltd>]]></Name></Client>";
    let (status, body) = wfm_send(&base, &access, false, "client.api/add", xml).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.clients()[0]["Name"], json!("A&#11;B <Ltd>"));
}

/// Paging numbers past any list answer an empty page, never a dropped connection.
#[tokio::test(flavor = "multi_thread")]
async fn huge_paging_numbers_are_answered() {
    let (_so, base, access) = so_fake().await;
    let r = reqwest::Client::new()
        .get(format!("{base}/Contact"))
        .bearer_auth(&access)
        .query(&[("$skip", "18446744073709551615"), ("$top", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_wfm, base, access) = wfm_fake().await;
    let r = reqwest::Client::new()
        .get(format!("{base}client.api/list"))
        .bearer_auth(&access)
        .header("account_id", wfm::ORG_ID)
        .query(&[("page", "18446744073709551615"), ("pagesize", "2")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
