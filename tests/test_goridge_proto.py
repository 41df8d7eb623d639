"""The checked-in protobuf classes are what ``make proto`` makes of jobs.proto,
and they carry RoadRunner's jobs.v1 field numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

from rrjobs.rpc.pb import jobs_pb2 as pb

SRC = Path(__file__).resolve().parents[1] / "src"
PB = SRC / "rrjobs" / "rpc" / "pb"


def test_the_generated_code_is_up_to_date(tmp_path: Path) -> None:
    from grpc_tools import protoc
    (tmp_path / "rrjobs" / "rpc" / "pb").mkdir(parents=True)
    shutil.copy(PB / "jobs.proto", tmp_path / "rrjobs" / "rpc" / "pb" / "jobs.proto")
    rc = protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
                      f"--pyi_out={tmp_path}", str(tmp_path / "rrjobs/rpc/pb/jobs.proto")])
    assert rc == 0
    for name in ("jobs_pb2.py", "jobs_pb2.pyi"):
        fresh = (tmp_path / "rrjobs" / "rpc" / "pb" / name).read_text()
        assert fresh == (PB / name).read_text(), f"{name} is stale: run make proto"


def numbers(cls: type) -> dict[str, int]:
    return {f.name: f.number for f in cls.DESCRIPTOR.fields}  # type: ignore[attr-defined]


def test_field_numbers_are_roadrunners() -> None:
    assert pb.DESCRIPTOR.package == "jobs.v1"
    assert numbers(pb.Job) == {"job": 1, "id": 2, "payload": 3, "headers": 4, "options": 5}
    assert numbers(pb.Options) == {"priority": 1, "pipeline": 2, "delay": 3, "auto_ack": 6,
                                   "topic": 7, "metadata": 8, "offset": 9, "partition": 10}
    assert numbers(pb.HeaderValue) == {"value": 1}
    assert numbers(pb.PushRequest) == {"job": 1}
    assert numbers(pb.PushBatchRequest) == {"jobs": 1}
    assert numbers(pb.Pipelines) == {"pipelines": 1}
    assert numbers(pb.DeclareRequest) == {"pipeline": 1}
    assert numbers(pb.Stats) == {"stats": 1}
    assert numbers(pb.Stat) == {"pipeline": 1, "driver": 2, "queue": 3, "active": 4,
                                "delayed": 5, "reserved": 6, "ready": 7, "priority": 8}
    assert numbers(pb.Empty) == {}


def test_a_job_encodes_to_the_wire_bytes_of_its_field_numbers() -> None:
    job = pb.Job(job="a", id="b", payload=b"\x00", options=pb.Options(pipeline="p", delay=2,
                                                                      auto_ack=True))
    job.headers["h"].value.append("v")
    # 1:"a" 2:"b" 3:00 4:{1:"h" 2:{1:"v"}} 5:{2:"p" 3:2 6:true}
    assert job.SerializeToString() == bytes.fromhex(
        "0a0161" "120162" "1a0100" "2208" "0a0168" "1203" "0a0176" "2a07" "120170" "1802" "3001")
