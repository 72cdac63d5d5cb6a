# pingjia.bridge.mqtt_ingest: the MQTT transport (paho-mqtt 2.x).
#
# One client, one persistent session (fixed client id, clean_session False,
# QoS 1 subscriptions), so events published while the bridge is away wait in
# the broker and arrive when it reconnects; the keypads retransmit anything
# else from their journals until ACKed.
#   pj/<hall>/dev/+/up     -> hub.submit(payload, link)
#   pj/<hall>/dev/+/state  -> hub.link_state(device_id, online, link)
#                             (retained "online"/"offline"; the keypad's last
#                             will sets "offline" when its socket dies)
#   pj/<hall>/cases        -> on_cases(payload)   (only when a handler is given)
#   Link.send(device_id, raw) publishes to pj/<hall>/dev/<id>/down, QoS 1.
# paho's network thread runs every callback; reconnecting with backoff is
# paho's own loop (reconnect_delay_set). Throughput (bench/ingest_mqtt_bench.py):
# the network thread does no more per event than a topic split and the hub's
# submit (verify, queue); the hub commits in groups on its own thread; ACK
# publishes have no client-side in-flight cap; TCP_NODELAY; and _Client trims
# paho's per-packet costs (buffered reads, lean QoS 1 publish and PUBACK,
# direct PUBLISH dispatch). When the hub falls behind, reading pauses so the
# backlog waits in the broker, not in the bridge's memory.
import logging
import socket
import ssl
import struct
import threading
import time

import paho.mqtt.client as mqtt

from ..protocol import messages, topics

_ACK = messages.ACK
_PUBACK = struct.Struct("!BBH")
_MID = struct.Struct("!H")


def _publish_head(topic_bytes, payload_len):
    """The bytes of a QoS 1 PUBLISH before its packet id: type, remaining length, topic."""
    n = 4 + len(topic_bytes) + payload_len  # topic length, topic, packet id, payload
    head = bytearray(b"\x32")
    while True:  # remaining length (MQTT variable byte integer)
        b, n = n & 127, n >> 7
        head.append(b | 128 if n else b)
        if not n:
            break
    return bytes(head) + len(topic_bytes).to_bytes(2, "big") + topic_bytes

log = logging.getLogger("pingjia.bridge.mqtt")


class _BufferedSocket:
    """The broker socket with a read buffer. paho reads each packet with
    several tiny recv() calls (command byte, each length byte, body); under
    load that is most of its time. This fills a buffer with one large recv and
    serves paho's small reads from it; `pending()` tells paho's loop that
    buffered bytes are waiting so it doesn't block in select() (the same hook
    paho uses for TLS sockets)."""

    __slots__ = ("_sock", "_buf", "_pos", "_corked", "_wbuf", "fileno")

    def __init__(self, sock):
        self._sock = sock
        self.fileno = sock.fileno  # select() asks for it on every pass of paho's loop
        self._buf = b""
        self._pos = 0
        self._corked = False
        self._wbuf = []  # corked writes, and what the kernel did not take yet

    # writes: while corked (inside one paho _packet_write) packets are collected
    # and then leave in one send() instead of one syscall per packet
    def cork(self):
        self._corked = True

    def send(self, data):
        if self._corked or self._wbuf:
            self._wbuf.append(bytes(data))
            return len(data)
        return self._sock.send(data)

    def flush(self):
        """Send what is collected. None, or the OSError that ended the connection."""
        self._corked = False
        if not self._wbuf:
            return None
        data = b"".join(self._wbuf) if len(self._wbuf) > 1 else self._wbuf[0]
        try:
            n = self._sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError):
            n = 0
        except OSError as e:
            self._wbuf = []
            return e
        self._wbuf = [data[n:]] if n < len(data) else []
        return None

    def wants_write(self):
        return bool(self._wbuf)

    def close(self):
        if self._wbuf:  # e.g. paho's DISCONNECT, collected just before paho closes
            try:
                self._sock.settimeout(1.0)
                self._sock.sendall(b"".join(self._wbuf))
            except OSError:
                pass
            self._wbuf = []
        self._sock.close()

    def recv(self, n):
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self._sock.recv(65536)  # BlockingIOError / SSLWantRead pass through to paho
            if not buf:
                return b""
            pos = 0
        out = buf[pos:pos + n]
        self._buf, self._pos = buf, pos + len(out)
        return out

    def next_packet(self):
        """(command byte, body) of a whole MQTT packet waiting in the buffer, else None."""
        buf, pos = self._buf, self._pos
        n = len(buf)
        if n - pos < 2:
            return None
        mult, length, i = 1, 0, pos + 1
        while True:
            if i >= n or i - pos > 4:
                return None  # incomplete (or malformed: paho's own reader says so)
            b = buf[i]
            length += (b & 127) * mult
            mult *= 128
            i += 1
            if not b & 128:
                break
        if i + length > n:
            return None
        self._pos = i + length
        return buf[pos], buf[i:i + length]

    def pending(self):
        inner = getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner else 0)

    def __getattr__(self, name):  # send, setblocking, close, setsockopt, ...
        return getattr(self._sock, name)


class _LightInfo(mqtt.MQTTMessageInfo):
    """MQTTMessageInfo without its threading.Condition, for ACKs nobody waits on."""

    __slots__ = ()

    def __init__(self, mid):  # noqa: D107 - no super(): that builds the Condition
        self.mid = mid
        self._published = False
        self._condition = None
        self.rc = mqtt.MQTT_ERR_SUCCESS
        self._iterpos = 0

    def _set_as_published(self):
        self._published = True

    def is_published(self):
        return self._published

    def wait_for_publish(self, timeout=None):
        return self._published


class _Client(mqtt.Client):
    """paho's client with two hot paths trimmed (paho 2.x internals; the
    transport tests run through both on every message):
    - reads are buffered, a whole packet in the buffer is cut out at once
      (paho reads command byte, length bytes and body separately), and the
      packets of one write pass leave in one send() (see _BufferedSocket);
    - an incoming QoS 1 PUBLISH (one per keypad event) goes to one handler
      with its topic and payload, without paho's MQTTMessage and callback
      matching; the PUBACK is sent after the handler returns, as paho does;
    - publish_qos1 queues a QoS 1 message like publish() without its per-call
      validation and Condition object;
    - a plain MQTT 3.1.1 PUBACK for one of our QoS 1 publishes (one per ACK we
      send) is handled without building ReasonCode/Properties objects, which
      paho does for every PUBACK even on 3.1.1."""

    fast_on_message = None  # callable(topic_bytes, payload_bytes, retain) for QoS 1 on MQTT 3.1.1

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._publish_heads = {}  # (topic, payload length) -> PUBLISH bytes before the packet id

    def _create_socket(self):
        return _BufferedSocket(super()._create_socket())

    def publish_qos1(self, topic_bytes, payload):
        """Client.publish(topic, payload, qos=1) for the bridge's down messages, minus
        the parts it doesn't need (topic validation of a topic we built, a
        Condition per message): the same _out_messages entry, so paho's
        PUBACK handling and its resend after a reconnect treat it like any
        other QoS 1 message. Returns paho's rc."""
        if self._protocol == mqtt.MQTTv5 or self._max_inflight_messages or self._max_queued_messages:
            return self.publish(topic_bytes.decode(), payload, qos=1).rc
        mid = self._mid_generate()
        m = mqtt.MQTTMessage.__new__(mqtt.MQTTMessage)
        m.mid, m._topic, m.payload, m.qos, m.retain, m.dup = mid, topic_bytes, payload, 1, False, False
        m.properties, m.timestamp, m.info = None, mqtt.time_func(), _LightInfo(mid)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return mqtt.MQTT_ERR_QUEUE_SIZE
            self._out_messages[mid] = m
            self._inflight_messages += 1
            m.state = mqtt.mqtt_ms_wait_for_puback
            rc = self._send_publish(mid, topic_bytes, payload, 1, False, False, m.info, None)
            if rc == mqtt.MQTT_ERR_NO_CONN:
                self._inflight_messages -= 1
                m.state = mqtt.mqtt_ms_publish
            m.info.rc = rc
            return rc

    def publish_qos1_many(self, items):
        """publish_qos1 for a batch of (topic_bytes, payload): the hub hands over all ACKs of one
        commit at once. Each message gets its own mid and _out_messages entry as in publish_qos1,
        but the PUBLISH packets are built here, queued under one lock, and paho's loop is woken
        once per batch instead of once per message (a socketpair write each: a syscall and a GIL
        hand-over per ACK). Returns the number of messages queued for sending now."""
        if self._protocol == mqtt.MQTTv5 or self._max_inflight_messages or self._max_queued_messages:
            return sum(1 for t, p in items if self.publish_qos1(t, p) == mqtt.MQTT_ERR_SUCCESS)
        now = mqtt.time_func()
        new_msg, out_packet, queued, heads = mqtt.MQTTMessage.__new__, self._out_packet, 0, self._publish_heads
        info = _LightInfo(0)  # shared: nobody waits on an ACK's delivery (publish_qos1 gives each its own)
        with self._mid_generate_mutex:  # the batch's mids in one go, as paho's _mid_generate hands them out
            first = self._last_mid
            self._last_mid = (first + len(items) - 1) % 65535 + 1 if items else first
        with self._out_message_mutex:
            out = self._out_messages
            for i, (topic_bytes, payload) in enumerate(items):
                mid = (first + i) % 65535 + 1
                if mid in out:
                    continue  # 65,535 unacknowledged already: dropped, the keypad retransmits
                m = new_msg(mqtt.MQTTMessage)
                m.mid, m._topic, m.payload, m.qos, m.retain, m.dup = mid, topic_bytes, payload, 1, False, False
                m.properties, m.timestamp, m.info = None, now, info
                out[mid] = m
                if self._sock is None:  # sent by paho's resend after the reconnect, like publish()
                    m.state = mqtt.mqtt_ms_publish
                    continue
                self._inflight_messages += 1
                m.state = mqtt.mqtt_ms_wait_for_puback
                head = heads.get((topic_bytes, len(payload)))
                if head is None:  # PUBLISH QoS 1, remaining length, topic: the same for every ACK to a keypad
                    if len(heads) > 100000:
                        heads.clear()
                    head = heads[topic_bytes, len(payload)] = _publish_head(topic_bytes, len(payload))
                packet = head + _MID.pack(mid) + payload
                out_packet.append({"command": mqtt.PUBLISH, "mid": mid, "qos": 1, "pos": 0,
                                   "to_process": len(packet), "packet": packet, "info": info})
                queued += 1
        if queued:
            self._wake_loop()
        return queued

    def _wake_loop(self):
        """What paho's _packet_queue does after queueing, once."""
        if self._thread is not None and threading.current_thread() is self._thread:
            return  # paho's own loop writes before it next waits
        if self._sockpairW is not None:
            try:
                self._sockpairW.send(mqtt.sockpair_data)
            except BlockingIOError:
                pass
        self._call_socket_register_write()

    def _handle_publish(self):
        cmd = self._in_packet["command"]
        handler = self.fast_on_message
        if handler is None or self._protocol == mqtt.MQTTv5 or (cmd & 0x06) != 0x02:
            return super()._handle_publish()
        pkt = self._in_packet["packet"]
        tl = (pkt[0] << 8) | pkt[1]
        mid = (pkt[2 + tl] << 8) | pkt[3 + tl]
        with self._in_callback_mutex:
            handler(pkt[2:2 + tl], pkt[4 + tl:], cmd & 0x01)
        return self._send_puback(mid)

    def _packet_read(self):
        sock = self._sock
        if self._in_packet["command"] != 0 or not isinstance(sock, _BufferedSocket):
            return super()._packet_read()
        got = sock.next_packet()
        if got is None:  # not a whole packet buffered yet: paho reads it piecewise
            return super()._packet_read()
        if self._protocol == mqtt.MQTTv5:
            return self._handle_whole(*got)
        # every whole packet in the buffer in one go: the QoS 1 PUBLISHes (one per keypad event) and
        # the PUBACKs of our ACKs are handled here, without paho's per-packet dicts, dispatch and locks;
        # any other packet goes to paho's own handling, after which paho's loop takes over again
        handler, out_packet, out = self.fast_on_message, self._out_packet, self._out_messages
        fast_puback = self.on_publish is None and not self._max_inflight_messages
        rc = mqtt.MQTT_ERR_SUCCESS
        with self._in_callback_mutex:
            while got is not None:
                cmd, body = got
                if (cmd & 0xF6) == 0x32 and handler is not None and len(body) >= 4 + ((body[0] << 8) | body[1]):
                    tl = (body[0] << 8) | body[1]
                    handler(body[2:2 + tl], body[4 + tl:], cmd & 0x01)
                    mid = (body[2 + tl] << 8) | body[3 + tl]  # PUBACK after the handler, as paho does
                    out_packet.append({"command": mqtt.PUBACK, "mid": mid, "qos": 1, "pos": 0, "to_process": 4,
                                       "packet": _PUBACK.pack(0x40, 2, mid), "info": None})
                elif cmd == 0x40 and len(body) == 2 and fast_puback:
                    with self._out_message_mutex:  # what _handle_pubackcomp does for a QoS 1 message
                        msg = out.pop((body[0] << 8) | body[1], None)
                        if msg is not None:
                            msg.info._set_as_published()
                            if msg.qos > 0:
                                self._inflight_messages -= 1
                else:
                    break
                got = sock.next_packet()
        if got is not None:
            rc = self._handle_whole(*got)
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return rc

    def _handle_whole(self, cmd, body):
        """A whole packet from the buffer through paho's own handling."""
        self._in_packet = {"command": cmd, "have_remaining": 1, "remaining_count": [], "remaining_mult": 1,
                           "remaining_length": len(body), "packet": body, "to_process": 0, "pos": 0}
        try:
            rc = self._packet_handle()
        except mqtt.MalformedPacket:
            rc = mqtt.MQTT_ERR_PROTOCOL
        self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
                           "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return rc

    def _packet_queue(self, command, packet, mid, qos, info=None):
        # From paho's own network thread (the PUBACK for each event) the wake-up
        # byte paho writes to its socketpair is a wasted syscall, and every
        # syscall hands the GIL to the hub's threads: the loop writes queued
        # packets before it next waits (want_write() puts the socket in select).
        if self._thread is not None and threading.current_thread() is self._thread and self._sock is not None:
            self._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0,
                                     "to_process": len(packet), "packet": packet, "info": info})
            return mqtt.MQTT_ERR_SUCCESS
        return super()._packet_queue(command, packet, mid, qos, info)

    def _packet_write(self):
        sock = self._sock
        if not isinstance(sock, _BufferedSocket):
            return super()._packet_write()
        sock.cork()
        try:
            # QoS 1 PUBLISHes (our ACKs) and PUBACKs (one per event) need nothing from paho once
            # written: take them off the queue in one go (paho's loop costs a slice, a send call
            # and several checks per packet); paho's own loop writes the rest (QoS 0 publishes
            # with their callback, DISCONNECT, a partly written packet)
            out, chunks = self._out_packet, []
            while out:
                p = out[0]
                c = p["command"] & 0xF0
                if p["pos"] or not (c == 0x40 or (c == 0x30 and p["qos"])):
                    break
                chunks.append(out.popleft()["packet"])
            if chunks:
                sock.send(b"".join(chunks))  # corked: leaves with flush() below
                with self._msgtime_mutex:
                    self._last_msg_out = mqtt.time_func()
            rc = super()._packet_write()
        finally:
            err = sock.flush() if self._sock is sock else None
        if err is not None:
            return mqtt.MQTT_ERR_CONN_LOST
        return rc

    def want_write(self):
        sock = self._sock
        return super().want_write() or (isinstance(sock, _BufferedSocket) and sock.wants_write())

    def _handle_pubackcomp(self, cmd):
        pkt = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol == mqtt.MQTTv5 or len(pkt) != 2 or self.on_publish is not None:
            return super()._handle_pubackcomp(cmd)
        mid = (pkt[0] << 8) | pkt[1]
        with self._out_message_mutex:
            msg = self._out_messages.pop(mid, None)
            if msg is not None:
                msg.info._set_as_published()
                if msg.qos > 0:
                    self._inflight_messages -= 1
                    if self._max_inflight_messages > 0:
                        return self._update_inflight()
        return mqtt.MQTT_ERR_SUCCESS


class MqttLink:
    """The bridge's MQTT transport and the Link the hub sends ACKs/commands on.

    hub        has submit(raw, link), link_state(device_id, online, link)
    hall       hall id (topic tree pj/<hall>/...)
    host, port broker address; username/password the bridge's credentials
    client_id  fixed, so the broker keeps the session (default "@bridge-<hall>")
    tls        None, or a dict for paho's tls_set(**tls)
    on_cases   optional callable(payload_bytes) for the case-system topic
    ack_qos    QoS of ACKs (commands are always QoS 1). 1 by default; 0 is safe
               in this protocol (a keypad retransmits an unACKed event and the
               hub ACKs the duplicate again) and saves a PUBACK round per event
    max_inflight  paho's cap on our unacknowledged QoS 1 publishes; 0 = none
    max_backlog   when the hub holds more than this many messages not yet
               committed, stop reading until it is down to half: the backlog
               then waits in the broker's session queue (on disk across
               restarts) instead of in the bridge's memory
    """

    name = "mqtt"

    def __init__(self, hub, hall, host="127.0.0.1", port=1883, username=None, password=None, client_id=None,
                 keepalive=20, tls=None, on_cases=None, max_inflight=0, reconnect_min=0.5, reconnect_max=30, ack_qos=1,
                 max_backlog=5000):
        self.hub = hub
        self.hall = hall
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.on_cases = on_cases
        self.ack_qos = ack_qos
        self.max_backlog = max_backlog
        self._n_up = 0
        self._down_topics = {}  # device_id -> its down topic, bytes
        self._sub_mid = None
        self.client_id = client_id or "@bridge-%s" % hall
        self._prefix = "%s/%s/dev/" % (topics.ROOT, hall)
        self._cases_topic = topics.cases(hall)
        self.connected = threading.Event()
        self.stats = {"up": 0, "state": 0, "cases": 0, "sent": 0, "send_dropped": 0, "mismatch": 0,
                      "connects": 0, "disconnects": 0, "ignored": 0}
        self._stopping = False
        self._started = False
        self._last_disconnect_log = 0.0
        c = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            c.tls_set(**tls)
        # 0 = no client-side cap on QoS 1 messages in flight: every ACK goes out
        # at once (the broker's own limits apply), and paho skips its O(n) scan
        # of the out-queue on every PUBACK that a cap would need
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(reconnect_min, reconnect_max)
        c.on_socket_open = self._on_socket_open
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.fast_on_message = self._on_publish
        # no paho logger: it formats a debug line per packet; connection
        # problems reach us through on_connect/on_disconnect
        self.client = c

    # lifecycle -------------------------------------------------------------
    def start(self, wait=None):
        """Connect in the background (paho keeps retrying); `wait` seconds to block for the first connect."""
        self._stopping = False
        self.client.connect_async(self.host, self.port, self.keepalive)
        self.client.loop_start()
        self._started = True
        if wait:
            if not self.connected.wait(wait):
                log.warning("MQTT broker %s:%d not reachable yet; retrying in the background", self.host, self.port)
        return self

    def stop(self):
        """Disconnect cleanly (the session stays on the broker) and stop paho's thread."""
        if not self._started:
            return
        self._stopping = True
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.client.loop_stop()
        self._started = False
        self.connected.clear()

    # Link ------------------------------------------------------------------
    def send(self, device_id, raw):
        """Publish a command/ACK to the keypad's down topic (QoS 1). Thread-safe.

        While the broker is away the message waits in paho's session and goes
        out after the reconnect (counted in send_dropped meanwhile); a keypad
        that misses an ACK retransmits the event and gets a fresh one."""
        try:
            if self.ack_qos == 0 and len(raw) > 1 and raw[1] == _ACK:
                rc = self.client.publish(self._prefix + device_id + "/down", raw, qos=0).rc
            else:
                rc = self.client.publish_qos1(("%s%s/down" % (self._prefix, device_id)).encode(), bytes(raw))
        except Exception as e:  # noqa: BLE001
            self.stats["send_dropped"] += 1
            log.debug("send to %s dropped: %s", device_id, e)
            return False
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self.stats["sent"] += 1
            return True
        self.stats["send_dropped"] += 1
        return False

    def send_many(self, msgs):
        """Send [(device_id, raw), ...] (the hub's ACKs of one commit) with one wake-up of paho's loop."""
        if self.ack_qos == 0:
            for dev, raw in msgs:
                self.send(dev, raw)
            return
        topics_ = self._down_topics
        items = []
        for dev, raw in msgs:
            t = topics_.get(dev)
            if t is None:
                if len(topics_) > 100000:
                    topics_.clear()
                t = topics_[dev] = ("%s%s/down" % (self._prefix, dev)).encode()
            items.append((t, bytes(raw)))
        try:
            n = self.client.publish_qos1_many(items)
        except Exception as e:  # noqa: BLE001
            self.stats["send_dropped"] += len(items)
            log.debug("send of %d messages dropped: %s", len(items), e)
            return
        self.stats["sent"] += n
        self.stats["send_dropped"] += len(items) - n

    def publish(self, topic, payload, qos=1, retain=False):
        """Publish on another hall topic (e.g. topics.unrated for the SMS gateway)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    # paho callbacks (network thread) ---------------------------------------
    def _on_socket_open(self, client, userdata, sock):
        # paho writes one small packet per ACK; without TCP_NODELAY Nagle holds
        # the next one back until the broker's delayed ACK (~40 ms per round trip)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # not TCP (websocket/unix socket wrappers)
            pass

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("MQTT broker %s:%d refused the bridge: %s", self.host, self.port, reason_code)
            return
        self.stats["connects"] += 1
        subs = [(self._prefix + "+/up", 1), (self._prefix + "+/state", 1)]
        if self.on_cases is not None:
            subs.append((self._cases_topic, 1))
        self._sub_mid = client.subscribe(subs)[1]
        log.info("MQTT connected to %s:%d as %s (session present: %s)", self.host, self.port, self.client_id,
                 bool(flags.session_present))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if mid != self._sub_mid:
            return
        bad = [rc for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("MQTT broker refused the bridge's subscriptions (%s): check the ACL for %s", bad, self.client_id)
            return
        self.connected.set()  # connected and subscribed: events published from now on reach us

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if self._stopping:
            log.info("MQTT disconnected from %s:%d", self.host, self.port)
            return
        self.stats["disconnects"] += 1
        now = time.monotonic()
        if now - self._last_disconnect_log > 10:  # one line per outage, not one per retry
            self._last_disconnect_log = now
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting with backoff", self.host, self.port, reason_code)

    def _backpressure(self):
        depth = getattr(self.hub, "backlog", None)  # Hub.backlog(); a test double may have none
        if depth is None or depth() <= self.max_backlog:
            return
        self.stats["paused"] = self.stats.get("paused", 0) + 1
        end = time.monotonic() + 5.0  # never long enough to miss a keepalive
        while depth() > self.max_backlog // 2 and not self._stopping and time.monotonic() < end:
            time.sleep(0.005)

    def _on_message(self, client, userdata, msg):  # QoS 0 or MQTTv5: paho's own path
        self._on_publish(msg._topic, msg.payload, msg.retain)

    def _on_publish(self, topic, payload, retain):
        try:
            topic = topic.decode("utf-8", "replace")
            if topic.startswith(self._prefix):
                rest = topic[len(self._prefix):]
                i = rest.find("/")
                dev, leaf = rest[:i], rest[i + 1:]
                if leaf == "up":
                    raw = payload
                    # the ACL already binds a keypad to its own topic; a message
                    # naming another device on it is counted and dropped
                    if len(raw) < 5 or raw[4:4 + raw[3]] != dev.encode():
                        self.stats["mismatch"] += 1
                        log.info("dropped a message on %s whose device id does not match its topic", topic)
                        return
                    self.stats["up"] += 1
                    self.hub.submit(raw, self)
                    self._n_up += 1
                    if not self._n_up & 127 and self.max_backlog:
                        self._backpressure()
                    return
                if leaf == "state":
                    p = bytes(payload).strip().lower()
                    if p in (topics.ONLINE, topics.OFFLINE):
                        self.stats["state"] += 1
                        self.hub.link_state(dev, p == topics.ONLINE, self)
                    else:
                        self.stats["ignored"] += 1  # a cleared retained state
                    return
            elif topic == self._cases_topic and self.on_cases is not None:
                self.stats["cases"] += 1
                self.on_cases(bytes(payload))
                return
            self.stats["ignored"] += 1
        except Exception:  # noqa: BLE001 - one bad message must not stop paho's loop
            log.exception("MQTT message on %r not handled", topic)
