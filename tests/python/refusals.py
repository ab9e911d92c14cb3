"""A client generated from proto/ alone (grpcio-tools), reading every refusal
from google.rpc.ErrorInfo with grpcio-status: the code and the reason tell
refusals apart, never the message.

Usage: refusals.py GENERATED_DIR BROKER_ADDR. Prints "N passed, M failed".
"""

import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402
from strata.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from strata.v1 import broker_pb2, broker_pb2_grpc  # noqa: E402
from strata.v1 import errors_pb2  # noqa: E402
from strata.v1 import groups_pb2, groups_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel(sys.argv[2])
broker = broker_pb2_grpc.BrokerStub(channel)
admin = admin_pb2_grpc.AdminStub(channel)
groups = groups_pb2_grpc.GroupsStub(channel)
passed, failed = 0, 0


def error_info(err):
    status = rpc_status.from_call(err)
    assert status is not None, f"no grpc-status-details-bin: {err.code()} {err.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("the status details hold no ErrorInfo")


def check(name, call, code, reason, **metadata):
    """`call` must fail with `code` and an ErrorInfo of `reason` whose
    metadata holds `metadata` (values compared as strings)."""
    global passed, failed
    try:
        call()
        raise AssertionError("the call succeeded")
    except grpc.RpcError as err:
        try:
            assert err.code() == code, f"code {err.code()}, wanted {code}: {err.details()}"
            info = error_info(err)
            assert info.domain == "strata.v1", info.domain
            assert info.reason == reason, f"reason {info.reason}, wanted {reason}"
            # Every reason the broker sends is a value of the published enum.
            errors_pb2.ErrorReason.Value(info.reason)
            assert info.metadata["retriable"] in ("true", "false"), dict(info.metadata)
            assert info.metadata["definite"] in ("true", "false"), dict(info.metadata)
            for key, want in metadata.items():
                got = info.metadata.get(key)
                assert got == str(want).lower() if isinstance(want, bool) else got == str(want), (
                    f"metadata {key} = {got!r}, wanted {want!r}: {dict(info.metadata)}"
                )
            passed += 1
            print(f"ok      {name}: {info.reason} {dict(info.metadata)}")
        except AssertionError as e:
            failed += 1
            print(f"FAILED  {name}: {e}")
    except AssertionError as e:
        failed += 1
        print(f"FAILED  {name}: {e}")


def record(value, key=None):
    r = broker_pb2.Record(value=value.encode())
    if key is not None:
        r.key = key.encode()
    return r


def raw_call(path, payload, metadata=None):
    """A call with hand-made request bytes."""
    call = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return lambda: call(payload, metadata=metadata)


SC = grpc.StatusCode
admin.CreateTopic(admin_pb2.CreateTopicRequest(name="orders", partitions=1))
broker.Produce(broker_pb2.ProduceRequest(topic="orders", partition=0, records=[record("a", "k"), record("b")]))

check("unknown topic", lambda: broker.Fetch(broker_pb2.FetchRequest(
    partitions=[broker_pb2.FetchPartition(topic="nope", partition=0, offset=0)])),
    SC.NOT_FOUND, "TOPIC_NOT_FOUND", topic="nope", retriable=False, definite=True)
check("unknown partition", lambda: broker.Produce(broker_pb2.ProduceRequest(
    topic="orders", partition=5, records=[record("x")])),
    SC.NOT_FOUND, "PARTITION_NOT_FOUND", topic="orders", partition=5, partitions=1)
check("conditional append", lambda: broker.Produce(broker_pb2.ProduceRequest(
    topic="orders", partition=0, records=[record("x")], expected_offset=0)),
    SC.FAILED_PRECONDITION, "OFFSET_MISMATCH", expected_offset=0, next_offset=2, retriable=False, definite=True)
check("per-key condition", lambda: broker.Produce(broker_pb2.ProduceRequest(
    topic="orders", partition=0, records=[record("x", "k")],
    expected_key=broker_pb2.KeyExpectation(absent=True))),
    SC.FAILED_PRECONDITION, "KEY_MISMATCH", expected="absent", actual=0)
check("offset out of range", lambda: broker.Fetch(broker_pb2.FetchRequest(
    partitions=[broker_pb2.FetchPartition(topic="orders", partition=0, offset=99)])),
    SC.OUT_OF_RANGE, "OFFSET_OUT_OF_RANGE", offset=99, log_start_offset=0, high_watermark=2)
check("topic exists", lambda: admin.CreateTopic(admin_pb2.CreateTopicRequest(name="orders", partitions=1)),
      SC.ALREADY_EXISTS, "TOPIC_EXISTS", topic="orders")
check("bad config", lambda: admin.CreateTopic(admin_pb2.CreateTopicRequest(
    name="t2", partitions=1, configs={"retention.ms": "soon"})),
    SC.INVALID_ARGUMENT, "INVALID_CONFIG", key="retention.ms")
check("bad name", lambda: admin.CreateTopic(admin_pb2.CreateTopicRequest(name="a/b", partitions=1)),
      SC.INVALID_ARGUMENT, "INVALID_TOPIC_NAME")
check("no records", lambda: broker.Produce(broker_pb2.ProduceRequest(topic="orders", partition=0)),
      SC.INVALID_ARGUMENT, "INVALID_ARGUMENT")
check("internal topic", lambda: broker.Produce(broker_pb2.ProduceRequest(
    topic="__consumer_offsets", partition=0, records=[record("x")])),
    SC.INVALID_ARGUMENT, "INTERNAL_TOPIC", topic="__consumer_offsets")
check("malformed protobuf", raw_call("/strata.v1.Broker/Produce", b"\xff\xff\xff"),
      SC.INVALID_ARGUMENT, "MALFORMED_REQUEST", definite=True)
check("malformed health request", raw_call("/grpc.health.v1.Health/Check", b"\xff\xff\xff"),
      SC.INVALID_ARGUMENT, "MALFORMED_REQUEST")
check("unknown health service", raw_call("/grpc.health.v1.Health/Check", b"\x0a\x04nope"),
      SC.NOT_FOUND, "UNKNOWN_SERVICE", service="nope")

# Idempotent producers: a gap, a fenced instance.
p = broker.InitProducer(broker_pb2.InitProducerRequest(writer_id="py-writer"))
stamp = lambda seq, epoch=p.producer_epoch: broker_pb2.ProducerBatch(  # noqa: E731
    producer_id=p.producer_id, producer_epoch=epoch, sequence=seq)
broker.Produce(broker_pb2.ProduceRequest(topic="orders", partition=0, records=[record("s0")], producer=stamp(0)))
check("sequence gap", lambda: broker.Produce(broker_pb2.ProduceRequest(
    topic="orders", partition=0, records=[record("s5")], producer=stamp(5))),
    SC.FAILED_PRECONDITION, "OUT_OF_ORDER_SEQUENCE", sequence=5, expected_sequence=1, retriable=True)
newer = broker.InitProducer(broker_pb2.InitProducerRequest(writer_id="py-writer"))
assert newer.producer_epoch > p.producer_epoch
check("fenced producer", lambda: broker.Produce(broker_pb2.ProduceRequest(
    topic="orders", partition=0, records=[record("s1")], producer=stamp(1))),
    SC.FAILED_PRECONDITION, "PRODUCER_FENCED", epoch=p.producer_epoch, current_epoch=newer.producer_epoch,
    retriable=False)
check("unissued producer id", lambda: broker.Produce(broker_pb2.ProduceRequest(
    topic="orders", partition=0, records=[record("x")],
    producer=broker_pb2.ProducerBatch(producer_id=987654321, producer_epoch=0, sequence=0))),
    SC.FAILED_PRECONDITION, "UNKNOWN_PRODUCER_ID", producer_id=987654321)

# Groups.
check("unknown group", lambda: groups.DescribeGroup(groups_pb2.DescribeGroupRequest(group_id="nope")),
      SC.NOT_FOUND, "GROUP_NOT_FOUND", group="nope")
check("heartbeat of a stranger", lambda: groups.Heartbeat(groups_pb2.HeartbeatRequest(
    group_id="g", member_id="made-up", member_epoch=3, topics=["orders"])),
    SC.FAILED_PRECONDITION, "NOT_IN_GROUP", member="made-up", group="g")
big = groups_pb2.CommitOffsetsRequest(group_id="g", offsets=[
    groups_pb2.OffsetCommit(topic="orders", partition=0, offset=i) for i in range(300_000)])
check("control request too large", lambda: groups.CommitOffsets(big),
      SC.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE", limit="server.max_control_request_bytes")

# Credentials.
check("cluster RPC without a super user", lambda: admin.ListAcls(admin_pb2.ListAclsRequest()),
      SC.UNAUTHENTICATED, "UNAUTHENTICATED")
check("two authorization headers", lambda: admin.ListTopics(admin_pb2.ListTopicsRequest(), metadata=[
    ("authorization", "Bearer strata_a_b"), ("authorization", "Bearer strata_c_d")]),
    SC.UNAUTHENTICATED, "BAD_CREDENTIALS", credential="ambiguous")

# In a ProduceStream, a refusal travels in its reply, with the same reason.
replies = list(broker.ProduceStream(iter([
    broker_pb2.ProduceRequest(request_id=1, topic="orders", partition=0, records=[record("ok")]),
    broker_pb2.ProduceRequest(request_id=2, topic="nope", partition=0, records=[record("x")]),
])))
try:
    assert [r.request_id for r in replies] == [1, 2], replies
    assert not replies[0].HasField("error"), replies[0]
    e = replies[1].error
    assert (e.code, e.reason, e.metadata["topic"], e.metadata["definite"]) == (5, "TOPIC_NOT_FOUND", "nope", "true"), e
    passed += 1
    print("ok      produce stream: TOPIC_NOT_FOUND in the reply")
except AssertionError as err:
    failed += 1
    print(f"FAILED  produce stream: {err}")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
