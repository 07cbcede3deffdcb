//! The WorkflowMax client: OAuth with rotating refresh tokens and the `account_id` header
//! taken from the access token, the call budget, the XML envelope, paged `modifiedsince`
//! listing of Clients with their Contacts, and custom fields (definitions cached per
//! connection; values always written all together, UUID first, in the element the
//! definition names).

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ferry_framework::connector::ConnectionContext;
use ferry_framework::entity::{EntityDef, ExternalClient, Fetched, Page, PageRequest};
use ferry_framework::http::oauth::{RefreshConfig, TokenSource};
use ferry_framework::http::{ApiError, Transport};
use ferry_framework::listing::NumberedCursor;
use reqwest::Method;
use serde_json::{json, Map, Value};
use tokio::sync::OnceCell;

use super::{xml, Settings, ORDER};

/// A custom field definition, as far as reading and writing values needs it.
#[derive(Debug, Clone)]
struct Definition {
    uuid: String,
    name: String,
    value_element: String,
    use_client: bool,
    use_contact: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Client,
    Contact,
}

impl Kind {
    fn of(def: &EntityDef) -> Kind {
        if def.external_entity == "Contact" {
            Kind::Contact
        } else {
            Kind::Client
        }
    }

    fn custom_path(self, uuid: &str, write: bool) -> String {
        match (self, write) {
            (Kind::Contact, _) => format!("client.api/contact/{uuid}/customfield"),
            (Kind::Client, false) => format!("client.api/get/{uuid}/customfield"),
            (Kind::Client, true) => format!("client.api/update/{uuid}/customfield"),
        }
    }
}

/// Talks to one WorkflowMax organisation.
pub struct WorkflowMaxClient {
    transport: Transport,
    settings: Settings,
    tokens: TokenSource,
    definitions: OnceCell<Vec<Definition>>,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The organisation id: the first of the access token's `org_ids` claim.
fn account_id(token: &str) -> Result<String, ApiError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| ApiError::Auth("the access token is not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| ApiError::Auth(format!("the access token's claims are unreadable: {e}")))?;
    let claims: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Auth(format!("the access token's claims are unreadable: {e}")))?;
    claims
        .get("org_ids")
        .and_then(|o| o.get(0))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ApiError::Auth("the access token has no org_ids claim".into()))
}

/// Splits a Contact's one `Name` into `FirstName` (up to the first space) and `LastName`.
pub fn split_name(contact: &mut Map<String, Value>) {
    let Some(name) = text(contact.get("Name")) else {
        return;
    };
    let name = name.trim();
    let (first, last) = match name.split_once(char::is_whitespace) {
        Some((f, l)) => (f.to_string(), Some(l.trim().to_string())),
        None => (name.to_string(), None),
    };
    contact.insert("FirstName".into(), first.into());
    contact.insert("LastName".into(), last.map_or(Value::Null, Value::String));
}

/// Joins `FirstName`/`LastName` back into `Name` for writing.
fn join_name(contact: &mut Map<String, Value>) {
    let first = contact.remove("FirstName");
    let last = contact.remove("LastName");
    if first.is_none() && last.is_none() {
        return;
    }
    let name: Vec<String> = [first, last]
        .iter()
        .filter_map(|v| text(v.as_ref()))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    contact.insert("Name".into(), name.join(" ").into());
}

fn object(v: Value, what: &str) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::Malformed(format!(
            "expected a <{what}> with elements, got {other}"
        ))),
    }
}

impl WorkflowMaxClient {
    pub fn new(ctx: ConnectionContext) -> anyhow::Result<Self> {
        let settings = Settings::parse(&ctx.settings)?;
        Ok(Self {
            tokens: TokenSource::new(
                &ctx.transport,
                RefreshConfig::from_secrets(
                    settings.token_url.clone(),
                    settings.client_id.clone(),
                    Some(settings.scope.clone()),
                    &ctx.secrets,
                ),
                ctx.tokens,
            ),
            transport: ctx.transport,
            settings,
            definitions: OnceCell::new(),
        })
    }

    /// One API call: budget, token (one refresh when refused), `account_id`, XML envelope.
    /// Returns the payload elements of an OK response.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<Map<String, Value>, ApiError> {
        self.transport
            .with_retry(method != Method::POST, || async {
                let mut rejected: Option<String> = None;
                loop {
                    let token = self.tokens.access_token(rejected.as_deref()).await?;
                    let mut req = self
                        .transport
                        .http
                        .request(method.clone(), format!("{}{path}", self.settings.api_url))
                        .bearer_auth(&token)
                        .header("account_id", account_id(&token)?)
                        .header("Accept", "application/xml")
                        .query(query);
                    if let Some(b) = &body {
                        req = req
                            .header("Content-Type", "application/xml")
                            .body(b.clone());
                    }
                    let (status, wait, text) = self.transport.send(req).await?;
                    let result = if (200..300).contains(&status) {
                        xml::response(&text)
                    } else {
                        let message = match xml::response(&text) {
                            Err(e) if !matches!(e, ApiError::Malformed(_)) => e.to_string(),
                            _ => text.chars().take(300).collect(),
                        };
                        Err(ApiError::from_status(
                            status,
                            wait,
                            format!("{method} {path}: {message}"),
                        ))
                    };
                    match result {
                        Err(ApiError::Auth(_)) if rejected.is_none() => rejected = Some(token),
                        other => return other,
                    }
                }
            })
            .await
    }

    async fn definitions(&self) -> Result<&[Definition], ApiError> {
        self.definitions
            .get_or_try_init(|| async {
                let mut r = self
                    .call(Method::GET, "customfield.api/definition", &[], None)
                    .await?;
                let list = match r.remove("CustomFieldDefinitions") {
                    Some(Value::Array(l)) => l,
                    _ => Vec::new(),
                };
                Ok(list
                    .iter()
                    .filter_map(|d| {
                        let flag = |k: &str| {
                            text(d.get(k)).is_some_and(|v| v.eq_ignore_ascii_case("true"))
                        };
                        Some(Definition {
                            uuid: text(d.get("UUID"))?,
                            name: text(d.get("Name"))?,
                            value_element: text(d.get("ValueElement"))
                                .filter(|v| !v.is_empty())
                                .unwrap_or_else(|| "Text".into()),
                            use_client: flag("UseClient"),
                            use_contact: flag("UseContact"),
                        })
                    })
                    .collect())
            })
            .await
            .map(Vec::as_slice)
    }

    async fn custom_defs(&self, kind: Kind) -> Result<Vec<Definition>, ApiError> {
        if !self.settings.custom_fields {
            return Ok(Vec::new());
        }
        Ok(self
            .definitions()
            .await?
            .iter()
            .filter(|d| match kind {
                Kind::Client => d.use_client,
                Kind::Contact => d.use_contact,
            })
            .cloned()
            .collect())
    }

    /// A record's custom field values by field name.
    async fn read_custom(&self, kind: Kind, uuid: &str) -> Result<Map<String, Value>, ApiError> {
        let defs = self.custom_defs(kind).await?;
        let mut out = Map::new();
        if defs.is_empty() {
            return Ok(out);
        }
        let mut r = self
            .call(Method::GET, &kind.custom_path(uuid, false), &[], None)
            .await?;
        let Some(Value::Array(fields)) = r.remove("CustomFields") else {
            return Ok(out);
        };
        for f in fields {
            let uuid = text(f.get("UUID"));
            let Some(d) = defs.iter().find(|d| Some(&d.uuid) == uuid.as_ref()) else {
                continue;
            };
            let value = f.get(&d.value_element).cloned().unwrap_or(Value::Null);
            out.insert(d.name.clone(), value);
        }
        Ok(out)
    }

    /// Writes custom fields. The application replaces the whole set on a PUT, so the
    /// current values are read and every field is sent together, UUID first, the value in
    /// the definition's `ValueElement`. Link fields carry the full URL as given: the
    /// definition's template is for display and is never applied.
    async fn write_custom(
        &self,
        kind: Kind,
        uuid: &str,
        wanted: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ApiError> {
        let defs = self.custom_defs(kind).await?;
        for name in wanted.keys() {
            if !defs.iter().any(|d| &d.name == name) {
                let known: Vec<_> = defs.iter().map(|d| d.name.as_str()).collect();
                return Err(ApiError::Permanent(format!(
                    "custom field {name:?} is not defined for this record type (defined: {})",
                    known.join(", ")
                )));
            }
        }
        let mut merged = self.read_custom(kind, uuid).await?;
        for (k, v) in wanted {
            merged.insert(k.clone(), v.clone());
        }
        let fields: Vec<Value> = defs
            .iter()
            .filter_map(|d| {
                let v = merged.get(&d.name).filter(|v| !v.is_null())?;
                let mut f = Map::new();
                f.insert("UUID".into(), d.uuid.clone().into());
                f.insert("Name".into(), d.name.clone().into());
                f.insert(d.value_element.clone(), v.clone());
                Some(Value::Object(f))
            })
            .collect();
        let body = xml::document("CustomFields", &Value::Array(fields), ORDER);
        self.call(Method::PUT, &kind.custom_path(uuid, true), &[], Some(body))
            .await?;
        merged.retain(|_, v| !v.is_null());
        if self.settings.verify_custom_fields {
            let back = self.read_custom(kind, uuid).await?;
            for (k, v) in &merged {
                if back.get(k) != Some(v) {
                    return Err(ApiError::Permanent(format!(
                        "custom field {k:?} did not keep its value: sent {v}, read back {}",
                        back.get(k).cloned().unwrap_or(Value::Null)
                    )));
                }
            }
        }
        Ok(merged)
    }

    /// A listed or read Client made into a record: contacts normalized and custom fields
    /// attached.
    async fn client_record(&self, v: Value) -> Result<Value, ApiError> {
        let mut c = object(v, "Client")?;
        let uuid = text(c.get("UUID"))
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ApiError::Malformed("a <Client> without a <UUID>".into()))?;
        let contacts = match c.remove("Contacts") {
            Some(Value::Array(l)) => l,
            _ => Vec::new(),
        };
        let contact_fields = !self.custom_defs(Kind::Contact).await?.is_empty();
        let mut out = Vec::new();
        for ct in contacts {
            let mut ct = object(ct, "Contact")?;
            if let Some(id) = text(ct.get("UUID")) {
                if contact_fields {
                    let cf = self.read_custom(Kind::Contact, &id).await?;
                    ct.insert("CustomFields".into(), Value::Object(cf));
                }
            }
            out.push(Value::Object(ct));
        }
        c.insert("Contacts".into(), Value::Array(out));
        if !self.custom_defs(Kind::Client).await?.is_empty() {
            let cf = self.read_custom(Kind::Client, &uuid).await?;
            c.insert("CustomFields".into(), Value::Object(cf));
        }
        Ok(Value::Object(c))
    }

    /// The Contact as the split gives it: name parts, and its Client as parent.
    fn contact_record(mut c: Map<String, Value>, client: Option<String>) -> Value {
        if let Some(client) = client {
            c.insert("Client".into(), json!({ "UUID": client }));
        }
        split_name(&mut c);
        Value::Object(c)
    }

    async fn get_client(&self, id: &str) -> Result<Option<Value>, ApiError> {
        match self
            .call(Method::GET, &format!("client.api/get/{id}"), &[], None)
            .await
        {
            Ok(mut r) => {
                let c = r
                    .remove("Client")
                    .ok_or_else(|| ApiError::Malformed("the response has no <Client>".into()))?;
                self.client_record(c).await.map(Some)
            }
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An update that names a Client only keeps a contact where it is: BlueRock's
    /// `PUT client.api/contact/{uuid}` (`Update_ClientContact` in
    /// `specs/workflowmax/workflowmax_api.yaml`) has no Client, and no operation moves a
    /// contact to another client. A move is refused with a clear error, so the record's
    /// move stays in the hub and at its source instead of being undone.
    async fn refuse_move(&self, contact: &str, client: &str) -> Result<(), ApiError> {
        let holds = self.get_client(client).await?.is_some_and(|c| {
            c.get("Contacts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|ct| text(ct.get("UUID")).as_deref() == Some(contact))
        });
        if holds {
            return Ok(());
        }
        Err(ApiError::Permanent(format!(
            "WorkflowMax cannot move a contact to another client (its API has no such \
             operation): contact {contact} stays under its client, not {client}"
        )))
    }

    /// An update carries a job title as the contact's position at its client:
    /// `Positions/Position{UUID, Position}` (`Update_ClientContact` in
    /// `specs/workflowmax/workflowmax_api.yaml` has no flat `Position`; a create does).
    fn as_position(body: &mut Map<String, Value>, client: Option<&str>) -> Result<(), ApiError> {
        let Some(title) = body.remove("Position") else {
            return Ok(());
        };
        let client = client.ok_or_else(|| {
            ApiError::Permanent(
                "a contact's job title is its position at a client: the update names no client"
                    .into(),
            )
        })?;
        body.insert(
            "Positions".into(),
            json!([{ "UUID": client, "Position": title }]),
        );
        Ok(())
    }

    /// WorkflowMax keeps one `Name`: an update that changes only the first or only the last
    /// name takes the other part from the contact as it is now.
    async fn complete_name(&self, id: &str, body: &mut Map<String, Value>) -> Result<(), ApiError> {
        if body.contains_key("FirstName") == body.contains_key("LastName") {
            return Ok(());
        }
        let mut r = self
            .call(Method::GET, &format!("client.api/contact/{id}"), &[], None)
            .await?;
        let mut now = object(r.remove("Contact").unwrap_or(Value::Null), "Contact")?;
        split_name(&mut now);
        for part in ["FirstName", "LastName"] {
            if !body.contains_key(part) {
                body.insert(part.into(), now.remove(part).unwrap_or(Value::Null));
            }
        }
        Ok(())
    }

    /// Writes a record's mapped fields (all but custom fields) and then its custom fields.
    async fn write(
        &self,
        entity: &EntityDef,
        id: Option<&str>,
        parent: Option<&str>,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        if let Some(what) = xml::unsendable(fields) {
            return Err(ApiError::Permanent(format!(
                "{what} cannot be sent: XML 1.0 has no such character (WorkflowMax's API is \
                 XML); remove it from the record"
            )));
        }
        let mut body = fields.as_object().cloned().unwrap_or_default();
        let custom = match body.remove("CustomFields") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        body.remove("UUID");
        let kind = Kind::of(entity);
        let mut record = match (kind, id) {
            (Kind::Client, None) => {
                let doc = xml::document("Client", &Value::Object(body), ORDER);
                let mut r = self
                    .call(Method::POST, "client.api/add", &[], Some(doc))
                    .await?;
                object(r.remove("Client").unwrap_or(Value::Null), "Client")?
            }
            (Kind::Client, Some(id)) => {
                let mut b = Map::new();
                b.insert("UUID".into(), id.into());
                b.extend(body);
                let doc = xml::document("Client", &Value::Object(b), ORDER);
                let mut r = self
                    .call(Method::PUT, "client.api/update", &[], Some(doc))
                    .await?;
                object(r.remove("Client").unwrap_or(Value::Null), "Client")?
            }
            (Kind::Contact, id) => {
                let named = body
                    .remove("Client")
                    .and_then(|c| text(c.get("UUID")))
                    .filter(|c| !c.is_empty());
                let (method, path, client) = match id {
                    None => {
                        let client = named.ok_or_else(|| {
                            ApiError::Permanent("a Contact needs its Client's UUID".into())
                        })?;
                        let path = "client.api/contact".to_string();
                        body.insert("Client".into(), json!({ "UUID": client }));
                        (Method::POST, path, Some(client))
                    }
                    Some(id) => {
                        if let Some(to) = &named {
                            self.refuse_move(id, to).await?;
                        }
                        self.complete_name(id, &mut body).await?;
                        Self::as_position(&mut body, named.as_deref().or(parent))?;
                        (Method::PUT, format!("client.api/contact/{id}"), named)
                    }
                };
                join_name(&mut body);
                let doc = xml::document("Contact", &Value::Object(body), ORDER);
                let mut r = self.call(method, &path, &[], Some(doc)).await?;
                let mut c = match r.remove("Contact") {
                    Some(v) => object(v, "Contact")?,
                    None => Map::new(),
                };
                // An untyped answer may carry only the new id.
                if let (None, Some(new)) = (c.get("UUID"), r.remove("ID").or(r.remove("UUID"))) {
                    c.insert("UUID".into(), new);
                }
                match Self::contact_record(c, client) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                }
            }
        };
        record.remove("Contacts");
        let uuid = text(record.get("UUID")).ok_or_else(|| {
            ApiError::Malformed("the written record came back without a UUID".into())
        })?;
        if !self.custom_defs(kind).await?.is_empty() {
            let cf = if custom.is_empty() {
                self.read_custom(kind, &uuid).await?
            } else {
                self.write_custom(kind, &uuid, &custom).await?
            };
            record.insert("CustomFields".into(), Value::Object(cf));
        }
        Ok(Value::Object(record))
    }
}

#[async_trait]
impl ExternalClient for WorkflowMaxClient {
    async fn list_changed(
        &self,
        entity: &EntityDef,
        since: Option<DateTime<Utc>>,
        page: &PageRequest,
    ) -> Result<Page, ApiError> {
        if Kind::of(entity) != Kind::Client {
            return Err(ApiError::Permanent(
                "Contacts are listed with their Client".into(),
            ));
        }
        // Paged by number (`page`, `pagesize`; `TotalRecords` comes back when either is
        // passed: reference/external-apis.md, client.api/list paging). A client deleted
        // during the listing moves the rest back one place, so the list is read from its
        // end (framework listing). That assumes the list keeps creation order, as the fake
        // does: no source says which order the API lists in.
        let cursor = NumberedCursor::from_token(page.token.as_deref())?;
        let number = cursor.page;
        let size = page.size.max(1);
        let mut query = vec![
            ("detailed", "true".to_string()),
            ("page", number.to_string()),
            ("pagesize", size.to_string()),
        ];
        if let Some(s) = since {
            query.push(("modifiedsince", s.format("%Y-%m-%dT%H:%M:%S").to_string()));
        }
        let mut r = self
            .call(Method::GET, "client.api/list", &query, None)
            .await?;
        let clients = match r.remove("Clients") {
            Some(Value::Array(l)) => l,
            _ => Vec::new(),
        };
        let n = clients.len();
        let mut records = Vec::with_capacity(n);
        for c in clients {
            let id = text(c.get("UUID"));
            match self.client_record(c).await {
                Ok(rec) => records.push(Fetched::Record(rec)),
                Err(
                    e @ (ApiError::Malformed(_) | ApiError::Permanent(_) | ApiError::NotFound(_)),
                ) => records.push(Fetched::Bad {
                    id,
                    error: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        let total = text(r.get("TotalRecords")).and_then(|t| t.parse::<usize>().ok());
        Ok(Page {
            records,
            next: cursor.next(total, n, size)?,
        })
    }

    async fn get(&self, entity: &EntityDef, id: &str) -> Result<Option<Value>, ApiError> {
        match Kind::of(entity) {
            Kind::Client => self.get_client(id).await,
            Kind::Contact => {
                match self
                    .call(Method::GET, &format!("client.api/contact/{id}"), &[], None)
                    .await
                {
                    Ok(mut r) => {
                        let c = object(r.remove("Contact").unwrap_or(Value::Null), "Contact")?;
                        Ok(Some(Self::contact_record(c, None)))
                    }
                    Err(ApiError::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    async fn create(
        &self,
        entity: &EntityDef,
        fields: &Value,
        _key: &str,
    ) -> Result<Value, ApiError> {
        self.write(entity, None, None, fields).await
    }

    async fn update(
        &self,
        entity: &EntityDef,
        id: &str,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        self.write(entity, Some(id), None, fields).await
    }

    /// A contact's job title is its position at its client: the update names the client it
    /// was last read under.
    async fn update_in(
        &self,
        entity: &EntityDef,
        id: &str,
        parent: Option<&str>,
        fields: &Value,
    ) -> Result<Value, ApiError> {
        self.write(entity, Some(id), parent, fields).await
    }

    async fn find_match(
        &self,
        entity: &EntityDef,
        fields: &Value,
    ) -> Result<Option<Value>, ApiError> {
        let same = |a: Option<String>, b: Option<String>| match (a, b) {
            (Some(a), Some(b)) => a.trim().eq_ignore_ascii_case(b.trim()),
            _ => false,
        };
        match Kind::of(entity) {
            Kind::Client => {
                let Some(name) = text(fields.get("Name")) else {
                    return Ok(None);
                };
                let mut r = self
                    .call(
                        Method::GET,
                        "client.api/search",
                        &[("query", name.clone())],
                        None,
                    )
                    .await?;
                let found = match r.remove("Clients") {
                    Some(Value::Array(l)) => l
                        .into_iter()
                        .find(|c| same(text(c.get("Name")), Some(name.clone()))),
                    _ => None,
                };
                match found.and_then(|c| text(c.get("UUID"))) {
                    Some(id) => Ok(self.get_client(&id).await?.map(|mut c| {
                        if let Some(o) = c.as_object_mut() {
                            o.remove("Contacts");
                        }
                        c
                    })),
                    None => Ok(None),
                }
            }
            Kind::Contact => {
                let Some(client) = fields.get("Client").and_then(|c| text(c.get("UUID"))) else {
                    return Ok(None);
                };
                let Some(parent) = self.get_client(&client).await? else {
                    return Ok(None);
                };
                let mut probe = fields.as_object().cloned().unwrap_or_default();
                join_name(&mut probe);
                let contacts = parent
                    .get("Contacts")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                Ok(contacts
                    .into_iter()
                    .find(|c| match text(probe.get("Email")) {
                        Some(e) => same(text(c.get("Email")), Some(e)),
                        None => same(text(c.get("Name")), text(probe.get("Name"))),
                    })
                    .and_then(|c| match c {
                        Value::Object(m) => Some(Self::contact_record(m, Some(client.clone()))),
                        _ => None,
                    }))
            }
        }
    }

    fn record_id(&self, _entity: &EntityDef, record: &Value) -> Option<String> {
        text(record.get("UUID")).filter(|u| !u.is_empty())
    }

    /// WorkflowMax records carry no modification time: the list's `modifiedsince` filter
    /// is the only change signal, and the engine's watermark is the time of the read.
    fn updated_at(&self, _entity: &EntityDef, _record: &Value) -> Option<DateTime<Utc>> {
        None
    }

    fn display_name(&self, _entity: &EntityDef, record: &Value) -> Option<String> {
        text(record.get("Name"))
    }
}
