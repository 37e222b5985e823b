"""Large payloads across processes: fragmented both ways, larger than a whole message ring."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bridge.transport import CommandError, ErrorCode, Host, cmd

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
