"""Large payloads across processes: fragmented both ways, larger than a whole message ring."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from helpers_ipc import by_id, wait_until
from proto_helpers import drain, header

from bridge.transport import CommandError, ErrorCode, Host, cmd
from bridge.transport.ring import MessageRing
from bridge.transport.shm import Segment

# A device process that keeps the last SetState blob and returns it on GetState.
STATE_DEVICE = textwrap.dedent("""
    import signal
    from bridge.transport import Device, DeviceRunner, cmd
    dev = Device()
    dev.start("State", 2, 48000, 256)
    state = [b""]

    @dev.on_command
    def handle(msg, device):
        if msg.type == cmd.T.SetState:
            state[0] = bytes(msg.payload)
            device.respond(cmd.build("Pong", response_to=msg, ping_sent_ns=len(state[0])))
            return True
        if msg.type == cmd.T.GetState:
            device.respond_blob(msg, "GetState", state[0])
            return True
        return False

    runner = DeviceRunner(dev, lambda block: block.fill(0))
    signal.signal(signal.SIGTERM, lambda *a: runner.stop_event.set())
    print("ready", dev.id, flush=True)
    runner.run()
    dev.close()
""")


@pytest.fixture
def state_device(namespace):
    proc = subprocess.Popen([sys.executable, "-c", STATE_DEVICE], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ))
    assert proc.stdout.readline().startswith("ready State:0")
    yield proc
    proc.terminate()
    proc.wait(timeout=10)


def test_a_1_mib_state_round_trips_between_processes_through_both_rings(state_device):
    blob = os.urandom(1 << 20)  # 4682 fragments: more than the 1024-slot rings hold at once
    with Host() as host:
        host.connect("State:0")
        ack = host.request(cmd.fragments("SetState", blob), timeout=20)
        assert cmd.decode(ack)["ping_sent_ns"] == len(blob)
        reply = host.request(cmd.build("GetState"), timeout=20)
        assert reply.type == cmd.T.GetState and reply.is_response
        assert bytes(reply.payload) == blob
        assert host.ping() > 0  # the device is still answering afterwards


def test_unsupported_state_commands_are_refused_by_the_plain_sine_device(spawn):
    dev = spawn.device()
    with Host() as host:
        host.connect(dev.id)
        with pytest.raises(CommandError) as err:
            host.request(cmd.fragments("SetState", b"x" * 1000), timeout=5)
        assert err.value.code == ErrorCode.NOT_SUPPORTED
        assert "SetState" in str(err.value)


def test_a_pong_finds_room_while_a_transfer_larger_than_the_ring_waits_for_the_host(
        state_device, namespace):
    """The device's outbox may fill the response ring only up to a headroom: a host that is
    slow to drain a 1 MiB answer still gets the answer to its next Ping (protocol answers are
    never lost to the device's own queued fragments; native/discolink.h does the same)."""
    blob = os.urandom(1 << 20)
    with Host() as host:
        host.connect("State:0")
        host.request(cmd.fragments("SetState", blob), timeout=20)
        seg = Segment.attach(by_id(namespace)["State:0"].segment_name)
        h = header(seg.buf)
        commands = MessageRing(seg.buf, h["command_ring_offset"], h["message_slots"])
        responses = MessageRing(seg.buf, h["response_ring_offset"], h["message_slots"])
        assert host.send_command(cmd.build("GetState"))  # and nobody drains the answer yet
        def settled() -> bool:  # the outbox stopped filling the ring
            fill = responses.fill()
            time.sleep(0.1)
            return fill > 0 and responses.fill() == fill

        wait_until(settled, 20, "the response ring to stop filling")
        assert responses.slots - responses.fill() >= 1
        assert host.send_command(cmd.build("Ping", sent_ns=4242))
        wait_until(lambda: commands.fill() == 0, 10, "the device to take the Ping")
        answers = [cmd.decode(m) for m in drain(responses) if m.type == cmd.T.Pong]
        assert [a["ping_sent_ns"] for a in answers] == [4242]
        seg.close()
