# pingjia.protocol.topics: the MQTT topic layout, one tree per hall.
#
#   pj/<hall>/dev/<device_id>/up      device -> bridge events (QoS 1, message bytes)
#   pj/<hall>/dev/<device_id>/down    bridge -> device commands (QoS 1, message bytes)
#   pj/<hall>/dev/<device_id>/state   retained "online"/"offline"; the last will
#                                     sets "offline" (plain text, ACL-protected)
#   pj/<hall>/cases                   case system -> bridge (JSON, see bridge docs)
#   pj/<hall>/unrated                 bridge -> SMS gateway (JSON)
# Payloads on up/down are exactly the message bytes of messages.py, the same as
# inside a serial frame. The ACL gives each device write access to its own up
# and state topics and read access to its own down topic only.
ROOT = "pj"
ONLINE = b"online"
OFFLINE = b"offline"


def device(hall, device_id, leaf):
    return "%s/%s/dev/%s/%s" % (ROOT, hall, device_id, leaf)


def up(hall, device_id):
    return device(hall, device_id, "up")


def down(hall, device_id):
    return device(hall, device_id, "down")


def state(hall, device_id):
    return device(hall, device_id, "state")


def cases(hall):
    return "%s/%s/cases" % (ROOT, hall)


def unrated(hall):
    return "%s/%s/unrated" % (ROOT, hall)


def parse_device_topic(topic):
    """'pj/<hall>/dev/<id>/<leaf>' -> (hall, device_id, leaf), or None."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT or parts[2] != "dev":
        return None
    return parts[1], parts[3], parts[4]
