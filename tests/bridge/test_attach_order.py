"""Property: whatever order and how often a prompt's presses arrive, the case ends with the
stars of the latest press within the grace, each press stored once."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pingjia.bridge import cases, devices
from pingjia.bridge.hub import Hub
from pingjia.bridge.store import Store
from tests.bridge.conftest import T0, Clock, Keypad, Link

presses = st.lists(st.tuples(st.integers(1, 5), st.integers(0, 2500)), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(presses=presses, data=st.data())
def test_any_arrival_order_same_rating(tmp_path_factory, presses, data):
    path = tmp_path_factory.mktemp("order") / "b.db"
    store = Store(path)
    store.migrate()
    conn = store.connect()
    devices.add_window(conn, "W01", now=T0)
    kp = Keypad("KP-0001", devices.add(conn, "KP-0001", window_id="W01", now=T0))
    conn.close()
    clock = Clock()
    hub = Hub(store, rules=cases.Rules(grace_s=3), clock=clock).start(timer=False)
    link = Link()
    try:
        hub.open_case({"project_no": "P", "window_id": "W01"})
        token = hub.finish_case("P")["token"]
        clock.t += 10
        dt, raws = 0, []
        for i, (stars, step) in enumerate(presses):
            dt = 0 if i == 0 else dt + step
            raws.append((kp.rating(stars, token, nth=i + 1, dt_ms=dt, age_ms=5000 - min(dt, 4000)), dt))
        order = data.draw(st.permutations(raws + data.draw(st.lists(st.sampled_from(raws), max_size=4))))
        for raw, _ in order:
            hub.submit(raw, link)
        hub.call(lambda c, now: (None, []))
        within = [i for i, (_, d) in enumerate(raws) if d <= 3000]
        got = hub.get_case("P")
        assert got["rating"]["stars"] == presses[within[-1]][0]
        assert got["rating"]["seq"] == within[-1] + 1
        assert len(got["presses"]) == len(presses)
        assert sorted(set(link.acked(kp))) == list(range(1, len(presses) + 1))
    finally:
        hub.stop()
