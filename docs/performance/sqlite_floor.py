#!/usr/bin/env python3
"""SQLite's own time to store a first sync's rows, with no Rust, diesel or Ferry in the way.

Builds Ferry's SQLite schema from migrations/sqlite, then inserts N hub records and N id
maps shaped like `ferry bench`'s (same columns, sizes and id kinds), 1000 of each per page
and eight pages per transaction, with Ferry's pragmas. Python's executemany binds and steps
in C, so what it reports is close to what SQLite itself needs: the bound under Ferry's write
floor. Usage: python3 docs/performance/sqlite_floor.py [N]   (run from the repository root)
"""
import glob, hashlib, json, os, sqlite3, sys, tempfile, time, uuid

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
PAGE, PAGES_PER_TX = 1000, 8
PRAGMAS = ("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=8000;"
           " PRAGMA cache_size=-16384; PRAGMA temp_store=MEMORY; PRAGMA foreign_keys=ON;")
NOW = "2026-11-24 00:29:09.181095716"


def rows():
    hub, maps = [], []
    for i in range(N):
        data = json.dumps({"email": f"client{i}@bench.example", "name": f"Bench Client {i:07}",
                           "phone": "+64 21 555 0100", "source": "workflowmax",
                           "website": f"https://client{i}.bench.example"}, separators=(",", ":"))
        h = hashlib.sha256(data.encode()).hexdigest()
        uid = str(uuid.UUID(int=(i << 64) | uuid.uuid4().int >> 64))  # time-ordered, as v7
        hub.append((1, "Organization", uid, data, i + 1, f"bench client {i:07}", NOW, None, 1, h))
        maps.append((1, "Organization", uid, "Client", str(uuid.uuid4()), "linked", h,
                     hashlib.sha256(uid.encode()).hexdigest(), NOW, None, 1, 1,
                     f"Bench Client {i:07}", None, None, None, NOW))
    return hub, maps


def run(path, hub, maps):
    d = sqlite3.connect(path, isolation_level=None)
    d.executescript(PRAGMAS)
    for f in sorted(glob.glob("migrations/sqlite/*/up.sql")):
        d.executescript(open(f).read())
    d.execute("INSERT INTO organizations(id, slug, name, created_at) VALUES (1, 'b', 'b', ?)", (NOW,))
    d.execute("INSERT INTO connections(id, organization_id, name, connector, settings, entities)"
              " VALUES (1, 1, 'w', 'workflowmax', '{}', '{}')")
    started = time.perf_counter()
    for tx in range(0, N, PAGE * PAGES_PER_TX):
        d.execute("BEGIN")
        for p in range(tx, min(tx + PAGE * PAGES_PER_TX, N), PAGE):
            d.executemany("INSERT INTO hub_records(organization_id, entity, uid, data, seq,"
                          " match_key, updated_at, deleted_at, origin_connection_id, content_hash)"
                          " VALUES (?,?,?,?,?,?,?,?,?,?)", hub[p:p + PAGE])
            d.executemany("INSERT INTO id_maps(connection_id, hub_entity, hub_id, external_entity,"
                          " external_id, state, hub_hash, ext_hash, last_push_to_hub,"
                          " last_push_to_external, to_hub, to_external, name, last_error, retry_to,"
                          " metadata, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          maps[p:p + PAGE])
        d.execute("COMMIT")
    spent = time.perf_counter() - started
    d.close()
    return spent


if __name__ == "__main__":
    hub, maps = rows()
    with tempfile.TemporaryDirectory() as tmp:
        on_disk = run(os.path.join(tmp, "floor.db"), hub, maps)
    in_memory = run(":memory:", hub, maps)
    print(f"SQLite {sqlite3.sqlite_version}, {N} hub records and {N} id maps:"
          f" {on_disk:.2f} s on disk, {in_memory:.2f} s in memory")
