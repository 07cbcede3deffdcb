//! Organizations, connections, connection leases and encrypted credentials.

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::schema::{connections, credentials, organizations};
use super::write_transaction;
use super::{AnyConnection, Store};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = organizations)]
pub struct OrgRow {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub sync_enabled: bool,
    pub date_filtering_limit: Option<NaiveDateTime>,
    pub hub_seq: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = connections)]
pub struct ConnectionRow {
    pub id: i64,
    pub organization_id: i64,
    pub name: String,
    pub connector: String,
    pub settings: String,
    pub entities: String,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
}

/// Stored credentials of a connection, still encrypted.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = credentials)]
pub struct CredentialRow {
    pub connection_id: i64,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_at: Option<NaiveDateTime>,
    pub version: i64,
    pub updated_at: NaiveDateTime,
    /// Where the account's API lives, as the application last said (not sealed).
    pub endpoint: Option<String>,
}

/// Runs a read-then-insert `f` in a write transaction, and once more if a concurrent
/// process inserted the same row first (a unique violation): the second time it reads that
/// row. Two processes starting on a fresh PostgreSQL database both register the same
/// organizations.
fn again_on_conflict<T>(
    c: &mut AnyConnection,
    f: impl Fn(&mut AnyConnection) -> diesel::QueryResult<T>,
) -> diesel::QueryResult<T> {
    use diesel::result::{DatabaseErrorKind, Error};
    match write_transaction(c, &f) {
        Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            write_transaction(c, &f)
        }
        other => other,
    }
}

pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

impl Store {
    /// Creates or updates an organization from its config; returns its id.
    pub fn upsert_org(
        &self,
        slug: &str,
        name: &str,
        sync_enabled: bool,
        limit: Option<DateTime<Utc>>,
    ) -> Result<i64> {
        let mut c = self.conn()?;
        again_on_conflict(&mut c, |c| {
            let existing: Option<i64> = organizations::table
                .filter(organizations::slug.eq(slug))
                .select(organizations::id)
                .first(c)
                .optional()?;
            let limit = limit.map(|d| d.naive_utc());
            match existing {
                Some(id) => {
                    diesel::update(organizations::table.find(id))
                        .set((
                            organizations::name.eq(name),
                            organizations::sync_enabled.eq(sync_enabled),
                            organizations::date_filtering_limit.eq(limit),
                        ))
                        .execute(c)?;
                    Ok(id)
                }
                None => diesel::insert_into(organizations::table)
                    .values((
                        organizations::slug.eq(slug),
                        organizations::name.eq(name),
                        organizations::sync_enabled.eq(sync_enabled),
                        organizations::date_filtering_limit.eq(limit),
                        organizations::hub_seq.eq(0i64),
                        organizations::created_at.eq(now()),
                    ))
                    .returning(organizations::id)
                    .get_result(c),
            }
        })
        .context("cannot save organization")
    }

    pub fn org_by_slug(&self, slug: &str) -> Result<Option<OrgRow>> {
        let mut c = self.conn()?;
        Ok(organizations::table
            .filter(organizations::slug.eq(slug))
            .select(OrgRow::as_select())
            .first(&mut c)
            .optional()?)
    }

    pub fn org(&self, id: i64) -> Result<OrgRow> {
        let mut c = self.conn()?;
        Ok(organizations::table
            .find(id)
            .select(OrgRow::as_select())
            .first(&mut c)?)
    }

    pub fn orgs(&self) -> Result<Vec<OrgRow>> {
        let mut c = self.conn()?;
        Ok(organizations::table
            .order(organizations::slug)
            .select(OrgRow::as_select())
            .load(&mut c)?)
    }

    /// Creates or updates a connection row; settings and entities are JSON text.
    pub fn upsert_connection(
        &self,
        org_id: i64,
        name: &str,
        connector: &str,
        settings: &str,
        entities: &str,
    ) -> Result<i64> {
        let mut c = self.conn()?;
        again_on_conflict(&mut c, |c| {
            let existing: Option<i64> = connections::table
                .filter(connections::organization_id.eq(org_id))
                .filter(connections::name.eq(name))
                .select(connections::id)
                .first(c)
                .optional()?;
            match existing {
                Some(id) => {
                    diesel::update(connections::table.find(id))
                        .set((
                            connections::connector.eq(connector),
                            connections::settings.eq(settings),
                            connections::entities.eq(entities),
                        ))
                        .execute(c)?;
                    Ok(id)
                }
                None => diesel::insert_into(connections::table)
                    .values((
                        connections::organization_id.eq(org_id),
                        connections::name.eq(name),
                        connections::connector.eq(connector),
                        connections::settings.eq(settings),
                        connections::entities.eq(entities),
                    ))
                    .returning(connections::id)
                    .get_result(c),
            }
        })
        .context("cannot save connection")
    }

    pub fn connections_of(&self, org_id: i64) -> Result<Vec<ConnectionRow>> {
        let mut c = self.conn()?;
        Ok(connections::table
            .filter(connections::organization_id.eq(org_id))
            .order(connections::name)
            .select(ConnectionRow::as_select())
            .load(&mut c)?)
    }

    /// Takes the connection's lease unless another live run holds it. Atomic on both
    /// backends: a single conditional UPDATE.
    pub fn acquire_lease(&self, connection_id: i64, owner: &str, ttl_seconds: i64) -> Result<bool> {
        let mut c = self.conn()?;
        let now = now();
        let n = diesel::update(
            connections::table.find(connection_id).filter(
                connections::lease_owner
                    .is_null()
                    .or(connections::lease_expires_at.lt(now))
                    .or(connections::lease_owner.eq(owner)),
            ),
        )
        .set((
            connections::lease_owner.eq(owner),
            connections::lease_expires_at.eq(now + chrono::Duration::seconds(ttl_seconds)),
        ))
        .execute(&mut c)?;
        Ok(n == 1)
    }

    /// Extends a held lease; false when it was lost (expired and taken by another run).
    pub fn renew_lease(
        conn: &mut AnyConnection,
        connection_id: i64,
        owner: &str,
        ttl_seconds: i64,
    ) -> Result<bool> {
        let n = diesel::update(
            connections::table
                .find(connection_id)
                .filter(connections::lease_owner.eq(owner)),
        )
        .set(connections::lease_expires_at.eq(now() + chrono::Duration::seconds(ttl_seconds)))
        .execute(conn)?;
        Ok(n == 1)
    }

    pub fn release_lease(&self, connection_id: i64, owner: &str) -> Result<()> {
        let mut c = self.conn()?;
        diesel::update(
            connections::table
                .find(connection_id)
                .filter(connections::lease_owner.eq(owner)),
        )
        .set((
            connections::lease_owner.eq(None::<String>),
            connections::lease_expires_at.eq(None::<NaiveDateTime>),
        ))
        .execute(&mut c)?;
        Ok(())
    }

    pub fn credentials(&self, connection_id: i64) -> Result<Option<CredentialRow>> {
        let mut c = self.conn()?;
        Ok(credentials::table
            .find(connection_id)
            .select(CredentialRow::as_select())
            .first(&mut c)
            .optional()?)
    }

    /// Saves tokens only if the stored version is still `expected_version` (compare-and-swap),
    /// so two refreshing workers never lose the newest token. Returns whether it was saved.
    pub fn save_credentials(
        &self,
        connection_id: i64,
        access_token: Option<&str>,
        refresh_token: Option<&str>,
        expires_at: Option<NaiveDateTime>,
        endpoint: Option<&str>,
        expected_version: i64,
    ) -> Result<bool> {
        let mut c = self.conn()?;
        write_transaction(&mut c, |c| {
            let exists: Option<i64> = credentials::table
                .find(connection_id)
                .select(credentials::version)
                .first(c)
                .optional()?;
            let n = match exists {
                None if expected_version == 0 => diesel::insert_into(credentials::table)
                    .values((
                        credentials::connection_id.eq(connection_id),
                        credentials::access_token.eq(access_token),
                        credentials::refresh_token.eq(refresh_token),
                        credentials::expires_at.eq(expires_at),
                        credentials::endpoint.eq(endpoint),
                        credentials::version.eq(1i64),
                        credentials::updated_at.eq(now()),
                    ))
                    .execute(c)?,
                None => 0,
                Some(_) => diesel::update(
                    credentials::table
                        .find(connection_id)
                        .filter(credentials::version.eq(expected_version)),
                )
                .set((
                    credentials::access_token.eq(access_token),
                    credentials::refresh_token.eq(refresh_token),
                    credentials::expires_at.eq(expires_at),
                    credentials::endpoint.eq(endpoint),
                    credentials::version.eq(expected_version + 1),
                    credentials::updated_at.eq(now()),
                ))
                .execute(c)?,
            };
            Ok::<_, diesel::result::Error>(n == 1)
        })
        .context("cannot save credentials")
    }

    /// Records where the account's API lives now (a tenant that moved), keeping the tokens
    /// and their version. Nothing is saved for a connection with no credential yet.
    pub fn save_endpoint(&self, connection_id: i64, endpoint: &str) -> Result<()> {
        let mut c = self.conn()?;
        write_transaction(&mut c, |c| {
            diesel::update(credentials::table.find(connection_id))
                .set(credentials::endpoint.eq(endpoint))
                .execute(c)
        })
        .context("cannot save the API endpoint")?;
        Ok(())
    }
}
