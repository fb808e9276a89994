"""Who may call what: TLS (optionally mutual) and bearer tokens.

The mesh config names files, never secrets:

    [auth]
    tls_cert = "certs/server.pem"      # this service's certificate chain
    tls_key = "certs/server.key"
    tls_ca = "certs/ca.pem"            # the CA that signed the peers' certificates
    require_client_cert = true         # mutual TLS
    tokens_file = "tokens"             # lines "CALLER TOKEN": who may call, by token
    token_file = "my.token"            # this mesh's own token for its calls ($MESH_TOKEN wins)
    [auth.permissions]                 # methods each caller may use
    manager = ["*"]                    # every method but the admin ones
    ops = ["Describe", "ListTools"]
    admin = ["*", "admin"]             # "admin": AddTool and RemoveTool too

A call without a valid ``authorization: Bearer TOKEN`` gets UNAUTHENTICATED;
a caller using a method it is not allowed gets PERMISSION_DENIED. Changing an
agent's tools is never implied: only a caller granted "admin" (or the method
by name) may, so a mesh without tokens allows no tool changes at all. Health
checks are exempt so that probes work. Tokens are compared in constant time
and never logged.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from mesh.errors import ConfigError, MeshError, PermissionDeniedError, UnauthenticatedError
from mesh.rpc.status import abort_for

__all__ = ["ADMIN_METHODS", "MeshSecurity", "TokenAuthInterceptor", "open_channel"]

HEALTH_PREFIX = "/grpc.health.v1.Health/"
ADMIN_METHODS = frozenset({"AddTool", "RemoveTool"})
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MESSAGE_SIZE_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
AUTH_KEYS = frozenset({"tls_cert", "tls_key", "tls_ca", "require_client_cert", "tokens_file",
                       "token_file", "permissions"})  # fmt: skip
"""The fields of ``[auth]``."""


@dataclass(frozen=True)
class MeshSecurity:
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    require_client_cert: bool = False
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Caller name -> token it must present (empty: no token check)."""
    permissions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    client_token: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        assert self.tls_cert is not None and self.tls_key is not None
        return grpc.ssl_server_credentials(
            [(self.tls_key.read_bytes(), self.tls_cert.read_bytes())],
            root_certificates=self.tls_ca.read_bytes() if self.tls_ca else None,
            require_client_auth=self.require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Trust the mesh's CA; present this service's certificate (for mutual TLS)."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca.read_bytes() if self.tls_ca else None,
            private_key=self.tls_key.read_bytes() if self.tls_key else None,
            certificate_chain=self.tls_cert.read_bytes() if self.tls_cert else None,
        )

    def caller(self, metadata: Any) -> str | None:
        """The caller whose token the call's metadata carries, if any."""
        authorization = str(dict(metadata or ()).get("authorization", ""))
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for caller, expected in self.tokens.items():  # constant time per comparison
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = caller
        return found

    def may_call(self, caller: str, method: str) -> bool:
        """Whether ``caller`` may use ``method`` (a bare name like "Run")."""
        allowed = self.permissions.get(caller, ("*",))
        if method in ADMIN_METHODS:
            return "admin" in allowed or method in allowed
        return "*" in allowed or method in allowed

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.client_token}"),) if self.client_token else ()

    @classmethod
    def from_config(cls, table: Mapping[str, Any], base: Path, where: str = "auth") -> MeshSecurity:
        for key in table:
            if key not in AUTH_KEYS:
                raise ConfigError(
                    f"{where}.{key}: unknown field (known: {', '.join(sorted(AUTH_KEYS))})"
                )
        paths = {k: _path(table, k, base, where) for k in ("tls_cert", "tls_key", "tls_ca")}
        if (paths["tls_cert"] is None) != (paths["tls_key"] is None):
            raise ConfigError(f"{where}: tls_cert and tls_key go together")
        tokens_file = _path(table, "tokens_file", base, where)
        token_file = _path(table, "token_file", base, where)
        permissions = table.get("permissions", {})
        if not isinstance(permissions, Mapping):
            raise ConfigError(f"{where}.permissions: expected a table of caller = [methods]")
        tokens = _read_tokens(tokens_file, where) if tokens_file else {}
        unknown = set(permissions) - set(tokens)
        if unknown:
            raise ConfigError(f"{where}.permissions: callers without a token: {sorted(unknown)}")
        client = os.environ.get("MESH_TOKEN") or (
            token_file.read_text().strip() if token_file else None
        )
        return cls(
            tls_cert=paths["tls_cert"],
            tls_key=paths["tls_key"],
            tls_ca=paths["tls_ca"],
            require_client_cert=bool(table.get("require_client_cert", False)),
            tokens=tokens,
            permissions={caller: tuple(methods) for caller, methods in permissions.items()},
            client_token=client or None,
        )


def open_channel(
    target: str, security: MeshSecurity | None, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A channel to a mesh service: TLS when the mesh uses it, mesh message size limits."""
    options = [*MESSAGE_SIZE_OPTIONS, *(options or [])]
    if security is not None and security.tls:
        return grpc.secure_channel(target, security.channel_credentials(), options=options)
    return grpc.insecure_channel(target, options=options)


if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]  # generic only in the type stubs


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, security: MeshSecurity) -> None:
        self.security = security

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        method = details.method or ""
        if method.startswith(HEALTH_PREFIX) or handler is None:
            return handler
        caller = self.security.caller(details.invocation_metadata)
        if caller is None:
            return _refusal(handler, UnauthenticatedError("a valid bearer token is required"))
        if not self.security.may_call(caller, method.rsplit("/", 1)[-1]):
            return _refusal(handler, PermissionDeniedError(f"{caller} may not call {method}"))
        return handler


def _refusal(handler: Handler, error: MeshError) -> Handler:
    """A handler that refuses the call with ``error`` (its status, message and detail)."""

    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_for(context, error)

    async def abort_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_for(context, error)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            abort_stream, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        abort, handler.request_deserializer, handler.response_serializer
    )


def _path(table: Mapping[str, Any], key: str, base: Path, where: str) -> Path | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: expected a path")
    path = base / value
    if not path.is_file():
        raise ConfigError(f"{where}.{key}: {path} does not exist")
    return path


def _read_tokens(path: Path, where: str) -> dict[str, str]:
    tokens = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        caller, _, token = line.strip().partition(" ")
        if not caller or len(token.strip()) < 16:
            raise ConfigError(f"{where}.tokens_file: line {number} must be 'CALLER TOKEN' "
                              "with a token of 16 characters or more")  # fmt: skip
        tokens[caller] = token.strip()
    return tokens
