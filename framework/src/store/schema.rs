//! Diesel table definitions, written by hand to use the same Rust types on both backends.

diesel::table! {
    organizations (id) {
        id -> BigInt,
        slug -> Text,
        name -> Text,
        sync_enabled -> Bool,
        date_filtering_limit -> Nullable<Timestamp>,
        hub_seq -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    connections (id) {
        id -> BigInt,
        organization_id -> BigInt,
        name -> Text,
        connector -> Text,
        settings -> Text,
        entities -> Text,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    credentials (connection_id) {
        connection_id -> BigInt,
        access_token -> Nullable<Text>,
        refresh_token -> Nullable<Text>,
        expires_at -> Nullable<Timestamp>,
        version -> BigInt,
        updated_at -> Timestamp,
        endpoint -> Nullable<Text>,
    }
}

diesel::table! {
    hub_records (id) {
        id -> BigInt,
        organization_id -> BigInt,
        entity -> Text,
        uid -> Text,
        data -> Text,
        seq -> BigInt,
        match_key -> Nullable<Text>,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
        origin_connection_id -> Nullable<BigInt>,
        content_hash -> Nullable<Text>,
        field_times -> Nullable<Text>,
    }
}

diesel::table! {
    id_maps (id) {
        id -> BigInt,
        connection_id -> BigInt,
        hub_entity -> Text,
        hub_id -> Nullable<Text>,
        external_entity -> Text,
        external_id -> Nullable<Text>,
        state -> Text,
        hub_hash -> Nullable<Text>,
        ext_hash -> Nullable<Text>,
        last_push_to_hub -> Nullable<Timestamp>,
        last_push_to_external -> Nullable<Timestamp>,
        to_hub -> Bool,
        to_external -> Bool,
        name -> Nullable<Text>,
        last_error -> Nullable<Text>,
        retry_to -> Nullable<Text>,
        metadata -> Nullable<Text>,
        updated_at -> Timestamp,
        base -> Nullable<Text>,
    }
}

diesel::table! {
    sync_cursors (connection_id, entity) {
        connection_id -> BigInt,
        entity -> Text,
        watermark -> Nullable<Timestamp>,
        hub_seq -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    sync_runs (id) {
        id -> BigInt,
        connection_id -> BigInt,
        status -> Text,
        options -> Text,
        counts -> Text,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        message -> Nullable<Text>,
    }
}

diesel::joinable!(connections -> organizations (organization_id));
diesel::joinable!(sync_runs -> connections (connection_id));
diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    connections,
    credentials,
    hub_records,
    id_maps,
    sync_cursors,
    sync_runs,
    jobs,
    webhook_events,
    api_keys,
    conflicts,
);

diesel::table! {
    conflicts (id) {
        id -> BigInt,
        connection_id -> BigInt,
        id_map_id -> BigInt,
        hub_entity -> Text,
        hub_id -> Text,
        external_id -> Text,
        field -> Text,
        hub_value -> Text,
        external_value -> Text,
        hub_time -> Nullable<Timestamp>,
        external_time -> Nullable<Timestamp>,
        winner -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    jobs (id) {
        id -> BigInt,
        kind -> Text,
        payload -> Text,
        dedupe_key -> Nullable<Text>,
        status -> Text,
        run_at -> Timestamp,
        attempts -> Integer,
        max_attempts -> Integer,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> BigInt,
        connection_id -> BigInt,
        provider_event_id -> Text,
        event -> Text,
        entity -> Nullable<Text>,
        record_id -> Nullable<Text>,
        payload -> Text,
        status -> Text,
        reason -> Nullable<Text>,
        job_id -> Nullable<BigInt>,
        received_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> BigInt,
        organization_id -> BigInt,
        key_hash -> Text,
        prefix -> Text,
        scope -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}
