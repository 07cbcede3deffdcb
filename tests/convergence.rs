//! A model-based test of the engine's model of change: random sequences of edits (in
//! SuperOffice tenant A, tenant B, or the hub), syncs of A or B, failed writes and writes
//! whose answer is lost, run against the real engine and fakes, and against a model of the
//! three-way merge (DESIGN.md §5). After every sequence the applications and the hub hold
//! exactly what the model says (every field at the edit that wins under the policy), no
//! record is lost or duplicated, and an idle run writes nothing. SQLite always, PostgreSQL
//! when FERRY_TEST_POSTGRES_URL is set. A failing sequence prints its seed.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use common::{backends, connection, org, Hub};
use ferry_connectors::superoffice::fake::{FakeSuperOffice, Fault, Target};
use ferry_framework::config::{ConflictPolicy, EntitySelection, Settings};
use ferry_framework::hub::HubModel;
use ferry_framework::secrets::Cipher;
use ferry_framework::store::Store;
use ferry_framework::sync::{Engine, Prepared, SyncOptions};

/// The fields the sequences edit: (hub field, how SuperOffice holds it).
const FIELDS: [&str; 3] = ["department", "org_number", "phone"];

/// A small deterministic generator (splitmix64): sequences are reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    EditApp(usize, usize),
    EditHub(usize),
    Sync(usize),
    /// The next write to this application is refused (HTTP 400).
    FailWrite(usize),
    /// The next write to this application lands, but its answer never reaches Ferry (the
    /// connection breaks after the application stored it; the retry meets the same).
    LoseAnswer(usize),
    /// A sync of this application killed (interrupted) while its write hangs after the
    /// application stored it.
    Kill(usize),
}

fn op(rng: &mut Rng) -> Op {
    let side = rng.below(2);
    match rng.below(10) {
        0..=2 => Op::EditApp(side, rng.below(3)),
        3 => Op::EditHub(rng.below(3)),
        4..=6 => Op::Sync(side),
        7 => Op::Kill(side),
        8 => Op::FailWrite(side),
        _ => Op::LoseAnswer(side),
    }
}

type Vals = BTreeMap<&'static str, String>;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Armed {
    Refuse,
    LoseAnswer,
}

/// The model: what each side holds, the hub's per-field edit times, each connection's
/// base and what it last saw of its application.
#[derive(Clone)]
struct Model {
    policy: ConflictPolicy,
    apps: [Vals; 2],
    /// Each application's record update time (seconds on the test's timeline).
    app_time: [i64; 2],
    hub: Vals,
    hub_time: BTreeMap<&'static str, i64>,
    base: [Vals; 2],
    seen: [Vals; 2],
    armed: [Option<Armed>; 2],
    /// What the last update whose answer never came sent (Ferry records it first).
    sent: [Vals; 2],
}

impl Model {
    /// Whether a sync of `x` now would write to it (after its pull), with nothing armed.
    fn would_write(&self, x: usize) -> bool {
        let mut after = self.clone();
        after.armed[x] = Some(Armed::Refuse);
        after.sync(x, 0);
        self.armed[x].is_none() && after.armed[x].is_none()
    }

    fn sync(&mut self, x: usize, now: i64) {
        // Pull: a record unchanged since Ferry last saw it is not settled again.
        if self.apps[x] != self.seen[x] {
            for (f, v) in std::mem::take(&mut self.sent[x]) {
                if self.apps[x][f] == v {
                    self.base[x].insert(f, v);
                }
            }
            for f in FIELDS {
                let (ext, base) = (self.apps[x][f].clone(), self.base[x][f].clone());
                let hub = self.hub[f].clone();
                if ext == base || ext == hub {
                    continue;
                }
                let take = hub == base
                    || match self.policy {
                        ConflictPolicy::Hub => false,
                        ConflictPolicy::External => true,
                        ConflictPolicy::Newest => self.app_time[x] >= self.hub_time[f],
                    };
                if take {
                    self.hub.insert(f, ext);
                    self.hub_time.insert(f, self.app_time[x]);
                } else {
                    // The losing value is settled; the hub's stays pending for x.
                    self.base[x].insert(f, ext);
                }
            }
            for f in FIELDS {
                if self.hub[f] == self.apps[x][f] {
                    self.base[x].insert(f, self.hub[f].clone());
                }
            }
            self.seen[x] = self.apps[x].clone();
        }
        // Push: what changed in the hub since the base.
        let changed: Vec<&str> = FIELDS
            .into_iter()
            .filter(|f| self.hub[f] != self.base[x][f])
            .collect();
        if changed.is_empty() {
            return;
        }
        let armed = self.armed[x].take();
        if armed == Some(Armed::Refuse) {
            // A refusal is an answer: nothing sent is in the application.
            self.sent[x] = Vals::new();
            return;
        }
        self.sent[x] = changed.iter().map(|f| (*f, self.hub[f].clone())).collect();
        for f in &changed {
            self.apps[x].insert(f, self.hub[f].clone());
        }
        self.app_time[x] = now;
        if armed == Some(Armed::LoseAnswer) {
            return;
        }
        for f in changed {
            self.base[x].insert(f, self.hub[f].clone());
        }
        self.sent[x] = Vals::new();
        self.seen[x] = self.apps[x].clone();
    }
}

fn so_fields(f: &str, v: &str) -> Value {
    match f {
        "department" => json!({"Department": v}),
        "org_number" => json!({"OrgNr": v}),
        _ => json!({"Phones": [{"Value": v, "StrippedValue": v, "Description": ""}]}),
    }
}

fn so_vals(c: &Value) -> Vals {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    [
        ("department", s(&c["Department"])),
        ("org_number", s(&c["OrgNr"])),
        ("phone", s(&c["Phones"][0]["Value"])),
    ]
    .into()
}

fn hub_vals(h: &Value) -> Vals {
    FIELDS
        .into_iter()
        .map(|f| (f, h[f].as_str().unwrap_or_default().to_string()))
        .collect()
}

struct World {
    engine: Engine,
    conns: Vec<Prepared>,
    so: [FakeSuperOffice; 2],
    org_id: i64,
}

impl Hub for World {
    fn engine(&self) -> &Engine {
        &self.engine
    }
    fn org_id(&self) -> i64 {
        self.org_id
    }
}

async fn world(url: &str, policy: ConflictPolicy) -> World {
    ferry_connectors::link();
    let repo = common::repo();
    let mut settings = Settings::with_base(&repo, url);
    settings.sync.max_retries = 1;
    let hub = HubModel::load(&repo.join("config/hub.yml")).unwrap();
    let store = Store::open_and_migrate(url).unwrap();
    let cipher = Cipher::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let engine = Engine::new(store, hub, settings, cipher);
    let so = [FakeSuperOffice::new(), FakeSuperOffice::new()];
    let sel = EntitySelection {
        conflict: policy,
        ..Default::default()
    };
    let mut configs = Vec::new();
    for (i, fake) in so.iter().enumerate() {
        let addr = fake.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        configs.push(connection(
            ["a", "b"][i],
            "superoffice",
            FakeSuperOffice::settings(addr),
            &["organization"],
            sel.clone(),
        ));
    }
    let org = org(configs.clone());
    let conns: Vec<Prepared> = configs
        .iter()
        .map(|c| {
            engine
                .prepare(&org, c, Some(FakeSuperOffice::secrets()))
                .unwrap()
        })
        .collect();
    let org_id = conns[0].org_id;
    World {
        engine,
        conns,
        so,
        org_id,
    }
}

impl World {
    async fn sync(&self, x: usize) {
        self.engine
            .run(&self.conns[x], &SyncOptions::default(), &|_| {})
            .await
            .unwrap();
    }

    fn contact(&self, x: usize) -> Value {
        let all = self.so[x].contacts();
        assert_eq!(all.len(), 1, "a record was lost or duplicated: {all:?}");
        all.into_iter().next().unwrap()
    }

    fn hub_record(&self) -> ferry_framework::store::hub::HubRecord {
        let all = self.hub("Organization");
        assert_eq!(all.len(), 1, "a hub record was lost or duplicated: {all:?}");
        all.into_iter().next().unwrap()
    }

    fn set_clocks(&self, t: DateTime<Utc>) {
        for f in &self.so {
            f.set_clock(Some(t));
        }
    }
}

/// Runs one sequence; panics with the seed on any difference from the model.
async fn run_sequence(url: &str, seed: u64, len: usize) {
    let mut rng = Rng(seed);
    let policy = [
        ConflictPolicy::Newest,
        ConflictPolicy::Hub,
        ConflictPolicy::External,
    ][rng.below(3)];
    let w = world(url, policy).await;
    let start = DateTime::from_timestamp(Utc::now().timestamp() - 3600, 0).unwrap();
    let at = |t: i64| start + Duration::seconds(t);
    let mut t = 0;
    w.set_clocks(at(t));
    let first: Vals = FIELDS
        .into_iter()
        .map(|f| (f, format!("first-{f}")))
        .collect();
    let mut body = json!({"Name": "Model AS"});
    for (f, v) in &first {
        for (k, x) in so_fields(f, v).as_object().unwrap() {
            body[k] = x.clone();
        }
    }
    let id = w.so[0].add_contact("Model AS", "", "");
    w.so[0].edit("Contact", id, body);
    t += 1;
    w.set_clocks(at(t));
    w.sync(0).await;
    w.sync(1).await;
    let mut m = Model {
        policy,
        apps: [first.clone(), first.clone()],
        app_time: [0, t],
        hub: first.clone(),
        hub_time: FIELDS.into_iter().map(|f| (f, 0)).collect(),
        base: [first.clone(), first.clone()],
        seen: [first.clone(), first],
        armed: [None, None],
        sent: [Vals::new(), Vals::new()],
    };
    let mut ops = Vec::new();
    for n in 0..len {
        t += 1;
        w.set_clocks(at(t));
        let o = op(&mut rng);
        ops.push(o);
        match o {
            Op::EditApp(x, f) => {
                let v = format!("{}-{}-{n}", ["a", "b"][x], FIELDS[f]);
                let cid = w.contact(x)["ContactId"].as_i64().unwrap();
                w.so[x].edit("Contact", cid, so_fields(FIELDS[f], &v));
                m.apps[x].insert(FIELDS[f], v);
                m.app_time[x] = t;
            }
            Op::EditHub(f) => {
                let v = format!("hub-{}-{n}", FIELDS[f]);
                let h = w.hub_record();
                let mut data = h.data.clone();
                data[FIELDS[f]] = json!(v);
                w.engine
                    .store
                    .hub_put(
                        &w.engine.hub,
                        w.org_id,
                        "Organization",
                        Some(&h.uid),
                        data,
                        Some(at(t)),
                    )
                    .unwrap();
                m.hub.insert(FIELDS[f], v);
                m.hub_time.insert(FIELDS[f], t);
            }
            Op::Sync(x) => {
                w.sync(x).await;
                m.sync(x, t);
            }
            Op::FailWrite(x) if m.armed[x].is_none() => {
                w.so[x].fail_next(Target::Update, Fault::Status(400));
                m.armed[x] = Some(Armed::Refuse);
            }
            Op::LoseAnswer(x) if m.armed[x].is_none() => {
                // The retry meets the same: the run learns nothing of either write.
                w.so[x].fail_next(Target::Update, Fault::StoreThenFail(500));
                w.so[x].fail_next(Target::Update, Fault::StoreThenFail(500));
                m.armed[x] = Some(Armed::LoseAnswer);
            }
            Op::Kill(x) if m.would_write(x) => {
                let hang = std::time::Duration::from_secs(30);
                w.so[x].fail_next(Target::Update, Fault::StoreThenHang(hang));
                let stop = w.engine.interrupter();
                let opts = SyncOptions::default();
                let run = w.engine.run(&w.conns[x], &opts, &|_| {});
                let kill = async {
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                    stop.interrupt();
                };
                let (result, ()) = tokio::join!(run, kill);
                assert!(result.is_err(), "seed {seed}: the killed run finished");
                w.engine.resume();
                m.armed[x] = Some(Armed::LoseAnswer);
                m.sync(x, t);
            }
            Op::Kill(x) => {
                w.sync(x).await;
                m.sync(x, t);
            }
            Op::FailWrite(_) | Op::LoseAnswer(_) => {}
        }
        let state = |w: &World| {
            (
                so_vals(&w.contact(0)),
                so_vals(&w.contact(1)),
                hub_vals(&w.hub_record().data),
            )
        };
        let (a, b, hub) = state(&w);
        let expected = (m.apps[0].clone(), m.apps[1].clone(), m.hub.clone());
        assert_eq!(
            (a, b, hub),
            expected,
            "seed {seed} ({policy:?}) on {url}: after {ops:?}"
        );
    }
    // Quiesce: whatever is still armed fires, then everything settles.
    for _ in 0..3 {
        for x in 0..2 {
            t += 1;
            w.set_clocks(at(t));
            w.sync(x).await;
            m.sync(x, t);
        }
    }
    let (a, b, hub) = (
        so_vals(&w.contact(0)),
        so_vals(&w.contact(1)),
        hub_vals(&w.hub_record().data),
    );
    assert_eq!(
        (&a, &b),
        (&hub, &hub),
        "seed {seed} ({policy:?}) on {url}: not converged after {ops:?}"
    );
    assert_eq!(
        hub, m.hub,
        "seed {seed} ({policy:?}) on {url}: after {ops:?}"
    );
    let writes = w.so[0].writes() + w.so[1].writes();
    let seq = w.hub_seq();
    w.sync(0).await;
    w.sync(1).await;
    assert_eq!(
        w.so[0].writes() + w.so[1].writes(),
        writes,
        "seed {seed}: an idle run wrote"
    );
    assert_eq!(
        w.hub_seq(),
        seq,
        "seed {seed}: an idle run wrote to the hub"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn random_edits_syncs_and_failures_converge_to_the_policys_winners() {
    let seeds: u64 = std::env::var("FERRY_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let first: u64 = std::env::var("FERRY_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for seed in first..first + seeds {
        let dir = tempfile::tempdir().unwrap();
        for db in backends(dir.path()) {
            run_sequence(&db, seed, 30).await;
        }
    }
}
