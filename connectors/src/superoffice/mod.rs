//! SuperOffice CRM (REST WebAPI v1, JSON): Contact (a company) ↔ hub Organization, Person ↔
//! hub Person with its Contact reference. OAuth refresh-token flow per environment.

mod client;
mod columns;
pub mod fake;
mod tenant;
mod values;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use ferry_framework::connector::{ConnectionContext, Connector};
use ferry_framework::entity::{Capabilities, Entity, EntityDef, ExternalClient};
use ferry_framework::http::rate::RateLimits;
use ferry_framework::sandbox::Sandbox;
use serde::Deserialize;

pub use client::SuperOfficeClient;

/// Connection settings (config `settings:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `sod` (development), `qaonline` (stage) or `online` (production): picks the login host.
    pub environment: String,
    /// The tenant, `CustNNNNN`.
    pub context_identifier: String,
    pub client_id: String,
    /// The tenant's web API, e.g. `https://online2.superoffice.com/Cust12345/api/`, fixed:
    /// for a sandbox or an on-site installation. Unset (the rule for SuperOffice Online),
    /// Ferry finds it from each token grant's id token and from the state service, and
    /// finds it again when the tenant moves (see `tenant.rs`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The authentication host, where the token endpoint and the state service are;
    /// defaults to the environment's, `https://{environment}.superoffice.com/`.
    #[serde(default)]
    pub login_url: Option<String>,
    /// Token endpoint; defaults to `{login_url}login/common/oauth/tokens`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// `SO-AppToken` header for server-to-server calls, if the app has one.
    #[serde(default)]
    pub app_token: Option<String>,
}

impl Settings {
    pub fn parse(v: &serde_json::Value) -> Result<Settings> {
        let s: Settings =
            serde_json::from_value(v.clone()).map_err(|e| anyhow::anyhow!("settings: {e}"))?;
        if !["sod", "qaonline", "online"].contains(&s.environment.as_str()) {
            bail!(
                "settings: field `environment` must be sod, qaonline or online, not {:?}",
                s.environment
            );
        }
        for (field, url) in [
            ("api_url", &s.api_url),
            ("login_url", &s.login_url),
            ("token_url", &s.token_url),
        ] {
            if let Some(url) = url {
                ferry_framework::config::check_http_url(field, url)?;
            }
        }
        if !s.context_identifier.starts_with("Cust") {
            bail!(
                "settings: field `context_identifier` must look like Cust12345, not {:?}",
                s.context_identifier
            );
        }
        Ok(s)
    }

    /// The authentication host, ending in `/`.
    pub fn login_url(&self) -> String {
        match &self.login_url {
            Some(u) => tenant::with_slash(u),
            None => format!("https://{}.superoffice.com/", self.environment),
        }
    }

    /// The token endpoint (SuperOfficeDocs
    /// `en/api/authentication/online/sign-in-user/auth-code-flow.mdx`).
    pub fn token_url(&self) -> String {
        self.token_url
            .clone()
            .unwrap_or_else(|| format!("{}login/common/oauth/tokens", self.login_url()))
    }

    /// The state service's address for this tenant (SuperOfficeDocs
    /// `en/developer-portal/best-practices/tenant-status/check-status.mdx`).
    pub fn state_url(&self) -> String {
        format!("{}api/state/{}", self.login_url(), self.context_identifier)
    }
}

/// ContactEntity properties (Swagger-v1-Contact.json).
pub const CONTACT_FIELDS: &[&str] = &[
    "ContactId",
    "Name",
    "Department",
    "OrgNr",
    "Number1",
    "Number2",
    "UpdatedDate",
    "CreatedDate",
    "Emails",
    "Interests",
    "Urls",
    "Phones",
    "Faxes",
    "Description",
    "UpdatedBy",
    "CreatedBy",
    "Associate",
    "Business",
    "Category",
    "Country",
    "Persons",
    "NoMailing",
    "Kananame",
    "Xstop",
    "ActiveInterests",
    "GroupId",
    "ActiveStatusMonitorId",
    "SupportAssociate",
    "TicketPriority",
    "CustomerLanguage",
    "Deleted",
    "DbiAgentId",
    "DbiLastSyncronized",
    "DbiKey",
    "DbiLastModified",
    "SupportPerson",
    "Address",
    "Source",
    "ActiveErpLinks",
    "BounceEmails",
    "Domains",
    "UtmParameters",
    "UserDefinedFields",
    "ExtraFields",
    "CustomFields",
];

/// PersonEntity properties (Swagger-v1-Person.json).
pub const PERSON_FIELDS: &[&str] = &[
    "PersonId",
    "Firstname",
    "MiddleName",
    "Lastname",
    "Mrmrs",
    "Title",
    "UpdatedDate",
    "CreatedDate",
    "BirthDate",
    "CreatedBy",
    "Emails",
    "Description",
    "IsAssociate",
    "PrivatePhones",
    "Faxes",
    "MobilePhones",
    "OfficePhones",
    "OtherPhones",
    "Position",
    "UpdatedBy",
    "Contact",
    "Country",
    "Interests",
    "PersonNumber",
    "FullName",
    "NoMailing",
    "UsePersonAddress",
    "Retired",
    "Urls",
    "FormalName",
    "Address",
    "Post3",
    "Post2",
    "Post1",
    "Kanalname",
    "Kanafname",
    "CorrespondingAssociate",
    "Category",
    "Business",
    "Associate",
    "Salutation",
    "ActiveInterests",
    "SupportAssociate",
    "TicketPriority",
    "CustomerLanguage",
    "DbiAgentId",
    "DbiKey",
    "DbiLastModified",
    "DbiLastSyncronized",
    "SentInfo",
    "ShowContactTickets",
    "UserInfo",
    "ChatEmails",
    "InternetPhones",
    "Source",
    "ActiveErpLinks",
    "ShipmentTypes",
    "Consents",
    "BounceEmails",
    "ActiveStatusMonitorId",
    "CreatedByFormId",
    "UtmParameters",
    "LeadstatusId",
    "Leadstatus",
    "UserDefinedFields",
    "ExtraFields",
    "CustomFields",
];

pub struct SuperOffice;

ferry_framework::register_connector!(|| Box::new(SuperOffice));

impl Connector for SuperOffice {
    fn name(&self) -> &'static str {
        "superoffice"
    }

    fn description(&self) -> &'static str {
        "SuperOffice CRM (REST WebAPI v1, OAuth refresh token)"
    }

    fn entities(&self) -> Vec<Entity> {
        vec![
            EntityDef {
                name: "organization",
                hub_entity: "Organization",
                external_entity: "Contact",
                mapping: "contact",
                external_fields: CONTACT_FIELDS,
                capabilities: Capabilities::READ_WRITE,
            }
            .into(),
            EntityDef {
                name: "person",
                hub_entity: "Person",
                external_entity: "Person",
                mapping: "person",
                external_fields: PERSON_FIELDS,
                capabilities: Capabilities::READ_WRITE,
            }
            .into(),
        ]
    }

    fn check_settings(
        &self,
        settings: &serde_json::Value,
        secrets: &BTreeMap<String, String>,
    ) -> Result<()> {
        Settings::parse(settings)?;
        for s in ["client_secret", "refresh_token"] {
            if !secrets.contains_key(s) {
                bail!("secrets: `{s}` is required (name the environment variable that holds it)");
            }
        }
        Ok(())
    }

    /// "Ask for a pagesize of 1000" (SuperOfficeDocs
    /// `en/developer-portal/best-practices/index.mdx`, "Searching").
    fn page_size(&self) -> Option<usize> {
        Some(1000)
    }

    /// "No more than 10 API calls per second" (SuperOfficeDocs
    /// `en/developer-portal/custom-app/checklist.mdx`, "Limit your searches").
    fn rate_limits(&self) -> RateLimits {
        RateLimits {
            per_second: Some(10),
            ..RateLimits::default()
        }
    }

    fn open(&self, ctx: ConnectionContext) -> Result<Arc<dyn ExternalClient>> {
        Ok(Arc::new(SuperOfficeClient::new(ctx)?))
    }

    fn webhooks(&self) -> Option<Box<dyn ferry_framework::webhook::WebhookFormat>> {
        Some(Box::new(webhook::SuperOfficeWebhooks))
    }

    fn sandbox(&self) -> Option<Box<dyn Sandbox>> {
        Some(Box::new(fake::FakeSandbox))
    }
}
