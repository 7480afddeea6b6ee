"""paho's loop_stop() races its own network thread; the agent's client stops whatever the interleaving."""

from __future__ import annotations

import threading

from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.sync.mqtt import PahoClient


class _EndsDuringStop(PahoClient):
    """The interleaving seen in a test run, made certain: paho's network thread, ending after a disconnect, sets the
    client's thread handle to None (its last line) between loop_stop()'s check of that handle and its join()."""

    def __init__(self, thread: threading.Thread) -> None:
        self._reads = 0
        self._ending = thread
        super().__init__(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="race", protocol=MQTTProtocolVersion.MQTTv5
        )

    @property  # type: ignore[override]
    def _thread(self) -> threading.Thread | None:
        self._reads += 1
        return self._ending if self._reads <= 2 else None  # the check and the compare see it; the join does not

    @_thread.setter
    def _thread(self, value: threading.Thread | None) -> None:
        pass


def test_loop_stop_when_the_network_thread_ends_meanwhile_returns_instead_of_raising() -> None:
    """Before: AttributeError ('NoneType' object has no attribute 'join') out of MqttLink.stop and edge doctor."""
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    client = _EndsDuringStop(done)
    client.loop_stop()
    assert client._reads == 3
