//! Keys of Ferry's incoming API. A key is shown once when created; only its SHA-256 is
//! stored (keys carry 244 random bits, so a fast hash is enough), with a short prefix to tell
//! keys apart in listings.

use anyhow::Result;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::orgs::now;
use super::schema::api_keys;
use super::Store;

/// What a key may do: `read` (status, runs, id maps) or `sync` (also start syncs).
pub mod scope {
    pub const READ: &str = "read";
    pub const SYNC: &str = "sync";
}

#[derive(Debug, Clone, Queryable, Selectable, PartialEq)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: i64,
    pub organization_id: i64,
    pub key_hash: String,
    pub prefix: String,
    pub scope: String,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Creates a key; returns its row and the key itself, which is never stored.
    pub fn create_api_key(
        &self,
        organization_id: i64,
        key_scope: &str,
    ) -> Result<(ApiKey, String)> {
        // Two random UUIDs: 244 random bits from the system's generator.
        let key = format!(
            "ferry_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut c = self.conn()?;
        let id: i64 = diesel::insert_into(api_keys::table)
            .values((
                api_keys::organization_id.eq(organization_id),
                api_keys::key_hash.eq(hash(&key)),
                api_keys::prefix.eq(&key[..12]),
                api_keys::scope.eq(key_scope),
                api_keys::created_at.eq(now()),
            ))
            .returning(api_keys::id)
            .get_result(&mut c)?;
        let row = api_keys::table
            .find(id)
            .select(ApiKey::as_select())
            .first(&mut c)?;
        Ok((row, key))
    }

    /// The live key a presented secret belongs to (and notes its use).
    pub fn api_key(&self, presented: &str) -> Result<Option<ApiKey>> {
        let mut c = self.conn()?;
        let found: Option<ApiKey> = api_keys::table
            .filter(api_keys::key_hash.eq(hash(presented)))
            .filter(api_keys::revoked_at.is_null())
            .select(ApiKey::as_select())
            .first(&mut c)
            .optional()?;
        if let Some(k) = &found {
            diesel::update(api_keys::table.find(k.id))
                .set(api_keys::last_used_at.eq(Some(now())))
                .execute(&mut c)?;
        }
        Ok(found)
    }

    pub fn api_keys(&self, organization_id: Option<i64>) -> Result<Vec<ApiKey>> {
        let mut c = self.conn()?;
        let mut q = api_keys::table.select(ApiKey::as_select()).into_boxed();
        if let Some(o) = organization_id {
            q = q.filter(api_keys::organization_id.eq(o));
        }
        Ok(q.order(api_keys::id).load(&mut c)?)
    }

    /// Revokes a key; false when there is no such live key.
    pub fn revoke_api_key(&self, id: i64) -> Result<bool> {
        let mut c = self.conn()?;
        Ok(diesel::update(
            api_keys::table
                .find(id)
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(Some(now())))
        .execute(&mut c)?
            == 1)
    }
}
