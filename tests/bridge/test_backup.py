"""`pingjia backup`: a copy of the hall's database taken while the bridge writes, checked, never half-written."""
import sqlite3
import threading

from click.testing import CliRunner

from pingjia.bridge import migrations
from pingjia.bridge.store import Store, transaction
from pingjia.tools.cli import main
from tests.bridge.conftest import older_release_store

BATCH = 10  # rows per transaction of the writer below: a copy holds whole batches only


def backup(*args):
    return CliRunner().invoke(main, ["backup", *map(str, args)])


def count(path, sql="SELECT count(*) FROM audit"):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def test_backup_while_the_bridge_commits_is_one_committed_state(tmp_path):
    db, dest = tmp_path / "bridge.db", tmp_path / "copy.db"
    store = Store(db)
    store.migrate()
    stop, done = threading.Event(), []

    def writer():  # commits batches of BATCH audit rows as fast as it can, like the hub's writer
        conn = store.connect()
        n = 0

        def commit():
            with transaction(conn):
                conn.executemany("INSERT INTO audit (at, actor, action, subject) VALUES (?, 'test', 'row', ?)",
                                 [(n, str(n * BATCH + i)) for i in range(BATCH)])

        while not stop.is_set():
            commit()
            n += 1
        for _ in range(3):  # and some after the backup returned
            commit()
            n += 1
        done.append(n)
        conn.close()

    t = threading.Thread(target=writer)
    t.start()
    while count(db) < 20 * BATCH:
        pass
    r = backup(dest, "--db", db)
    stop.set()
    t.join(30)
    assert r.exit_code == 0, r.output
    assert "backup %s -> %s" % (db, dest) in r.output and "schema %s" % migrations.MIGRATIONS[-1][0] in r.output
    copied = count(dest)
    assert 20 * BATCH <= copied < done[0] * BATCH and copied % BATCH == 0  # whole transactions, taken mid-stream
    assert count(dest, "PRAGMA integrity_check") == "ok" and count(dest, "PRAGMA journal_mode") == "delete"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy")) == ["copy.db"]  # one file, no .part
    assert count(db) == done[0] * BATCH  # the bridge's own file went on untouched


def test_backup_of_a_stopped_bridge_and_before_an_upgrade_keeps_the_old_schema(tmp_path):
    db = tmp_path / "bridge.db"
    older_release_store(db, applied=3)
    r = backup(tmp_path / "before-upgrade.db", "--db", db)
    assert r.exit_code == 0, r.output
    assert "schema %s" % migrations.MIGRATIONS[2][0] in r.output
    assert count(tmp_path / "before-upgrade.db", "SELECT count(*) FROM migrations") == 3
    assert count(db, "SELECT count(*) FROM migrations") == 3  # not migrated by taking the backup


def test_backup_never_overwrites_and_says_why(tmp_path):
    db, dest = tmp_path / "bridge.db", tmp_path / "copy.db"
    Store(db).migrate()
    dest.write_bytes(b"yesterday's backup")
    r = backup(dest, "--db", db)
    assert r.exit_code == 1 and "copy.db exists already" in r.output
    assert dest.read_bytes() == b"yesterday's backup"
    r = backup(tmp_path / "x.db", "--db", tmp_path / "nope.db")
    assert r.exit_code == 1 and "nope.db does not exist" in r.output
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "x.db").exists()


def test_a_failed_backup_leaves_no_file(tmp_path):
    db = tmp_path / "bridge.db"
    Store(db).migrate()
    r = backup(tmp_path / "no-such-dir" / "copy.db", "--db", db)
    assert r.exit_code == 1 and "backup of" in r.output and "failed" in r.output
    assert not (tmp_path / "no-such-dir").exists()
