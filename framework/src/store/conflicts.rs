//! The conflict log: every field both sides changed to different values, with both values,
//! both edit times and the side that won. `ferry idmaps --conflicts`, `ferry status` and
//! the API read it.

use anyhow::Result;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::conflicts;
use super::{AnyConnection, Store};

/// One settled conflict as stored.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = conflicts)]
pub struct ConflictRow {
    pub id: i64,
    pub connection_id: i64,
    pub id_map_id: i64,
    pub hub_entity: String,
    pub hub_id: String,
    pub external_id: String,
    /// The field, as its mapping names it in the hub (`email`, `address.city`).
    pub field: String,
    /// Both values as JSON text.
    pub hub_value: String,
    pub external_value: String,
    /// The edit times compared, as their sources reported them (UTC).
    #[schema(value_type = Option<String>)]
    pub hub_time: Option<NaiveDateTime>,
    #[schema(value_type = Option<String>)]
    pub external_time: Option<NaiveDateTime>,
    /// `hub` or `application`.
    pub winner: String,
    #[schema(value_type = String)]
    pub created_at: NaiveDateTime,
}

/// A conflict to record (the id map's id may be 0 for a record linked in the same page).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = conflicts)]
pub struct NewConflict {
    pub connection_id: i64,
    pub id_map_id: i64,
    pub hub_entity: String,
    pub hub_id: String,
    pub external_id: String,
    pub field: String,
    pub hub_value: String,
    pub external_value: String,
    pub hub_time: Option<NaiveDateTime>,
    pub external_time: Option<NaiveDateTime>,
    pub winner: String,
    pub created_at: NaiveDateTime,
}

impl Store {
    /// Records conflicts in the caller's transaction.
    pub fn record_conflicts(c: &mut AnyConnection, rows: &[NewConflict]) -> Result<()> {
        for r in rows {
            diesel::insert_into(conflicts::table).values(r).execute(c)?;
        }
        Ok(())
    }

    /// The newest conflicts of some connections, newest first, at most `limit`.
    pub fn conflicts_of(&self, connection_ids: &[i64], limit: i64) -> Result<Vec<ConflictRow>> {
        let mut c = self.conn()?;
        Ok(conflicts::table
            .filter(conflicts::connection_id.eq_any(connection_ids))
            .order(conflicts::id.desc())
            .limit(limit)
            .select(ConflictRow::as_select())
            .load(&mut c)?)
    }

    /// How many conflicts a connection has recorded.
    pub fn conflict_count(&self, connection_id: i64) -> Result<i64> {
        let mut c = self.conn()?;
        Ok(conflicts::table
            .filter(conflicts::connection_id.eq(connection_id))
            .count()
            .get_result(&mut c)?)
    }
}
