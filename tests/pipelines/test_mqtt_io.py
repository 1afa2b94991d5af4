"""The MQTT source and sink of the dataflow against a real Mosquitto."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Literal

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main
from bytewax.testing import TestingSink

from gridflex.broker import Broker
from pipelines.mqtt_io import MqttSink, MqttSource
from pipelines.validate import RawMessage
from pipelines.windows import Heartbeat
from tests.mqtt_helpers import Subscriber
from tests.pipelines.helpers import create_session, publish_all

pytestmark = pytest.mark.integration

FILTER = "gridflex/v1/mq/+/+/telemetry"


def messages(first: int, count: int) -> list[tuple[str, bytes]]:
    return [
        (f"gridflex/v1/mq/inverter/inv-{i % 3}/telemetry", b"m%d" % i)
        for i in range(first, first + count)
    ]


class FlowThread:
    """Runs a source -> TestingSink flow in a thread until its stop event is set."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        partitions: int = 1,
        workers: int = 1,
        receiver: Literal["process", "thread"] = "process",
        topic_filter: str | tuple[str, ...] = FILTER,
    ) -> None:
        self.stop_event = threading.Event()
        self.arrivals: list[RawMessage | Heartbeat] = []
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        flow = Dataflow("mqtt_io_test")
        self.source = source = MqttSource(
            url,
            topic_filter,
            client_id=client_id,
            stop_event=self.stop_event,
            partitions=partitions,
            receiver=receiver,
        )
        op.output("out", op.input("mqtt_in", flow, source), TestingSink(self.arrivals))
        self._thread = threading.Thread(target=self._run, args=(flow, workers), daemon=True)
        self._thread.start()

    def _run(self, flow: Dataflow, workers: int) -> None:
        try:
            cli_main(flow, workers_per_process=workers)
        except BaseException as exc:  # surfaced in stop()
            self.error = exc

    @property
    def out(self) -> list[RawMessage]:
        return [m for m in list(self.arrivals) if isinstance(m, RawMessage)]

    def wait_for(
        self, condition: Callable[[list[RawMessage]], bool], timeout_s: float = 20
    ) -> bool:
        return self.wait_until(lambda: condition(self.out), timeout_s)

    def wait_until(self, condition: Callable[[], bool], timeout_s: float = 20) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return False

    def join(self, timeout_s: float = 30) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the flow did not end after the stop event"
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("receiver", ["process", "thread"])
def test_source_delivers_in_order_and_ends_on_the_stop_event(
    mosquitto: Broker, receiver: Literal["process", "thread"]
) -> None:
    client_id = f"t-src-{uuid.uuid4().hex[:8]}"
    create_session(mosquitto.url, f"{client_id}-0", FILTER)
    sent = messages(0, 200)
    publish_all(mosquitto.url, sent)  # queued by the broker for the session

    flow = FlowThread(mosquitto.url, client_id, receiver=receiver)
    assert flow.wait_for(lambda out: len(out) >= len(sent))
    last_received = max(m.received_ms for m in flow.out)

    # Once drained, the source says so: a heartbeat vouching for every message, after them.
    def vouched() -> bool:
        arrivals = list(flow.arrivals)
        last_message = max(i for i, m in enumerate(arrivals) if isinstance(m, RawMessage))
        return any(
            isinstance(m, Heartbeat) and m.wall_ms >= last_received
            for m in arrivals[last_message + 1 :]
        )

    assert flow.wait_until(vouched)
    flow.stop()
    assert [(m.topic, m.payload) for m in flow.out] == sent
    assert all(m.received_ms > 0 for m in flow.out)


def test_messages_published_while_the_pipeline_is_down_arrive_after_a_restart(
    mosquitto: Broker,
) -> None:
    client_id = f"t-src-{uuid.uuid4().hex[:8]}"
    create_session(mosquitto.url, f"{client_id}-0", FILTER)
    first = FlowThread(mosquitto.url, client_id)
    publish_all(mosquitto.url, messages(0, 10))
    assert first.wait_for(lambda out: len(out) >= 10)
    first.stop()

    while_down = messages(10, 50)
    publish_all(mosquitto.url, while_down)

    second = FlowThread(mosquitto.url, client_id)
    assert second.wait_for(lambda out: len(out) >= len(while_down))
    second.stop()
    assert [(m.topic, m.payload) for m in second.out] == while_down


@pytest.mark.parametrize("receiver", ["process", "thread"])
def test_one_subscriber_delivers_the_messages_of_every_filter(
    mosquitto: Broker, receiver: Literal["process", "thread"]
) -> None:
    client_id = f"t-two-{uuid.uuid4().hex[:8]}"
    acks = "gridflex/v1/mq/dispatch/+/ack"
    for topic_filter in (FILTER, acks):
        create_session(mosquitto.url, f"{client_id}-0", topic_filter)
    sent = messages(0, 20)
    sent[5:5] = [(f"gridflex/v1/mq/dispatch/inv-{i}/ack", b"a%d" % i) for i in range(3)]
    sent.append(("gridflex/v1/mq/dispatch/inv-0/command", b"not subscribed"))
    publish_all(mosquitto.url, sent)

    flow = FlowThread(mosquitto.url, client_id, receiver=receiver, topic_filter=(FILTER, acks))
    assert flow.wait_for(lambda out: len(out) >= len(sent) - 1)
    flow.stop()
    assert [(m.topic, m.payload) for m in flow.out] == sent[:-1]


def test_a_source_needs_a_filter() -> None:
    with pytest.raises(ValueError, match="at least one filter"):
        MqttSource("mqtt://127.0.0.1:1", (), client_id="x", stop_event=threading.Event())


def test_two_partitions_share_the_subscription_without_duplicates(mosquitto: Broker) -> None:
    client_id = f"t-shr-{uuid.uuid4().hex[:8]}"
    for i in range(2):
        create_session(mosquitto.url, f"{client_id}-{i}", f"$share/{client_id}/{FILTER}")
    sent = messages(0, 300)
    publish_all(mosquitto.url, sent)

    flow = FlowThread(mosquitto.url, client_id, partitions=2, workers=2)
    assert flow.wait_for(lambda out: len(out) >= len(sent))
    flow.stop()
    assert sorted(m.payload for m in flow.out) == sorted(p for _, p in sent)


def test_a_dead_receiver_process_ends_the_source_cleanly_and_says_why(mosquitto: Broker) -> None:
    client_id = f"t-die-{uuid.uuid4().hex[:8]}"
    create_session(mosquitto.url, f"{client_id}-0", FILTER)
    publish_all(mosquitto.url, messages(0, 20))
    flow = FlowThread(mosquitto.url, client_id)
    assert flow.wait_for(lambda out: len(out) >= 20)
    (child,) = [p for p in multiprocessing.active_children() if p.name.endswith(f"{client_id}-0")]
    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    assert flow.join(), "the flow did not end after its receiver died"
    assert flow.error is None
    assert len(flow.out) == 20
    assert flow.source.failures and "receiver process exited" in flow.source.failures[0]


def test_sink_publishes_every_item_before_close_returns(mosquitto: Broker) -> None:
    topic = f"gridflex/v1/sink-{uuid.uuid4().hex[:6]}/grid/frequency"
    with Subscriber(mosquitto.url, topic) as sub:
        sink = MqttSink(mosquitto.url, client_id=f"t-sink-{uuid.uuid4().hex[:8]}")
        part = sink.build("mqtt_out", 0, 1)
        part.write_batch([(topic, b"%d" % i) for i in range(500)])
        part.close()
        assert sub.wait_for(lambda got: len(got) >= 500)
        assert [p for _, p in sub.messages] == [b"%d" % i for i in range(500)]


def test_sink_retains_the_summary_and_nothing_else(mosquitto: Broker) -> None:
    site = f"ret{uuid.uuid4().hex[:6]}"
    summary, frequency = f"gridflex/v1/{site}/summary", f"gridflex/v1/{site}/grid/frequency"
    part = MqttSink(mosquitto.url, client_id=f"t-ret-{uuid.uuid4().hex[:8]}").build(
        "mqtt_out", 0, 1
    )
    part.write_batch([(summary, b'{"s": 1}'), (frequency, b'{"f": 1}')])
    part.close()
    try:
        with Subscriber(mosquitto.url, f"gridflex/v1/{site}/#") as late:
            assert late.wait_for(lambda got: len(got) >= 1)
            time.sleep(0.3)
            assert late.messages == [(summary, b'{"s": 1}')]
    finally:  # leave no retained message for later tests on the shared broker
        clear = MqttSink(mosquitto.url, client_id=f"t-clr-{uuid.uuid4().hex[:8]}").build(
            "mqtt_out", 0, 1
        )
        clear.write_batch([(summary, b"")])
        clear.close()


def test_a_bad_broker_url_fails_at_build_time() -> None:
    with pytest.raises(ValueError, match="mqtt://"):
        MqttSink("http://example.org", client_id="x")
