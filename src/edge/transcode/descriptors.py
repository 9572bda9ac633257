"""The proto registry: what the gateway knows about the services behind it.

The `protos` directory of `edge.yaml` holds `.proto` files and/or descriptor
sets (`*.pb`, `*.desc`, `*.protoset`). `load_registry` compiles the `.proto`
files once, at load, with `grpc_tools.protoc` (imports resolve against the
directory itself, the well-known types bundled with grpc_tools and the
googleapis protos, so `google/api/annotations.proto` works), reads the
descriptor sets, and puts every file into one `DescriptorPool`.

The gRPC door asks the registry for a method's streaming flags and hands the
pool to server reflection; REST transcoding reads messages and HTTP rules from
the same pool. Problems are `ConfigError`s naming the file, like any other
config problem.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool  # type: ignore[import-untyped]

from edge.config import ConfigError

DESCRIPTOR_SET_SUFFIXES = frozenset({".pb", ".desc", ".protoset"})
PROTOC_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One RPC: its full service name, its name, message types and streaming flags."""

    service: str
    name: str
    input_type: str
    output_type: str
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


class ProtoRegistry:
    """Proto files by name, their services and methods, and the pool that holds them."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto] = ()) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self.files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self._methods: dict[str, MethodInfo] = {}
        self._services: dict[str, tuple[MethodInfo, ...]] = {}
        self.add(files)

    def add(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        """Add files (any order, dependencies first or not); a file already known by name is kept."""
        new: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for proto in files:
            if proto.name not in self.files:
                new.setdefault(proto.name, proto)
        for proto in _dependency_order(new, known=self.files):
            try:
                self.pool.Add(proto)
            except (TypeError, ValueError, KeyError) as error:
                raise ConfigError([f"{proto.name}: cannot be added to the proto registry: {error}"]) from None
            self.files[proto.name] = proto
            self._index(proto)

    def _index(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        for service in proto.service:
            full = f"{proto.package}.{service.name}" if proto.package else service.name
            methods = tuple(_method_info(full, m) for m in service.method)
            self._services[full] = methods
            self._methods.update((m.path, m) for m in methods)

    def services(self) -> list[str]:
        return sorted(self._services)

    def service(self, name: str) -> tuple[MethodInfo, ...] | None:
        return self._services.get(name)

    def method(self, path: str) -> MethodInfo | None:
        """The method at `/pkg.Service/Method`, or None when no known proto declares it."""
        return self._methods.get(path)

    def descriptor_set(self) -> descriptor_pb2.FileDescriptorSet:
        return descriptor_pb2.FileDescriptorSet(file=list(self.files.values()))


def _method_info(service: str, method: descriptor_pb2.MethodDescriptorProto) -> MethodInfo:
    return MethodInfo(
        service=service,
        name=method.name,
        input_type=method.input_type.lstrip("."),
        output_type=method.output_type.lstrip("."),
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
    )


def _dependency_order(
    files: dict[str, descriptor_pb2.FileDescriptorProto], known: dict[str, descriptor_pb2.FileDescriptorProto]
) -> list[descriptor_pb2.FileDescriptorProto]:
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    placed: set[str] = set()

    def place(name: str, chain: tuple[str, ...]) -> None:
        if name in placed or name in known:
            return
        if name not in files:
            raise ConfigError([f"{chain[-1]}: imports {name!r}, which no proto file or descriptor set provides"])
        if name in chain:
            raise ConfigError([f"{name}: import cycle ({' -> '.join((*chain, name))})"])
        for dependency in files[name].dependency:
            place(dependency, (*chain, name))
        placed.add(name)
        ordered.append(files[name])

    for name in files:
        place(name, ())
    return ordered


def load_registry(directory: Path | None) -> ProtoRegistry:
    """Compile and read everything in `directory` (blocking: call it at load or in a thread)."""
    registry = ProtoRegistry()
    if directory is None:
        return registry
    if not directory.is_dir():
        raise ConfigError([f"{directory}: protos: expected a directory of .proto files or descriptor sets"])
    sets = [read_descriptor_set(p) for p in sorted(directory.rglob("*")) if p.suffix in DESCRIPTOR_SET_SUFFIXES]
    sources = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*.proto"))
    if sources:
        sets.append(compile_protos(directory, sources))
    registry.add(f for s in sets for f in s.file)
    return registry


def read_descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    try:
        return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
    except Exception as error:  # protobuf raises DecodeError, a bare Exception subclass
        raise ConfigError([f"{path}: not a FileDescriptorSet: {error}"]) from None


def include_paths() -> list[Path]:
    """Where imports outside the protos directory resolve: well-known types and googleapis."""
    bundled = Path(str(resources.files("grpc_tools") / "_proto"))
    annotations = importlib.util.find_spec("google.api.annotations_pb2")
    if annotations is None or annotations.origin is None:
        return [bundled]
    return [bundled, Path(annotations.origin).resolve().parents[2]]


def compile_protos(directory: Path, sources: Iterable[str]) -> descriptor_pb2.FileDescriptorSet:
    """Run protoc (grpc_tools) on `sources`, relative to `directory`, into one descriptor set."""
    with tempfile.TemporaryDirectory(prefix="edge-protos-") as scratch:
        out = Path(scratch) / "set.pb"
        args = [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={directory}"]
        args += [f"--proto_path={p}" for p in include_paths()]
        args += ["--include_imports", f"--descriptor_set_out={out}", *sources]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=PROTOC_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise ConfigError([f"{directory}: protoc did not finish within {PROTOC_TIMEOUT:.0f}s"]) from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
            raise ConfigError([f"{directory}: protoc: {line}" for line in lines])
        return read_descriptor_set(out)
