"""Hall-IT tool fixtures: a bridge store with windows, the compiled firmware image, virtual boards."""
import pytest

from pingjia.bridge import devices
from pingjia.bridge.store import Store
from pingjia.tools import flash as fl
from pingjia.tools.vboard import VirtualBoard


@pytest.fixture
def bridge_db(tmp_path):
    """A migrated bridge database with windows W01..W04; returns its path."""
    store = Store(str(tmp_path / "bridge.db"))
    store.migrate()
    conn = store.connect()
    for i, name in enumerate(["综合受理", "不动产登记", "社保医保", "公安户政"], 1):
        devices.add_window(conn, "W%02d" % i, name)
    conn.close()
    return str(tmp_path / "bridge.db")


@pytest.fixture(scope="session")
def image():
    return fl.build_image()


@pytest.fixture
def vboards(tmp_path):
    """vboards(n) -> n started virtual boards, stopped at the end of the test."""
    started = []

    def make(n=1):
        for _ in range(n):
            vb = VirtualBoard(tmp_path / ("flash%d" % len(started)))
            vb.start()
            started.append(vb)
        return started[-n:]

    yield make
    for vb in started:
        vb.stop()
