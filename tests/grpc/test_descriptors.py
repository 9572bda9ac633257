"""The proto registry: .proto sources compiled at load, descriptor sets, and the problems it reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from door_harness import INTEROP_PROTOS, PROTOS

from edge.config import ConfigError
from edge.transcode.descriptors import ProtoRegistry, compile_protos, load_registry

PHARMACY = """
syntax = "proto3";
package hms.pharmacy.v1;
import "google/api/annotations.proto";
import "google/protobuf/empty.proto";

message RefillRequest { string rx = 1; }
message RefillReply { string status = 1; string pickup = 2; }

service Pharmacy {
  rpc Refill(RefillRequest) returns (RefillReply) {
    option (google.api.http) = { get: "/v1/prescriptions/refill" };
  }
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty);
}
"""


@pytest.mark.parametrize(
    ("method", "client_streaming", "server_streaming"),
    [
        ("UnaryCall", False, False),
        ("StreamingOutputCall", False, True),
        ("StreamingInputCall", True, False),
        ("FullDuplexCall", True, True),
    ],
)
def test_methods_carry_their_streaming_flags(method: str, client_streaming: bool, server_streaming: bool) -> None:
    info = load_registry(PROTOS).method(f"/grpc.testing.TestService/{method}")
    assert info is not None
    assert (info.client_streaming, info.server_streaming) == (client_streaming, server_streaming)


def test_sources_and_descriptor_sets_load_the_same(tmp_path: Path) -> None:
    (tmp_path / "interop.desc").write_bytes(compile_protos(PROTOS, INTEROP_PROTOS).SerializeToString())
    from_sources, from_set = load_registry(PROTOS), load_registry(tmp_path)
    assert (
        from_sources.services()
        == from_set.services()
        == ["grpc.testing.TestService", "grpc.testing.UnimplementedService"]
    )
    assert from_set.method("/grpc.testing.TestService/UnaryCall") == from_sources.method(
        "/grpc.testing.TestService/UnaryCall"
    )
    assert from_set.pool.FindMessageTypeByName("grpc.testing.SimpleRequest").fields_by_name["payload"].number == 3


def test_google_api_annotations_and_well_known_types_resolve(tmp_path: Path) -> None:
    (tmp_path / "hms").mkdir()
    (tmp_path / "hms" / "pharmacy.proto").write_text(PHARMACY)
    registry = load_registry(tmp_path)
    refill = registry.method("/hms.pharmacy.v1.Pharmacy/Refill")
    assert refill is not None and refill.input_type == "hms.pharmacy.v1.RefillRequest"
    assert "google/api/annotations.proto" in registry.files
    assert registry.pool.FindServiceByName("hms.pharmacy.v1.Pharmacy").methods_by_name["Ping"]


def test_a_file_in_a_set_and_in_sources_is_loaded_once(tmp_path: Path) -> None:
    (tmp_path / "interop.pb").write_bytes(compile_protos(PROTOS, INTEROP_PROTOS).SerializeToString())
    (tmp_path / "interop").mkdir()
    for name in INTEROP_PROTOS:
        (tmp_path / name).write_text((PROTOS / name).read_text())
    assert load_registry(tmp_path).services() == ["grpc.testing.TestService", "grpc.testing.UnimplementedService"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"bad.proto": 'syntax = "proto3";\nmessage {'}, "bad.proto:2"),
        ({"lonely.proto": 'syntax = "proto3";\nimport "missing.proto";'}, "missing.proto"),
        ({"broken.pb": "not a descriptor set"}, "broken.pb: not a FileDescriptorSet"),
    ],
    ids=["syntax-error", "missing-import", "corrupt-set"],
)
def test_problems_name_the_file(files: dict[str, str], expected: str, tmp_path: Path) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_registry(tmp_path)
    assert any(expected in problem for problem in raised.value.problems), raised.value.problems


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="protos: expected a directory"):
        load_registry(tmp_path / "nowhere")


def test_no_directory_is_an_empty_registry() -> None:
    registry = load_registry(None)
    assert registry.services() == [] and registry.method("/a.B/C") is None
    assert ProtoRegistry().descriptor_set().file == []
