//! `ferry apikey`: keys of Ferry's incoming API. A new key is printed once; only its hash
//! is stored.

use std::process::ExitCode;

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use ferry_framework::config::Settings;
use ferry_framework::input_error;
use ferry_framework::store::apikeys::scope;
use ferry_framework::store::Store;
use serde_json::json;

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key for one organization; it is printed once.
    Create {
        #[arg(long)]
        org: String,
        /// `read` (status, runs, id maps) or `sync` (also start syncs).
        #[arg(long, value_parser = [scope::READ, scope::SYNC])]
        scope: String,
    },
    /// Keys (never the keys themselves): id, organization, scope, prefix, last use.
    List {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: i64 },
}

pub fn run(settings: &Settings, cmd: ApiKeyCommand) -> Result<ExitCode> {
    let store = Store::open_and_migrate(&settings.database_url())?;
    let org_id = |slug: &str| -> Result<i64> {
        store.org_by_slug(slug)?.map(|o| o.id).ok_or_else(|| {
            input_error!(
                "no organization {slug:?} in the database (run a sync or `ferry serve` first)"
            )
        })
    };
    match cmd {
        ApiKeyCommand::Create { org, scope } => {
            let (row, key) = store.create_api_key(org_id(&org)?, &scope)?;
            // A key nobody saw is a key nobody can use or revoke knowingly: undo it.
            if let Err(e) = out!("{key}").and_then(|()| std::io::stdout().flush()) {
                store.revoke_api_key(row.id)?;
                return Err(anyhow::anyhow!(
                    "the key could not be shown ({e}), so it was revoked; run the command again"
                ));
            }
            note!(
                "API key {} for {org} with scope {scope}: shown once, store it now",
                row.id
            );
        }
        ApiKeyCommand::List { org, json: as_json } => {
            let keys = store.api_keys(org.as_deref().map(org_id).transpose()?)?;
            let orgs = store.orgs()?;
            let slug = |id: i64| {
                orgs.iter()
                    .find(|o| o.id == id)
                    .map(|o| o.slug.clone())
                    .unwrap_or_default()
            };
            let rows: Vec<_> = keys
                .iter()
                .map(|k| {
                    json!({
                        "id": k.id, "organization": slug(k.organization_id), "scope": k.scope,
                        "prefix": k.prefix, "created_at": k.created_at.and_utc().to_rfc3339(),
                        "last_used_at": k.last_used_at.map(|t| t.and_utc().to_rfc3339()),
                        "revoked": k.revoked_at.is_some(),
                    })
                })
                .collect();
            if as_json {
                out!("{}", serde_json::to_string_pretty(&rows)?)?;
            } else if rows.is_empty() {
                note!("no API keys (ferry apikey create --org ORG --scope read|sync makes one)");
            } else {
                for r in rows {
                    out!(
                        "{}\t{}\t{}\t{}…\t{}{}",
                        r["id"],
                        r["organization"].as_str().unwrap_or(""),
                        r["scope"].as_str().unwrap_or(""),
                        r["prefix"].as_str().unwrap_or(""),
                        r["last_used_at"].as_str().unwrap_or("never used"),
                        if r["revoked"] == true {
                            "\trevoked"
                        } else {
                            ""
                        }
                    )?;
                }
            }
        }
        ApiKeyCommand::Revoke { id } => {
            if !store.revoke_api_key(id)? {
                return Err(input_error!("no live API key with id {id}"));
            }
            out!("revoked API key {id}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
