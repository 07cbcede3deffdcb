//! The standard cases. Each is a failure seen in a sync tool's field reports, stated as
//! what the application and the hub must hold afterwards.

use std::time::Duration;

use chrono::FixedOffset;

use super::bench::{Bench, HTTP_TIMEOUT_SECONDS, MAX_RETRIES};
use super::{CaseError, CaseFn};
use crate::sandbox::{FakeControl, Fault, Target};

type Res = Result<(), CaseError>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, in the order they run.
        pub static ALL: &[(&str, CaseFn)] = &[
            $((stringify!($name), |b| Box::pin($name(b))),)*
        ];
    };
}

cases!(
    first_sync_both_ways,
    idle_run_writes_nothing,
    app_edit_reaches_hub,
    hub_edit_reaches_app,
    unmapped_data_survives_update,
    changes_during_listing,
    shared_update_time_interrupted,
    tenant_time_zone_east,
    tenant_time_zone_west,
    retry_after_seconds,
    retry_after_http_date,
    expired_access_token,
    revoked_refresh_token,
    lost_create_answer_error,
    lost_create_answer_timeout,
    awkward_text,
    malformed_record_isolated,
    secrets_stay_out_of_errors,
    deletion_follows_policy,
);

fn fail(msg: impl Into<String>) -> CaseError {
    CaseError::Fail(msg.into())
}

fn check(cond: bool, msg: impl FnOnce() -> String) -> Res {
    if cond {
        Ok(())
    } else {
        Err(fail(msg()))
    }
}

/// Not applicable to a push-only application (Ferry reads nothing from it).
fn needs_reads(b: &Bench) -> Res {
    if b.user().readable() {
        Ok(())
    } else {
        Err(CaseError::NotApplicable(
            "Ferry only sends to this application".into(),
        ))
    }
}

/// Answers the next request `target` matches with `status`, and each of its retries too.
fn fail_every_attempt(control: &FakeControl, target: Target, status: u16) {
    for _ in 0..=MAX_RETRIES {
        control.fail_next(target, Fault::Status(status));
    }
}

/// Not applicable when the application lists every record in one call (no pages).
fn needs_pages(b: &Bench) -> Res {
    if b.user().pages() {
        return Ok(());
    }
    Err(CaseError::NotApplicable(
        "the application lists every record in one call".into(),
    ))
}

/// Records the user creates in the application before a case: their names.
fn seed_app(b: &Bench, prefix: &str, n: usize) -> Vec<(String, String)> {
    (1..=n)
        .map(|i| {
            let name = format!("{prefix} {i}");
            (b.user().create(&name), name)
        })
        .collect()
}

/// First sync: records on each side appear on the other, each once.
async fn first_sync_both_ways(b: &mut Bench) -> Res {
    let readable = b.user().readable();
    if readable {
        seed_app(b, "App Company", 3);
    }
    b.hub_create("Hub Company 1")?;
    b.hub_create("Hub Company 2")?;
    b.hub_create("Hub Company 3")?;
    b.sync_clean().await?;
    b.app_holds_once(&["Hub Company 1", "Hub Company 2", "Hub Company 3"])?;
    if readable {
        b.hub_holds_once(&["App Company 1", "App Company 2", "App Company 3"])?;
    }
    Ok(())
}

/// A run with nothing changed writes nothing, lists each entity once at most and reads no
/// record one by one.
async fn idle_run_writes_nothing(b: &mut Bench) -> Res {
    if b.user().readable() {
        seed_app(b, "Idle App", 1);
    }
    b.hub_create("Idle Hub")?;
    // A page holds both records: one list call is all an idle run needs.
    b.prepared.config.page_size = Some(200);
    b.sync_clean().await?;
    b.sync_clean().await?;
    let k = b.kinds();
    let (lists, reads, writes) = (b.calls(&[k.list]), b.calls(k.reads), b.calls(k.writes));
    let r = b.sync_clean().await?;
    let hub_writes: u64 = r
        .entities
        .iter()
        .map(|e| e.counts.created_in_hub + e.counts.updated_in_hub)
        .sum();
    let (lists, reads, writes) = (
        b.calls(&[k.list]) - lists,
        b.calls(k.reads) - reads,
        b.calls(k.writes) - writes,
    );
    check(writes == 0 && hub_writes == 0, || {
        format!("an idle run wrote {writes} times to the application and {hub_writes} to the hub")
    })?;
    let most = b.user().idle_list_calls();
    check(lists <= most, || {
        format!("an idle run made {lists} list calls (at most {most})")
    })?;
    check(reads == 0, || {
        format!("an idle run read {reads} records one by one")
    })
}

/// A user's edit in the application reaches the hub.
async fn app_edit_reaches_hub(b: &mut Bench) -> Res {
    needs_reads(b)?;
    let seeded = seed_app(b, "Edit Me", 2);
    b.sync_clean().await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    check(b.user().rename(&seeded[0].0, "Edited In App"), || {
        "the fake lost the record".into()
    })?;
    b.sync_clean().await?;
    b.hub_holds_once(&["Edited In App", "Edit Me 2"])?;
    b.app_holds_once(&["Edited In App", "Edit Me 2"])
}

/// An edit in the hub reaches the application, as an update (no new record).
async fn hub_edit_reaches_app(b: &mut Bench) -> Res {
    let uid = b.hub_create("Rename Me")?;
    b.sync_clean().await?;
    b.app_holds_once(&["Rename Me"])?;
    b.hub_rename(&uid, "Renamed In Hub")?;
    b.sync_clean().await?;
    b.app_holds_once(&["Renamed In Hub"])?;
    let n = b.user().names().len();
    check(n == 1, || {
        format!("the application holds {n} records, not 1")
    })
}

/// An update leaves what Ferry does not map as it was: extra list items with their
/// descriptions, user-defined fields.
async fn unmapped_data_survives_update(b: &mut Bench) -> Res {
    needs_reads(b)?;
    let (id, _) = seed_app(b, "Keep My Extras", 1).remove(0);
    if !b.user().add_unmapped(&id) {
        return Err(CaseError::NotApplicable(
            "the application holds nothing Ferry does not map".into(),
        ));
    }
    b.sync_clean().await?;
    let uid = b
        .hub_names()?
        .into_iter()
        .find(|(_, n)| n == "Keep My Extras 1")
        .map(|(u, _)| u)
        .ok_or_else(|| fail("the record did not reach the hub"))?;
    b.hub_rename(&uid, "Kept My Extras")?;
    b.sync_clean().await?;
    b.app_holds_once(&["Kept My Extras"])?;
    b.user()
        .unmapped_intact(&id)
        .map_err(|e| fail(format!("an update lost unmapped data: {e}")))
}

/// A record created, edited or deleted while a multi-page listing is under way makes no
/// other record be skipped.
async fn changes_during_listing(b: &mut Bench) -> Res {
    needs_reads(b)?;
    needs_pages(b)?;
    let seeded = seed_app(b, "Listed", 6);
    b.sync_clean().await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (id, name) in &seeded[1..] {
        b.user().rename(id, &format!("{name} v2"));
    }
    // During the second page of the next listing: one record edited (it moves to the end
    // of an update-ordered list), one created, one deleted.
    let app = b.app();
    let (first, third) = (seeded[0].0.clone(), seeded[2].0.clone());
    let next = b.calls(&[b.kinds().list]) + 2;
    b.control().before_list(
        next,
        Box::new(move || {
            if let Some(u) = app.user() {
                u.rename(&first, "Listed 1 v2");
                u.create("Created Mid-Listing");
                u.delete(&third);
            }
        }),
    );
    b.sync().await?;
    let v2 = ["Listed 2 v2", "Listed 4 v2", "Listed 5 v2", "Listed 6 v2"];
    b.hub_holds_once(&v2)
        .map_err(|e| fail(format!("after the run with changes mid-listing: {e:?}")))?;
    b.sync_clean().await?;
    b.hub_holds_once(&v2)?;
    b.hub_holds_once(&["Listed 1 v2", "Created Mid-Listing"])
}

/// Many records sharing one update time across a page boundary, with the run broken off
/// between pages: the next run reads every one of them, each once.
async fn shared_update_time_interrupted(b: &mut Bench) -> Res {
    needs_reads(b)?;
    needs_pages(b)?;
    seed_app(b, "Before", 1);
    b.sync_clean().await?;
    let t = chrono::Utc::now() + chrono::Duration::seconds(2);
    b.control().set_clock(Some(t));
    let seeded = seed_app(b, "Same Second", 5);
    b.control().set_clock(None);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The second page of the next listing fails for good (every retry too).
    let app = b.app();
    let next = b.calls(&[b.kinds().list]) + 2;
    let list = b.kinds().list;
    b.control().before_list(
        next,
        Box::new(move || fail_every_attempt(app.control(), Target::Kind(list), 503)),
    );
    let broken = b.sync().await?;
    check(broken.has_errors(), || {
        "the run with a failing page reported no error".into()
    })?;
    b.sync_clean().await?;
    let names: Vec<&str> = seeded.iter().map(|(_, n)| n.as_str()).collect();
    b.hub_holds_once(&names)
}

async fn in_zone(b: &mut Bench, hours: i32) -> Res {
    needs_reads(b)?;
    if !b.user().reports_times() {
        return Err(CaseError::NotApplicable(
            "the application reports no update times".into(),
        ));
    }
    let zone = FixedOffset::east_opt(hours * 3600).ok_or_else(|| fail("bad zone"))?;
    b.control().set_zone(Some(zone));
    let (id, _) = seed_app(b, "Zoned", 1).remove(0);
    let uid = b.hub_create("Zoned Hub")?;
    b.sync_clean().await?;
    for round in 1..=2 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        b.user().rename(&id, &format!("Zoned edit {round}"));
        b.sync_clean().await?;
        b.hub_holds_once(&[&format!("Zoned edit {round}")])?;
    }
    b.hub_rename(&uid, "Zoned Hub edit")?;
    b.sync_clean().await?;
    b.app_holds_once(&["Zoned Hub edit", "Zoned edit 2"])?;
    let app_uid = b
        .hub_names()?
        .into_iter()
        .find(|(_, n)| n == "Zoned edit 2")
        .map(|(u, _)| u)
        .ok_or_else(|| fail("the application's record is not in the hub"))?;
    later_edit_wins(b, &id, &app_uid).await
}

/// Both sides edit one record a second apart, each way round: the later edit wins
/// ("newest"), which only holds when the application's times are read in the right zone.
async fn later_edit_wins(b: &mut Bench, id: &str, uid: &str) -> Res {
    let gap = Duration::from_millis(1100);
    for (first_in_app, earlier, later) in [
        (false, "Hub earlier", "App later"),
        (true, "App earlier", "Hub later"),
    ] {
        tokio::time::sleep(gap).await;
        if first_in_app {
            b.user().rename(id, earlier);
            tokio::time::sleep(gap).await;
            b.hub_rename(uid, later)?;
        } else {
            b.hub_rename(uid, earlier)?;
            tokio::time::sleep(gap).await;
            b.user().rename(id, later);
        }
        b.sync_clean().await?;
        b.hub_holds_once(&[later])
            .map_err(|e| fail(format!("the later edit lost a conflict: {e:?}")))?;
        b.app_holds_once(&[later])?;
    }
    Ok(())
}

/// The tenant's clock runs in a zone east of UTC (UTC+9): edits are still read, in order.
async fn tenant_time_zone_east(b: &mut Bench) -> Res {
    in_zone(b, 9).await
}

/// The tenant's clock runs in a zone west of UTC (UTC-8).
async fn tenant_time_zone_west(b: &mut Bench) -> Res {
    in_zone(b, -8).await
}

/// A 429's Retry-After is honoured: the call is repeated after it, and the run succeeds.
async fn rate_limited(b: &mut Bench, fault: Fault, at_least: Duration) -> Res {
    let readable = b.user().readable();
    if readable {
        seed_app(b, "Throttled App", 1);
    }
    b.hub_create("Throttled Hub")?;
    let k = b.kinds();
    let kind = if readable { k.list } else { k.create };
    b.control().fail_next(Target::Kind(kind), fault);
    b.sync_clean().await?;
    b.app_holds_once(&["Throttled Hub"])?;
    if readable {
        b.hub_holds_once(&["Throttled App 1"])?;
    }
    let times = b.control().arrivals(kind);
    let gap = match times.as_slice() {
        [first, second, ..] => second.duration_since(*first),
        _ => return Err(fail(format!("{kind} was not called again after the 429"))),
    };
    check(gap >= at_least, || {
        format!("the call after a 429 came {gap:?} later; Retry-After asked for {at_least:?}")
    })
}

async fn retry_after_seconds(b: &mut Bench) -> Res {
    rate_limited(b, Fault::RetryAfterSeconds(1), Duration::from_millis(950)).await
}

/// Retry-After as an HTTP date (whole seconds): at least a second away.
async fn retry_after_http_date(b: &mut Bench) -> Res {
    let fault = Fault::RetryAfterDate(Duration::from_secs(2));
    rate_limited(b, fault, Duration::from_millis(950)).await
}

/// An access token that expired is renewed, and the run goes on.
async fn expired_access_token(b: &mut Bench) -> Res {
    let uid = b.hub_create("Token Hub")?;
    b.sync_clean().await?;
    if !b.user().expire_access_tokens() {
        return Err(CaseError::NotApplicable(
            "the application has no expiring access tokens".into(),
        ));
    }
    b.hub_rename(&uid, "Token Hub renewed")?;
    b.sync_clean().await?;
    b.app_holds_once(&["Token Hub renewed"])
}

/// A revoked refresh token stops the run with one connection-level error that says how to
/// recover, not an error per record.
async fn revoked_refresh_token(b: &mut Bench) -> Res {
    if b.user().readable() {
        seed_app(b, "Revoked App", 2);
    }
    let uid = b.hub_create("Revoked Hub")?;
    b.sync_clean().await?;
    if !(b.user().revoke_refresh_token() && b.user().expire_access_tokens()) {
        return Err(CaseError::NotApplicable(
            "the application has no refresh tokens".into(),
        ));
    }
    b.hub_rename(&uid, "Revoked Hub edit")?;
    for i in 1..=3 {
        b.hub_create(&format!("Revoked New {i}"))?;
    }
    let r = b.sync().await?;
    let record_errors = b.idmaps().iter().filter(|m| m.last_error.is_some()).count();
    check(record_errors == 0, || {
        format!(
            "{record_errors} records carry the revoked token's error: {}",
            b.errors(&r)
        )
    })?;
    let messages: Vec<String> = r.entities.iter().filter_map(|e| e.error.clone()).collect();
    check(r.has_errors() && !messages.is_empty(), || {
        format!("the run reported no connection error ({:?})", r.status)
    })?;
    let text = messages.join(" ").to_lowercase();
    check(
        text.contains("refresh token") && text.contains("authorize ferry again"),
        || format!("the error does not say the grant is gone and how to recover: {messages:?}"),
    )
}

/// A create whose answer is lost after the application stored it makes no duplicate.
async fn lost_create(b: &mut Bench, fault: Fault) -> Res {
    b.hub_create("Lost Answer")?;
    let create = b.kinds().create;
    b.control().fail_next(Target::Kind(create), fault);
    let _ = b.sync().await?;
    b.sync_clean().await?;
    b.sync_clean().await?;
    b.app_holds_once(&["Lost Answer"])?;
    b.hub_holds_once(&["Lost Answer"])
}

async fn lost_create_answer_error(b: &mut Bench) -> Res {
    lost_create(b, Fault::StoreThenFail(500)).await
}

async fn lost_create_answer_timeout(b: &mut Bench) -> Res {
    let past = Duration::from_secs(HTTP_TIMEOUT_SECONDS + 2);
    lost_create(b, Fault::StoreThenHang(past)).await
}

/// Text with quotes, markup characters, non-ASCII, emoji and a control character either
/// arrives exactly or is refused with a per-record error naming it; never sent malformed.
async fn awkward_text(b: &mut Bench) -> Res {
    let names = [
        "Quote \"double\" and 'single'",
        "Markup & <angle> > brackets",
        "Ærøskøbing Ünïcödé 東京",
        "Emoji 🚢⚓ Shipping",
        "Vertical\u{000B}Tab",
    ];
    for n in names {
        b.hub_create(n)?;
    }
    let readable = b.user().readable();
    if readable {
        for n in &names[..4] {
            b.user().create(&format!("{n} (app)"));
        }
    }
    let _ = b.sync().await?;
    let off = b.control().off_contract();
    check(off.is_empty(), || {
        format!("Ferry sent requests the application refuses: {off:?}")
    })?;
    let held = b.user().names();
    let maps = b.idmaps();
    for n in names {
        let arrived = held.iter().filter(|(_, h)| h == n).count();
        let refused = maps.iter().any(|m| {
            m.last_error
                .as_deref()
                .is_some_and(|e| e.contains("U+000B"))
                && m.external_id.is_none()
        });
        let ok = arrived == 1 || (arrived == 0 && n.contains('\u{000B}') && refused);
        check(ok, || {
            format!("{n:?} arrived {arrived} times and was not refused with an error naming it")
        })?;
    }
    if readable {
        let back: Vec<String> = names[..4].iter().map(|n| format!("{n} (app)")).collect();
        let back: Vec<&str> = back.iter().map(String::as_str).collect();
        b.hub_holds_once(&back)?;
    }
    Ok(())
}

/// One malformed record in a page is set aside and named; the others arrive.
async fn malformed_record_isolated(b: &mut Bench) -> Res {
    needs_reads(b)?;
    let seeded = seed_app(b, "Page Mate", 3);
    let bad = &seeded[1].0;
    if !b.user().corrupt(bad) {
        return Err(CaseError::NotApplicable(
            "the fake cannot serve a malformed record".into(),
        ));
    }
    let r = b.sync().await?;
    b.hub_holds_once(&["Page Mate 1", "Page Mate 3"])?;
    let named = b
        .idmaps()
        .iter()
        .any(|m| m.external_id.as_deref() == Some(bad.as_str()) && m.last_error.is_some())
        || r.entities
            .iter()
            .filter_map(|e| e.error.as_deref())
            .any(|e| e.contains(bad.as_str()));
    check(named, || {
        format!(
            "no error names the malformed record {bad}: {}",
            b.errors(&r)
        )
    })
}

/// Failing calls (whose URLs may hold tokens) leave no secret in any stored error; every
/// case also checks this when it ends.
async fn secrets_stay_out_of_errors(b: &mut Bench) -> Res {
    let readable = b.user().readable();
    if readable {
        seed_app(b, "Secretive App", 1);
    }
    b.hub_create("Secretive Hub")?;
    let k = b.kinds();
    let kind = if readable { k.list } else { k.create };
    fail_every_attempt(b.control(), Target::Kind(kind), 500);
    let r = b.sync().await?;
    check(r.has_errors(), || {
        "the failing run reported no error".into()
    })?;
    b.control()
        .fail_next(Target::Kind(k.create), Fault::Status(400));
    b.hub_create("Secretive Hub 2")?;
    let _ = b.sync().await?;
    match b.first_leak() {
        Some(leak) => Err(fail(leak)),
        None => Ok(()),
    }
}

/// Deletions follow the entity's deletion policy.
async fn deletion_follows_policy(_b: &mut Bench) -> Res {
    Err(CaseError::NotApplicable(
        "deletion policies do not exist yet (issue 19)".into(),
    ))
}
