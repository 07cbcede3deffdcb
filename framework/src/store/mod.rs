//! Ferry's own database: SQLite (bundled, the embedded default) or PostgreSQL (a `postgres://`
//! URL), through one diesel `MultiConnection`. Each submodule is one table family's repository.

pub mod apikeys;
pub mod conflicts;
pub mod hub;
pub mod idmaps;
pub mod jobs;
pub mod orgs;
pub mod runs;
pub mod schema;

use std::os::unix::fs::OpenOptionsExt as _;

use anyhow::{anyhow, Context, Result};
use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// Either backend behind one connection type (PostgreSQL first: the derived `establish`
/// tries variants in order).
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs the same diesel query on whichever backend `c` is, for SQL the shared backend type
/// cannot express (`ON CONFLICT DO NOTHING`).
macro_rules! on_backend {
    ($c:expr, |$conn:ident| $body:expr) => {
        match $c {
            AnyConnection::Postgresql($conn) => $body,
            AnyConnection::Sqlite($conn) => $body,
        }
    };
}

pub(crate) use on_backend;

/// New rows in bulk: PostgreSQL takes them in one binary `COPY` (no statement to parse, no
/// bound-parameter limit, a fraction of the time of a multi-row `INSERT`), SQLite one row
/// at a time through a statement prepared once and cached (in-process, a step costs less
/// than parsing a page-sized multi-row `INSERT` again for every page).
macro_rules! insert_many {
    ($c:expr, $table:expr, $rows:expr) => {
        match $c {
            AnyConnection::Postgresql(pg) => {
                if !$rows.is_empty() {
                    diesel::copy_from($table)
                        .from_insertable($rows)
                        .execute(pg)?;
                }
            }
            AnyConnection::Sqlite(lite) => {
                for row in $rows {
                    diesel::insert_into($table).values(row).execute(lite)?;
                }
            }
        }
    };
}

pub(crate) use insert_many;

pub type Conn = PooledConnection<ConnectionManager<AnyConnection>>;

type Manager = <AnyConnection as Connection>::TransactionManager;

/// Begins a write transaction: on SQLite `BEGIN IMMEDIATE`, which takes the write lock at
/// once (waiting up to the busy timeout). A deferred transaction that reads and then writes
/// fails at once with "database is locked" when another connection wrote in between, busy
/// timeout or not (<https://www.sqlite.org/lang_transaction.html>, "Read transactions"
/// and SQLITE_BUSY). Inside a transaction already, a savepoint.
pub fn begin_write(c: &mut AnyConnection) -> diesel::QueryResult<()> {
    let depth = Manager::transaction_manager_status_mut(c).transaction_depth()?;
    match c {
        AnyConnection::Sqlite(lite) if depth.is_none() => {
            diesel::connection::AnsiTransactionManager::begin_transaction_sql(
                lite,
                "BEGIN IMMEDIATE",
            )
        }
        _ => Manager::begin_transaction(c),
    }
}

/// Runs `f` in a write transaction (see [`begin_write`]): committed when `f` returns `Ok`,
/// rolled back when it returns `Err`. Every transaction that writes uses this, never
/// `Connection::transaction`.
pub fn write_transaction<T, E>(
    c: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> std::result::Result<T, E>,
) -> std::result::Result<T, E>
where
    E: From<diesel::result::Error>,
{
    begin_write(c)?;
    match f(c) {
        Ok(value) => {
            Manager::commit_transaction(c)?;
            Ok(value)
        }
        Err(e) => match Manager::rollback_transaction(c) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(e),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A pool of connections to Ferry's database.
#[derive(Clone)]
pub struct Store {
    pool: Pool<ConnectionManager<AnyConnection>>,
    pub backend: Backend,
    pub url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        if let AnyConnection::Sqlite(c) = conn {
            // Checkpoints every 8000 WAL pages (32 MB), not SQLite's 1000, and a 16 MB page
            // cache, not 2 MB: a sync's inserts land on index pages all over random-id
            // indexes; each checkpoint wrote the same pages again, and a small cache read
            // them back and spilled them. Statement journals stay in memory rather than in
            // temporary files (docs/PERFORMANCE.md has the figures).
            c.batch_execute(
                "PRAGMA busy_timeout = 10000; PRAGMA synchronous = NORMAL; \
                 PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 8000; PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
            )
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Store {
    /// Opens the database at `url` (a SQLite file path, created with its directory if
    /// missing, or a `postgres://` URL). Connection errors are reported, not swallowed.
    pub fn open(url: &str) -> Result<Store> {
        let backend = if is_postgres(url) {
            PgConnection::establish(url).map_err(|e| {
                anyhow!(
                    "cannot connect to PostgreSQL at {}: {}",
                    redact(url),
                    scrub(&e.to_string(), url)
                )
            })?;
            Backend::Postgres
        } else {
            if let Some(dir) = std::path::Path::new(url).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
            }
            create_private(url)?;
            switch_to_wal(url)?;
            Backend::Sqlite
        };
        let pool = Pool::builder()
            .max_size(if backend == Backend::Sqlite { 4 } else { 8 })
            .connection_customizer(Box::new(SqlitePragmas))
            .build(ConnectionManager::<AnyConnection>::new(url))
            .map_err(|e| anyhow!("cannot open a connection pool: {e}"))?;
        Ok(Store {
            pool,
            backend,
            url: url.to_string(),
        })
    }

    /// Opens and brings the schema up to date.
    pub fn open_and_migrate(url: &str) -> Result<Store> {
        let s = Self::open(url)?;
        s.migrate()?;
        Ok(s)
    }

    pub fn conn(&self) -> Result<Conn> {
        self.pool
            .get()
            .map_err(|e| anyhow!("cannot get a database connection: {e}"))
    }

    /// Runs pending migrations; returns how many were applied. Processes starting at once
    /// take turns: on PostgreSQL under a session advisory lock, on SQLite under an exclusive
    /// lock on a file beside the database (else both read "not applied yet" and the second
    /// fails on a duplicate key or a locked database).
    pub fn migrate(&self) -> Result<usize> {
        let mut c = self.conn()?;
        let applied = match &mut *c {
            AnyConnection::Sqlite(c) => {
                let _turn = self.migration_file_lock()?;
                c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len())
            }
            AnyConnection::Postgresql(c) => {
                c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
                let applied = c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.len());
                c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))?;
                applied
            }
        };
        applied.map_err(|e| anyhow!("migration failed: {e}"))
    }

    /// The exclusive lock SQLite migrations run under, held until dropped (none for an
    /// in-memory database).
    fn migration_file_lock(&self) -> Result<Option<std::fs::File>> {
        if self.url == ":memory:" {
            return Ok(None);
        }
        let path = format!("{}.migrate.lock", self.url);
        let file = open_lock_file(&path)?;
        file.lock().with_context(|| format!("cannot lock {path}"))?;
        Ok(Some(file))
    }
}

/// Opens (creating, mode 0600) a lock file beside a SQLite database, for the caller to
/// lock: migrations take turns on one, and the one worker process of a SQLite database
/// holds another.
pub fn open_lock_file(path: &str) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {path}"))
}

/// Switches a SQLite database to WAL, a property of the file: set once here, not racing on
/// every pooled connection. Changing the journal mode needs the database to itself, and
/// SQLite does not wait for that (the busy timeout does not apply), so processes starting
/// together on a new file take turns: a locked database is tried again for up to 10 s.
fn switch_to_wal(url: &str) -> Result<()> {
    let mut c = SqliteConnection::establish(url)
        .with_context(|| format!("cannot open SQLite database {url}"))?;
    let mut tries = 0;
    loop {
        match c.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;") {
            Ok(()) => return Ok(()),
            Err(e) if tries < 100 && e.to_string().contains("locked") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(anyhow!("cannot switch SQLite database {url} to WAL: {e}"));
            }
        }
    }
}

/// Creates a new SQLite database file readable by its owner only (mode 0600, like the key
/// file): it holds every organization's hub. SQLite gives its `-wal` and `-shm` files the
/// database file's mode.
fn create_private(path: &str) -> Result<()> {
    if path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow!("cannot create SQLite database {path}: {e}")),
    }
}

/// The PostgreSQL advisory lock key migrations run under ("ferrymig" in ASCII).
const MIGRATION_LOCK: i64 = 0x6665_7272_796d_6967;

/// Hides the password of a database URL before it is shown: the user-info password
/// (`postgres://user:***@host/db`) and a `password=` query parameter.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(pw) = password(url) {
        out = out.replacen(&format!(":{pw}@"), ":***@", 1);
    }
    redact_params(&out)
}

/// The user-info password of a URL (everything between the user's `:` and the last `@`
/// of the authority, which may itself hold an unescaped `@`).
fn password(url: &str) -> Option<&str> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..authority_end(rest)];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some(&authority[colon + 1..at]).filter(|p| !p.is_empty())
}

/// Where the authority of a URL (what follows `scheme://`) ends: at the first `/` or `?`
/// after its last `@` (a password may hold an unescaped `/`), else at the first of them.
fn authority_end(rest: &str) -> usize {
    let from = rest.rfind('@').unwrap_or(0);
    rest[from..]
        .find(['/', '?'])
        .map_or(rest.len(), |i| from + i)
}

/// `password=…` parameters replaced by `password=***`.
fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("password=") {
        out.push_str(&rest[..i + "password=".len()]);
        out.push_str("***");
        rest = &rest[i + "password=".len()..];
        let end = rest
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `text` (an error from connecting with `url`) with every URL's password hidden, and
/// any piece of `url`'s password a driver quoted (a password with an unescaped `@` is
/// split by the driver, which then names a piece as a host).
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = redact_text(text);
    if let Some(pw) = password(url) {
        for piece in std::iter::once(pw).chain(pw.split('@')) {
            if piece.len() >= 3 {
                out = out.replace(piece, "***");
            }
        }
    }
    out
}

/// Free text (an error quoting a config file) with every URL password hidden: user-info
/// passwords and `password=` parameters.
pub fn redact_text(text: &str) -> String {
    redact_params(&redact_urls(text))
}

/// Every `scheme://user:password@` in free text with its password hidden.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let token = rest
            .find(|c: char| c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(rest.len());
        let end = authority_end(&rest[..token]);
        let authority = &rest[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Helpers for tests that need a throwaway PostgreSQL database.
#[doc(hidden)]
impl Store {
    /// Refreshes PostgreSQL's planner statistics of the tables a sync grows. A table that
    /// went from empty to large within minutes still has its empty-table statistics, and
    /// the planner then scans instead of using the unique indexes.
    pub fn refresh_statistics(&self) -> anyhow::Result<()> {
        if self.backend == Backend::Postgres {
            let mut c = self.conn()?;
            c.batch_execute("ANALYZE id_maps; ANALYZE hub_records;")?;
        }
        Ok(())
    }
}

pub mod testing {
    use super::*;

    /// A throwaway PostgreSQL database for a test or a bench run, dropped (closing whatever
    /// is still connected to it) when this is: runs must not leave databases behind on the
    /// server they borrow.
    pub struct FreshPostgres {
        url: String,
        admin: String,
        name: String,
    }

    impl std::ops::Deref for FreshPostgres {
        type Target = str;
        fn deref(&self) -> &str {
            &self.url
        }
    }

    impl Drop for FreshPostgres {
        fn drop(&mut self) {
            let dropped = PgConnection::establish(&self.admin).map(|mut c| {
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
            });
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop the PostgreSQL database {}", self.name);
            }
        }
    }

    /// A scratch database, used as its URL: a SQLite file, or a PostgreSQL database; either
    /// is deleted with it (a bench at a million records leaves a gigabyte otherwise).
    pub enum ScratchDb {
        File(String),
        Postgres(FreshPostgres),
    }

    impl std::ops::Deref for ScratchDb {
        type Target = str;
        fn deref(&self) -> &str {
            match self {
                ScratchDb::File(path) => path,
                ScratchDb::Postgres(db) => db,
            }
        }
    }

    impl Drop for ScratchDb {
        fn drop(&mut self) {
            if let ScratchDb::File(path) = self {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
    }

    /// Creates a fresh database next to `admin_url`'s.
    pub fn fresh_postgres(admin_url: &str) -> Result<FreshPostgres> {
        let name = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
        let mut c = PgConnection::establish(admin_url)
            .with_context(|| format!("cannot connect to {}", redact(admin_url)))?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let base = match admin_url.rfind('/') {
            Some(i)
                if admin_url[..i].contains("://") && i > admin_url.find("://").unwrap_or(0) + 2 =>
            {
                &admin_url[..i]
            }
            _ => admin_url,
        };
        let query = admin_url.find('?').map(|q| &admin_url[q..]).unwrap_or("");
        Ok(FreshPostgres {
            url: format!("{base}/{name}{query}"),
            admin: admin_url.to_string(),
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_wherever_they_appear() {
        assert_eq!(
            redact("postgres://u:sekrit@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact("postgres://h/db?user=u&password=sekrit"),
            "postgres://h/db?user=u&password=***"
        );
        assert_eq!(redact("postgres://u:sek@rit@h/db"), "postgres://u:***@h/db");
        let quoted = "2 | database: { url: \"postgres://u:sekrit@h/db\" }";
        assert!(!redact_text(quoted).contains("sekrit"));
        let libpq = "could not translate host name \"rit@127.0.0.1\" to address";
        assert!(!scrub(libpq, "postgres://u:sek@rit@127.0.0.1/db").contains("rit@"));
        assert_eq!(redact("relative/path.db"), "relative/path.db");
        assert_eq!(
            redact("postgres://u:hun/ter2@h:5432/x"),
            "postgres://u:***@h:5432/x"
        );
        let said = "not \"ftp://admin:hunter2@h/api/\"";
        assert!(
            !redact_text(said).contains("hunter2"),
            "{}",
            redact_text(said)
        );
    }
}
