#!/usr/bin/env python3
"""An Azure Key Vault + Entra ID + managed-identity test server for the realenv.

One HTTPS listener on loopback serves:
  * the Key Vault data plane (secrets, certificates, keys) behind the bearer challenge,
  * Entra ID: OpenID configuration, instance discovery and the v2.0 token endpoint
    (client_credentials by client secret or by client assertion, including federated
    workload-identity assertions),
  * IMDS (`/metadata/identity/oauth2/token`, header `Metadata: true`) and the App Service
    managed-identity protocol (`/msi/token`, header `X-IDENTITY-HEADER`),
  * `/_admin/...`: seed principals, secrets, certificates and keys; counters; resets
    (bearer admin token).
An optional second listener (plain HTTP, like the real IMDS) serves only the IMDS path.

Wire shapes follow Microsoft's clients and the real service; see README.md next to this file.
State (principals, objects, issued tokens) is kept in STATE_DIR/state.json, so a stopped and
restarted server keeps its data. Counters live in memory.

Needs `cryptography` (the realenv venv has it) for certificates, keys and assertion signatures.
"""

import argparse
import base64
import copy
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

MAX_BODY = 1 << 20  # bytes of one request body
MAX_SECRET_VALUE = 25 * 1024  # the service's limit for one secret value
MAX_TOKENS = 10_000  # issued tokens kept; the oldest go first
MAX_VERSIONS = 1_000  # versions kept per object
MAX_OBJECTS = 10_000  # secrets / certificates / keys per kind
VAULT_RESOURCE = "https://vault.azure.net"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
API_VERSION = re.compile(r"^(7\.[0-6](-preview(\.\d+)?)?|20\d\d-\d\d-\d\d(-preview)?)$")
NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
VERSION = re.compile(r"^[0-9a-f]{32}$")
RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90


def now():
    return int(time.time())


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_b64url(value):
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def new_version():
    return uuid.uuid4().hex


class HttpError(Exception):
    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def kv_error(status, code, message, inner=None):
    error = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return HttpError(status, {"error": error})


def aad_error(status, error, code, description):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    return HttpError(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )


# --- state ---------------------------------------------------------------------------------


class State:
    """Everything the server knows; one lock, persisted as JSON after every change."""

    def __init__(self, path, seed):
        self.lock = threading.RLock()
        self.path = path
        self.seed = seed
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.data = json.load(f)
        else:
            self.data = self.fresh()
            self.save()
        self.reset_counters()

    def fresh(self):
        data = {
            "tenant": self.seed["tenant"],
            "tenants": sorted(set(self.seed.get("tenants", [])) | {self.seed["tenant"]}),
            "principals": {},
            "secrets": {},
            "deleted_secrets": {},
            "certificates": {},
            "keys": {},
            "tokens": {},
            "settings": {"default_token_lifetime": 3599, "page_size": 25},
        }
        for client_id, principal in self.seed.get("principals", {}).items():
            data["principals"][client_id] = normalize_principal(client_id, principal, data["tenant"])
        return data

    def reset_counters(self):
        self.counters = {
            "requests": 0,
            "unauthenticated": 0,
            "token_requests": {},
            "tokens_issued": {},
            "token_failures": {},
            "secret_reads": {},
            "secret_lists": 0,
            "certificate_reads": {},
            "key_reads": {},
        }

    def count(self, kind, key=None):
        with self.lock:
            if key is None:
                self.counters[kind] += 1
            else:
                self.counters[kind][key] = self.counters[kind].get(key, 0) + 1

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".partial"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)


def normalize_principal(client_id, p, default_tenant):
    if not isinstance(p, dict):
        raise kv_error(400, "BadParameter", "a principal is a JSON object")
    read = p.get("read", "all")
    if not (read in ("all", "none") or (isinstance(read, list) and all(isinstance(n, str) for n in read))):
        raise kv_error(400, "BadParameter", 'read is "all", "none" or a list of names')
    federated = []
    for fc in p.get("federated", []) or []:
        if not isinstance(fc, dict) or not fc.get("issuer") or not fc.get("subject"):
            raise kv_error(400, "BadParameter", "a federated credential needs issuer and subject")
        federated.append(
            {
                "issuer": str(fc["issuer"]),
                "subject": str(fc["subject"]),
                "audience": str(fc.get("audience", FEDERATED_AUDIENCE)),
                "pem": fc.get("pem"),
                "jwks": fc.get("jwks"),
            }
        )
    lifetime = int(p.get("token_lifetime", 0) or 0)
    if lifetime < 0 or lifetime > 86400:
        raise kv_error(400, "BadParameter", "token_lifetime is 0 (the default) to 86400 seconds")
    return {
        "client_id": client_id,
        "tenant": str(p.get("tenant", default_tenant)),
        "secret": p.get("secret"),
        "federated": federated,
        "managed_identity": bool(p.get("managed_identity", False)),
        "system_assigned": bool(p.get("system_assigned", False)),
        "object_id": str(p.get("object_id") or uuid.uuid5(uuid.NAMESPACE_URL, "oid:" + client_id)),
        "resource_id": p.get("resource_id"),
        "read": read,
        "write": bool(p.get("write", False)),
        "token_lifetime": lifetime,
    }


# --- JWT assertions ------------------------------------------------------------------------


def parse_jwt(token):
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 16384:
        raise ValueError("not a compact JWS")
    header = json.loads(b64url_decode(parts[0]))
    claims = json.loads(b64url_decode(parts[1]))
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("header and claims must be objects")
    return header, claims, (parts[0] + "." + parts[1]).encode(), b64url_decode(parts[2])


def public_keys_of(fc):
    """The public keys a federated credential trusts: from PEM (key or certificate) or JWKS."""
    keys = []
    if fc.get("pem"):
        data = fc["pem"].encode()
        if b"CERTIFICATE" in data:
            keys.append((None, x509.load_pem_x509_certificate(data).public_key()))
        else:
            keys.append((None, serialization.load_pem_public_key(data)))
    for jwk in (fc.get("jwks") or {}).get("keys", []):
        if jwk.get("kty") == "RSA":
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
            keys.append((jwk.get("kid"), rsa.RSAPublicNumbers(e, n).public_key()))
        elif jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            x = int.from_bytes(b64url_decode(jwk["x"]), "big")
            y = int.from_bytes(b64url_decode(jwk["y"]), "big")
            keys.append((jwk.get("kid"), ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()))
    return keys


def signature_ok(header, signed, signature, keys):
    alg = header.get("alg")
    for kid, key in keys:
        if kid and header.get("kid") and kid != header.get("kid"):
            continue
        try:
            if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
                return True
            if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and len(signature) == 64:
                from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
                return True
        except Exception:  # noqa: BLE001 - a failed verification is just "no"
            continue
    return False


# --- objects: secrets, certificates, keys ---------------------------------------------------


def attributes_of(v):
    a = {
        "enabled": v["enabled"],
        "created": v["created"],
        "updated": v["updated"],
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
    }
    for field in ("exp", "nbf"):
        if v.get(field) is not None:
            a[field] = v[field]
    return a


def secret_bundle(base, name, v, with_value=True, with_version=True):
    bundle = {"id": f"{base}/secrets/{name}" + (f"/{v['version']}" if with_version else ""), "attributes": attributes_of(v)}
    if with_value:
        bundle["value"] = v["value"]
    if v.get("contentType") is not None:
        bundle["contentType"] = v["contentType"]
    if v.get("tags"):
        bundle["tags"] = v["tags"]
    if v.get("managed"):
        bundle["managed"] = True
        if with_value:
            bundle["kid"] = f"{base}/keys/{name}/{v['version']}"
    return bundle


def key_bundle(base, name, v, with_version=True, item=False):
    """A key bundle (the public JWK), or a list item (kid only) when item is set."""
    kid = f"{base}/keys/{name}" + (f"/{v['version']}" if with_version else "")
    attributes = attributes_of(v)
    attributes["exportable"] = False
    if item:
        bundle = {"kid": kid, "attributes": attributes}
    else:
        jwk = dict(v["jwk"])
        jwk["kid"] = f"{base}/keys/{name}/{v['version']}"
        bundle = {"key": jwk, "attributes": attributes}
    if v.get("tags"):
        bundle["tags"] = v["tags"]
    if v.get("managed"):
        bundle["managed"] = True
    return bundle


def certificate_bundle(base, name, v, with_version=True, full=True):
    ver = v["version"]
    bundle = {
        "id": f"{base}/certificates/{name}" + (f"/{ver}" if with_version else ""),
        "x5t": v["x5t"],
        "attributes": attributes_of(v),
    }
    if v.get("tags"):
        bundle["tags"] = v["tags"]
    if full:
        bundle["kid"] = f"{base}/keys/{name}/{ver}"
        bundle["sid"] = f"{base}/secrets/{name}/{ver}"
        bundle["cer"] = v["cer"]
        bundle["contentType"] = v["contentType"]
        bundle["policy"] = v["policy"]
        bundle["policy"]["id"] = f"{base}/certificates/{name}/policy"
    return bundle


def jwk_of(public_key):
    if isinstance(public_key, rsa.RSAPublicKey):
        n = public_key.public_numbers()
        return {
            "kty": "RSA",
            "key_ops": ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
            "n": int_b64url(n.n),
            "e": int_b64url(n.e),
        }
    n = public_key.public_numbers()
    return {
        "kty": "EC",
        "key_ops": ["sign", "verify"],
        "crv": "P-256",
        "x": b64url(n.x.to_bytes(32, "big")),
        "y": b64url(n.y.to_bytes(32, "big")),
    }


def make_key(kty, size):
    if kty in ("EC", "EC-HSM"):
        return ec.generate_private_key(ec.SECP256R1())
    if size not in (2048, 3072, 4096):
        raise kv_error(400, "BadParameter", "key_size must be 2048, 3072 or 4096")
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def make_certificate(name, subject, content_type):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(subject_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name + ".mooring.invalid")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    if content_type == "application/x-pkcs12":
        from cryptography.hazmat.primitives.serialization import pkcs12

        secret_value = base64.b64encode(
            pkcs12.serialize_key_and_certificates(name.encode(), key, cert, None, serialization.NoEncryption())
        ).decode()
    else:
        secret_value = (key_pem + cert_pem).decode()
    return key, cert, der, secret_value


# --- the handler ---------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mooring-azure-test"
    sys_version = ""
    # Set on the class by main().
    state = None
    base = ""  # https://127.0.0.1:PORT
    admin_token = ""
    identity_header = ""
    imds_only = False

    def log_message(self, fmt, *args):
        sys.stderr.write("azure-kv: " + (fmt % args) + "\n")

    # Every verb goes through one dispatcher.
    def do_GET(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_PATCH(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()

    def handle_any(self):
        self.state.count("requests")
        extra = {}
        try:
            body = self.read_body()
            parts = urlsplit(self.path)
            self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            path = unquote(parts.path)
            status, payload, extra = self.route(self.command, path, body)
        except HttpError as e:
            status, payload, extra = e.status, e.body, e.headers
        except Exception as e:  # noqa: BLE001 - a bug must answer 500, not hang the client
            sys.stderr.write(f"azure-kv: internal error: {type(e).__name__}: {e}\n")
            status, payload = 500, {"error": {"code": "InternalServerError", "message": "test server error"}}
        self.respond(status, payload, extra)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise kv_error(411, "BadParameter", "chunked request bodies are not supported")
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise kv_error(413, "RequestTooLarge", f"request bodies are limited to {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def respond(self, status, payload, headers=None):
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def json_body(self, body):
        if not body:
            return {}
        try:
            value = json.loads(body)
        except ValueError as e:
            raise kv_error(400, "BadParameter", f"the request body is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise kv_error(400, "BadParameter", "the request body must be a JSON object")
        return value

    # --- routing -----------------------------------------------------------------------------

    def route(self, method, path, body):
        segs = [s for s in path.split("/") if s != ""]
        if path.startswith("/metadata/identity/oauth2/token"):
            return self.imds(method)
        if self.imds_only:
            return 404, {"error": "invalid_request", "error_description": "only IMDS is served here"}, {}
        if path == "/msi/token" or path == "/msi/token/":
            return self.app_service(method)
        if segs[:1] == ["_admin"]:
            return self.admin(method, segs[1:], body)
        if len(segs) >= 3 and segs[1:3] == ["oauth2", "v2.0"] and segs[3:] == ["token"]:
            return self.token(method, segs[0], body)
        if len(segs) == 4 and segs[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self.openid(segs[0])
        if segs[:3] == ["common", "discovery", "instance"]:
            return self.instance_discovery()
        if segs[:1] in (["secrets"], ["deletedsecrets"], ["certificates"], ["keys"]):
            return self.vault(method, segs, body)
        raise kv_error(404, "NotFound", f"no such path: {path}")

    # --- Entra ID --------------------------------------------------------------------------

    def known_tenant(self, tenant):
        with self.state.lock:
            return tenant in self.state.data["tenants"]

    def openid(self, tenant):
        if not self.known_tenant(tenant):
            raise aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")
        root = f"{self.base}/{tenant}"
        return 200, {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.base}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "mooring.invalid",
        }, {}

    def instance_discovery(self):
        host = urlsplit(self.base).netloc
        endpoint = self.query.get("authorization_endpoint", "")
        tenant = "common"
        seg = [s for s in urlsplit(endpoint).path.split("/") if s]
        if seg:
            tenant = seg[0]
        return 200, {
            "tenant_discovery_endpoint": f"{self.base}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }, {}

    def token(self, method, tenant, body):
        if method != "POST":
            raise aad_error(400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
        try:
            form = {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise aad_error(400, "invalid_request", 900144, "The request body must be form-encoded.") from None
        client_id = form.get("client_id", "")
        self.state.count("token_requests", client_id or "(none)")
        try:
            result = self.issue_client_credentials(tenant, form, client_id)
        except HttpError:
            self.state.count("token_failures", client_id or "(none)")
            raise
        self.state.count("tokens_issued", client_id)
        return 200, result, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}

    def issue_client_credentials(self, tenant, form, client_id):
        if not self.known_tenant(tenant):
            raise aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.")
        grant = form.get("grant_type")
        if grant != "client_credentials":
            raise aad_error(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")
        if not client_id:
            raise aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
        resource = None
        for scope in form.get("scope", "").split():
            if scope.endswith("/.default"):
                resource = scope[: -len("/.default")]
        if resource is None:
            raise aad_error(400, "invalid_scope", 1002012, "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
        with self.state.lock:
            principal = copy.deepcopy(self.state.data["principals"].get(client_id))
        if principal is None or principal["tenant"] != tenant:
            raise aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")
        if resource.rstrip("/") != VAULT_RESOURCE:
            raise aad_error(400, "invalid_resource", 500011, f"The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.")
        if "client_secret" in form:
            secret = principal.get("secret")
            if not secret or not hmac.compare_digest(form["client_secret"].encode(), secret.encode()):
                raise aad_error(401, "invalid_client", 7000215, f"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'.")
        elif "client_assertion" in form:
            if form.get("client_assertion_type") != JWT_BEARER:
                raise aad_error(400, "invalid_request", 50027, "JWT token is invalid or malformed: client_assertion_type must be " + JWT_BEARER + ".")
            self.check_assertion(principal, form["client_assertion"])
        else:
            raise aad_error(401, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
        lifetime = principal["token_lifetime"] or self.setting("default_token_lifetime")
        token = self.mint(principal, resource, lifetime)
        return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}

    def check_assertion(self, principal, assertion):
        try:
            header, claims, signed, signature = parse_jwt(assertion)
        except (ValueError, UnicodeDecodeError):
            raise aad_error(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from None
        iss, sub, aud = claims.get("iss"), claims.get("sub"), claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        match = None
        for fc in principal["federated"]:
            if fc["issuer"] == iss and fc["subject"] == sub and fc["audience"] in auds:
                match = fc
                break
        if match is None:
            raise aad_error(400, "invalid_request", 70021, f"No matching federated identity record found for presented assertion. Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{','.join(str(a) for a in auds)}'.")
        t = now()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, (int, float)) or exp + 300 < t or (isinstance(nbf, (int, float)) and nbf - 300 > t):
            raise aad_error(400, "invalid_client", 700024, "Client assertion is not within its valid time range.")
        keys = public_keys_of(match)
        if keys and not signature_ok(header, signed, signature, keys):
            raise aad_error(401, "invalid_client", 50013, "Assertion failed signature validation.")

    def setting(self, name):
        with self.state.lock:
            return self.state.data["settings"][name]

    def mint(self, principal, resource, lifetime):
        token = "mkv." + secrets.token_urlsafe(32)
        with self.state.lock:
            tokens = self.state.data["tokens"]
            t = now()
            for old in [k for k, v in tokens.items() if v["exp"] < t - 3600]:
                del tokens[old]
            while len(tokens) >= MAX_TOKENS:
                del tokens[next(iter(tokens))]
            tokens[token] = {
                "client_id": principal["client_id"],
                "tenant": principal["tenant"],
                "resource": resource.rstrip("/"),
                "exp": t + lifetime,
            }
            self.state.save()
        return token

    # --- managed identity ------------------------------------------------------------------

    def managed_principal(self, selectors):
        """The assigned identity a managed-identity request names, or the system-assigned one."""
        with self.state.lock:
            principals = [p for p in self.state.data["principals"].values() if p["managed_identity"]]
            for key, field in (("client_id", "client_id"), ("object_id", "object_id"), ("principal_id", "object_id"), ("msi_res_id", "resource_id"), ("mi_res_id", "resource_id")):
                wanted = selectors.get(key)
                if wanted:
                    for p in principals:
                        if p.get(field) and p[field].lower() == wanted.lower():
                            return copy.deepcopy(p)
                    return None
            for p in principals:
                if p["system_assigned"]:
                    return copy.deepcopy(p)
        return None

    def imds(self, method):
        if method != "GET":
            raise HttpError(405, {"error": "invalid_request", "error_description": "Only GET is supported"})
        if self.headers.get("Metadata", "").lower() != "true":
            raise HttpError(400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})
        if not self.query.get("api-version"):
            raise HttpError(400, {"error": "invalid_request", "error_description": "Required query variable 'api-version' is missing"})
        resource = self.query.get("resource", "")
        if not resource:
            raise HttpError(400, {"error": "invalid_request", "error_description": "Required query variable 'resource' is missing"})
        principal = self.managed_principal(self.query)
        who = self.query.get("client_id") or "(system-assigned)"
        self.state.count("token_requests", principal["client_id"] if principal else who)
        if principal is None:
            self.state.count("token_failures", who)
            raise HttpError(400, {"error": "invalid_request", "error_description": "Identity not found"})
        if resource.rstrip("/") != VAULT_RESOURCE:
            self.state.count("token_failures", principal["client_id"])
            raise HttpError(400, {"error": "invalid_resource", "error_description": f"AADSTS500011: The resource principal named {resource} was not found in the tenant named {principal['tenant']}."})
        lifetime = principal["token_lifetime"] or self.setting("default_token_lifetime")
        token = self.mint(principal, resource, lifetime)
        self.state.count("tokens_issued", principal["client_id"])
        t = now()
        return 200, {
            "access_token": token,
            "client_id": principal["client_id"],
            "expires_in": str(lifetime),
            "expires_on": str(t + lifetime),
            "ext_expires_in": str(lifetime),
            "not_before": str(t),
            "resource": resource,
            "token_type": "Bearer",
        }, {}

    def app_service(self, method):
        """App Service / Functions managed identity (IDENTITY_ENDPOINT + IDENTITY_HEADER)."""
        if method != "GET":
            raise HttpError(405, {"statusCode": 405, "message": "Only GET is supported"})
        header = self.headers.get("X-IDENTITY-HEADER", "")
        if not self.identity_header or not hmac.compare_digest(header.encode(), self.identity_header.encode()):
            raise HttpError(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"})
        resource = self.query.get("resource", "")
        if not resource or not self.query.get("api-version"):
            raise HttpError(400, {"statusCode": 400, "message": "resource and api-version are required"})
        principal = self.managed_principal(self.query)
        who = self.query.get("client_id") or "(system-assigned)"
        self.state.count("token_requests", principal["client_id"] if principal else who)
        if principal is None or resource.rstrip("/") != VAULT_RESOURCE:
            self.state.count("token_failures", who)
            raise HttpError(400, {"statusCode": 400, "message": "Unable to load the proper Managed Identity."})
        lifetime = principal["token_lifetime"] or self.setting("default_token_lifetime")
        token = self.mint(principal, resource, lifetime)
        self.state.count("tokens_issued", principal["client_id"])
        return 200, {
            "access_token": token,
            "expires_on": str(now() + lifetime),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": principal["client_id"],
        }, {}

    # --- Key Vault data plane ----------------------------------------------------------------

    def challenge(self, message):
        self.state.count("unauthenticated")
        tenant = self.state.data["tenant"]
        header = f'Bearer authorization="{self.base}/{tenant}", resource="{VAULT_RESOURCE}"'
        return HttpError(401, {"error": {"code": "Unauthorized", "message": message}}, {"WWW-Authenticate": header})

    def authenticate(self):
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            raise self.challenge("AKV10000: Request is missing a Bearer or PoP token.")
        token = auth[7:].strip()
        with self.state.lock:
            info = copy.deepcopy(self.state.data["tokens"].get(token))
            principal = copy.deepcopy(self.state.data["principals"].get(info["client_id"])) if info else None
            tenant = self.state.data["tenant"]
        if info is None or principal is None:
            raise self.challenge("Error validating token: IDX10500: Signature validation failed. The token is not known to this vault.")
        if info["exp"] <= now():
            raise self.challenge("Error validating token: IDX10223: Lifetime validation failed. The token is expired.")
        if info["resource"] != VAULT_RESOURCE:
            raise self.challenge(f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {info['resource']}.")
        if info["tenant"] != tenant:
            raise self.challenge(f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, found https://sts.windows.net/{info['tenant']}/.")
        return principal

    def forbid(self, principal, action, kind, name):
        return kv_error(
            403,
            "Forbidden",
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\n"
            f"Caller: appid={principal['client_id']};oid={principal['object_id']};iss=https://sts.windows.net/{principal['tenant']}/\r\n"
            f"Action: 'Microsoft.KeyVault/vaults/{kind}/{action}'\r\n"
            f"Resource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/mooring-test/providers/microsoft.keyvault/vaults/mooring-test/{kind}" + (f"/{name.lower()}'" if name else "'") + "\r\n"
            "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: mooring-test;location=westeurope\r\n",
            "ForbiddenByRbac",
        )

    def may_read(self, principal, name):
        read = principal["read"]
        return read == "all" or (isinstance(read, list) and name is not None and name in read)

    def vault(self, method, segs, body):
        api = self.query.get("api-version", "")
        if not API_VERSION.match(api):
            raise kv_error(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
        principal = self.authenticate()
        kind = segs[0]
        rest = segs[1:]
        if kind == "secrets":
            return self.secrets(method, principal, rest, body)
        if kind == "deletedsecrets":
            return self.deleted_secrets(method, principal, rest)
        return self.keys_or_certificates(method, principal, kind, rest)

    def check_name(self, name, what="secret"):
        if not NAME.match(name):
            raise kv_error(400, "BadParameter", f"The request URI contains an invalid name: {name}. A {what} name is 1-127 characters of letters, digits and dashes.")

    def page(self, items, path_and_query):
        size = self.query.get("maxresults")
        default = self.setting("page_size")
        try:
            size = int(size) if size else default
        except ValueError:
            raise kv_error(400, "BadParameter", "maxresults must be an integer") from None
        if not 1 <= size <= 25:
            raise kv_error(400, "BadParameter", "invalid maxresults: the value must be between 1 and 25")
        start = 0
        token = self.query.get("$skiptoken")
        if token:
            try:
                start = int(json.loads(b64url_decode(token))["offset"])
            except (ValueError, KeyError, TypeError):
                raise kv_error(400, "BadParameter", "invalid $skiptoken") from None
        chunk = items[start : start + size]
        next_link = None
        if start + size < len(items):
            skip = b64url(json.dumps({"offset": start + size}).encode())
            query = urlencode({"api-version": self.query.get("api-version"), "$skiptoken": skip, "maxresults": size})
            next_link = f"{self.base}/{path_and_query}?{query}"
        return 200, {"value": chunk, "nextLink": next_link}, {}

    def latest(self, versions):
        return versions[-1] if versions else None

    def secrets(self, method, principal, rest, body):
        base = self.base
        st = self.state
        if not rest:
            if method != "GET":
                raise kv_error(405, "BadParameter", "method not allowed")
            if principal["read"] != "all":
                raise self.forbid(principal, "secrets/readMetadata/action", "secrets", None)
            st.count("secret_lists")
            with st.lock:
                items = [secret_bundle(base, n, self.latest(vs), with_value=False, with_version=False) for n, vs in sorted(st.data["secrets"].items()) if vs]
            return self.page(items, "secrets")
        name = rest[0]
        self.check_name(name)
        version = rest[1] if len(rest) > 1 else ""
        if len(rest) > 2:
            raise kv_error(404, "NotFound", "no such path")
        if method == "GET" and version == "versions":
            if not self.may_read(principal, name):
                raise self.forbid(principal, "secrets/readMetadata/action", "secrets", name)
            with st.lock:
                vs = st.data["secrets"].get(name)
                if not vs:
                    raise self.secret_not_found(name)
                items = [secret_bundle(base, name, v, with_value=False) for v in vs]
            return self.page(items, f"secrets/{quote(name)}/versions")
        if method == "GET":
            st.count("secret_reads", name)
            if not self.may_read(principal, name):
                raise self.forbid(principal, "secrets/getSecret/action", "secrets", name)
            with st.lock:
                v = self.find_version(st.data["secrets"].get(name), version)
                if v is None:
                    if name in st.data["deleted_secrets"] and not version:
                        raise kv_error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")
                    raise self.secret_not_found(name + (f"/{version}" if version else ""))
                if not v["enabled"]:
                    raise kv_error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
                return 200, secret_bundle(base, name, v), {}
        if not principal["write"]:
            action = {"PUT": "setSecret", "PATCH": "setSecret", "DELETE": "delete"}.get(method, "write")
            raise self.forbid(principal, f"secrets/{action}/action", "secrets", name)
        if method == "PUT" and not version:
            req = self.json_body(body)
            with st.lock:
                if name in st.data["deleted_secrets"]:
                    raise kv_error(409, "Conflict", f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.", "ObjectIsDeletedButRecoverable")
                v = self.put_secret(name, req)
                return 200, secret_bundle(base, name, v), {}
        if method == "PATCH":
            req = self.json_body(body)
            with st.lock:
                v = self.find_version(st.data["secrets"].get(name), version)
                if v is None:
                    raise self.secret_not_found(name)
                self.apply_properties(v, req)
                st.save()
                return 200, secret_bundle(base, name, v, with_value=False), {}
        if method == "DELETE" and not version:
            with st.lock:
                vs = st.data["secrets"].pop(name, None)
                if not vs:
                    raise self.secret_not_found(name)
                t = now()
                st.data["deleted_secrets"][name] = {"versions": vs, "deletedDate": t, "scheduledPurgeDate": t + RECOVERABLE_DAYS * 86400}
                st.save()
                return 200, self.deleted_bundle(name), {}
        raise kv_error(405, "BadParameter", "method not allowed")

    def secret_not_found(self, what):
        return kv_error(404, "SecretNotFound", f"A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")

    def find_version(self, versions, version):
        if not versions:
            return None
        if not version:
            return versions[-1]
        for v in versions:
            if v["version"] == version:
                return v
        return None

    def apply_properties(self, v, req):
        attributes = req.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise kv_error(400, "BadParameter", "attributes must be an object")
        if "enabled" in attributes:
            v["enabled"] = bool(attributes["enabled"])
        for field in ("exp", "nbf"):
            if field in attributes:
                v[field] = None if attributes[field] is None else int(attributes[field])
        if "contentType" in req:
            v["contentType"] = req["contentType"]
        if "tags" in req:
            tags = req["tags"] or {}
            if not isinstance(tags, dict) or len(tags) > 15 or not all(isinstance(k, str) and isinstance(x, str) for k, x in tags.items()):
                raise kv_error(400, "BadParameter", "tags are at most 15 string pairs")
            v["tags"] = tags
        v["updated"] = now()

    def put_secret(self, name, req, managed=False):
        """Adds a version (caller holds the lock)."""
        value = req.get("value")
        if not isinstance(value, str):
            raise kv_error(400, "BadParameter", "Property value is required and must be a string.")
        if len(value.encode()) > MAX_SECRET_VALUE:
            raise kv_error(400, "BadParameter", f"The secret value is larger than {MAX_SECRET_VALUE} bytes.")
        st = self.state
        if name not in st.data["secrets"] and len(st.data["secrets"]) >= MAX_OBJECTS:
            raise kv_error(429, "Throttled", "the test server holds at most 10000 secrets")
        t = now()
        v = {"version": new_version(), "value": value, "enabled": True, "created": t, "updated": t, "contentType": None, "tags": {}, "managed": managed, "exp": None, "nbf": None}
        self.apply_properties(v, {k: req[k] for k in ("attributes", "contentType", "tags") if k in req})
        vs = st.data["secrets"].setdefault(name, [])
        vs.append(v)
        del vs[:-MAX_VERSIONS]
        st.save()
        return v

    def deleted_bundle(self, name):
        d = self.state.data["deleted_secrets"][name]
        bundle = secret_bundle(self.base, name, d["versions"][-1], with_value=False)
        bundle.update({"recoveryId": f"{self.base}/deletedsecrets/{name}", "deletedDate": d["deletedDate"], "scheduledPurgeDate": d["scheduledPurgeDate"]})
        return bundle

    def deleted_secrets(self, method, principal, rest):
        st = self.state
        if not rest:
            if principal["read"] != "all":
                raise self.forbid(principal, "secrets/readMetadata/action", "secrets", None)
            with st.lock:
                items = [self.deleted_bundle(n) for n in sorted(st.data["deleted_secrets"])]
            return self.page(items, "deletedsecrets")
        name = rest[0]
        self.check_name(name)
        with st.lock:
            if name not in st.data["deleted_secrets"]:
                raise kv_error(404, "SecretNotFound", f"Deleted Secret not found: {name}")
            if method == "GET" and len(rest) == 1:
                if not self.may_read(principal, name):
                    raise self.forbid(principal, "secrets/readMetadata/action", "secrets", name)
                return 200, self.deleted_bundle(name), {}
            if not principal["write"]:
                raise self.forbid(principal, "secrets/purge/action", "secrets", name)
            if method == "DELETE" and len(rest) == 1:
                del st.data["deleted_secrets"][name]
                st.save()
                return 204, None, {}
            if method == "POST" and rest[1:] == ["recover"]:
                d = st.data["deleted_secrets"].pop(name)
                st.data["secrets"][name] = d["versions"]
                st.save()
                return 200, secret_bundle(self.base, name, d["versions"][-1], with_value=False), {}
        raise kv_error(405, "BadParameter", "method not allowed")

    def keys_or_certificates(self, method, principal, kind, rest):
        st = self.state
        singular = "key" if kind == "keys" else "certificate"
        if method != "GET":
            if kind == "keys" and method == "POST" and len(rest) == 2 and rest[1] == "create":
                raise kv_error(405, "BadParameter", "create keys through /_admin/keys/{name}")
            raise kv_error(405, "BadParameter", "method not allowed")
        make = (lambda n, v, **kw: key_bundle(self.base, n, v, **kw)) if kind == "keys" else (lambda n, v, **kw: certificate_bundle(self.base, n, v, **kw))
        list_kw = {"with_version": False, ("item" if kind == "keys" else "full"): kind == "keys"}
        if not rest:
            if principal["read"] != "all":
                raise self.forbid(principal, f"{kind}/readMetadata/action", kind, None)
            with st.lock:
                items = [make(n, vs[-1], **list_kw) for n, vs in sorted(st.data[kind].items()) if vs]
            return self.page(items, kind)
        name = rest[0]
        self.check_name(name, singular)
        version = rest[1] if len(rest) > 1 else ""
        not_found = kv_error(404, "KeyNotFound" if kind == "keys" else "CertificateNotFound", f"A {singular} with (name/id) {name}{'/' + version if version and version != 'versions' else ''} was not found in this key vault. If you recently deleted this {singular} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")
        if not self.may_read(principal, name):
            raise self.forbid(principal, f"{kind}/read/action", kind, name)
        with st.lock:
            vs = st.data[kind].get(name)
            if version == "versions":
                if not vs:
                    raise not_found
                items = [make(name, v, with_version=True, **({"item": True} if kind == "keys" else {"full": False})) for v in vs]
                return self.page(items, f"{kind}/{quote(name)}/versions")
            st.count("key_reads" if kind == "keys" else "certificate_reads", name)
            v = self.find_version(vs, version)
            if v is None:
                raise not_found
            if not v["enabled"] and kind == "keys":
                raise kv_error(403, "Forbidden", "Operation get is not allowed on a disabled key.", "KeyDisabled")
            return 200, make(name, v), {}

    # --- admin ---------------------------------------------------------------------------

    def admin(self, method, segs, body):
        auth = self.headers.get("Authorization", "")
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.admin_token}".encode()):
            raise kv_error(401, "Unauthorized", "the admin API needs the admin token (AZURE_KV_ADMIN_TOKEN)")
        st = self.state
        req = self.json_body(body)
        what = segs[0] if segs else ""
        name = segs[1] if len(segs) > 1 else None
        if what == "stats" and method == "GET":
            with st.lock:
                return 200, copy.deepcopy(st.counters), {}
        if what == "reset" and method == "POST":
            # {"state": true} also restores the seed (principals, empty vault, no tokens).
            with st.lock:
                st.reset_counters()
                if req.get("state"):
                    st.data = st.fresh()
                    st.save()
            return 204, None, {}
        if what == "settings" and method in ("GET", "PATCH"):
            with st.lock:
                for k, v in req.items():
                    if k not in st.data["settings"]:
                        raise kv_error(400, "BadParameter", f"unknown setting {k}")
                    st.data["settings"][k] = int(v)
                st.save()
                return 200, dict(st.data["settings"]), {}
        if what == "principals":
            with st.lock:
                principals = st.data["principals"]
                if method == "GET" and name is None:
                    return 200, {"value": [redact(p) for p in principals.values()]}, {}
                if name is None:
                    raise kv_error(400, "BadParameter", "/_admin/principals/{client_id}")
                if method == "PUT":
                    principals[name] = normalize_principal(name, req, st.data["tenant"])
                    if principals[name]["tenant"] not in st.data["tenants"]:
                        st.data["tenants"].append(principals[name]["tenant"])
                    st.save()
                    return 200, redact(principals[name]), {}
                if method == "DELETE":
                    principals.pop(name, None)
                    st.save()
                    return 204, None, {}
        if what == "tokens" and method == "DELETE":
            # Expire every token, or those of one client (?client_id=...), now.
            client = self.query.get("client_id")
            with st.lock:
                for info in st.data["tokens"].values():
                    if client is None or info["client_id"] == client:
                        info["exp"] = min(info["exp"], now())
                st.save()
            return 204, None, {}
        if what == "secrets" and name and method in ("PUT", "PATCH"):
            self.check_name(name)
            with st.lock:
                if method == "PUT":
                    st.data["deleted_secrets"].pop(name, None)
                    v = self.put_secret(name, req)
                else:
                    v = self.find_version(st.data["secrets"].get(name), segs[2] if len(segs) > 2 else "")
                    if v is None:
                        raise self.secret_not_found(name)
                    self.apply_properties(v, req)
                    st.save()
                return 200, secret_bundle(self.base, name, v, with_value=False), {}
        if what == "secrets" and name and method == "DELETE":
            with st.lock:
                st.data["secrets"].pop(name, None)
                st.data["deleted_secrets"].pop(name, None)
                st.save()
            return 204, None, {}
        if what == "keys" and name and method == "PUT":
            self.check_name(name, "key")
            key = make_key(req.get("kty", "RSA"), int(req.get("key_size", 2048)))
            with st.lock:
                v = self.add_object("keys", name, {"jwk": jwk_of(key.public_key()), "tags": req.get("tags") or {}, "enabled": bool(req.get("enabled", True))})
                return 200, key_bundle(self.base, name, v), {}
        if what == "certificates" and name and method == "PUT":
            self.check_name(name, "certificate")
            content_type = req.get("contentType", "application/x-pem-file")
            if content_type not in ("application/x-pem-file", "application/x-pkcs12"):
                raise kv_error(400, "BadParameter", "contentType is application/x-pem-file or application/x-pkcs12")
            subject = str(req.get("subject", name))
            key, cert, der, secret_value = make_certificate(name, subject, content_type)
            tags = req.get("tags") or {}
            t = now()
            policy = {
                "key_props": {"exportable": True, "kty": "RSA", "key_size": 2048, "reuse_key": False},
                "secret_props": {"contentType": content_type},
                "x509_props": {"subject": f"CN={subject}", "sans": {"dns_names": [name + ".mooring.invalid"]}, "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"], "key_usage": ["digitalSignature", "keyEncipherment"], "validity_months": 12, "basic_constraints": {"ca": False}},
                "lifetime_actions": [{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "AutoRenew"}}],
                "issuer": {"name": "Self"},
                "attributes": {"enabled": True, "created": t, "updated": t},
            }
            with st.lock:
                v = self.add_object("certificates", name, {"cer": base64.b64encode(der).decode(), "x5t": b64url(hashlib.sha1(der).digest()), "contentType": content_type, "policy": policy, "tags": tags, "enabled": True})
                version = v["version"]
                self.add_object("keys", name, {"jwk": jwk_of(key.public_key()), "tags": tags, "enabled": True, "managed": True}, version)
                sv = self.put_secret(name, {"value": secret_value, "contentType": content_type, "tags": tags}, managed=True)
                # The three objects share one version, as in the service.
                sv["version"] = version
                st.save()
                return 200, certificate_bundle(self.base, name, v), {}
        raise kv_error(404, "NotFound", f"no admin endpoint {method} /_admin/{'/'.join(segs)}")

    def add_object(self, kind, name, fields, version=None):
        st = self.state
        if name not in st.data[kind] and len(st.data[kind]) >= MAX_OBJECTS:
            raise kv_error(429, "Throttled", f"the test server holds at most {MAX_OBJECTS} {kind}")
        t = now()
        v = {"version": version or new_version(), "created": t, "updated": t, "exp": None, "nbf": None, "managed": False}
        v.update(fields)
        vs = st.data[kind].setdefault(name, [])
        vs.append(v)
        del vs[:-MAX_VERSIONS]
        st.save()
        return v


def redact(p):
    out = dict(p)
    if out.get("secret"):
        out["secret"] = "(set)"
    return out


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, handler, tls):
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the request's own thread, so a slow client stalls nobody.
        if self.tls is not None:
            request.settimeout(30)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="HTTPS port on 127.0.0.1")
    ap.add_argument("--imds-port", type=int, default=0, help="also serve IMDS over plain HTTP here")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--seed", required=True, help="JSON: tenant, tenants, principals (used when no state exists)")
    ap.add_argument("--admin-token-file", required=True)
    ap.add_argument("--identity-header-file", required=True)
    args = ap.parse_args()

    with open(args.seed, encoding="utf-8") as f:
        seed = json.load(f)
    with open(args.admin_token_file, encoding="utf-8") as f:
        admin_token = f.read().strip()
    with open(args.identity_header_file, encoding="utf-8") as f:
        identity_header = f.read().strip()
    os.makedirs(args.state_dir, exist_ok=True)
    state = State(os.path.join(args.state_dir, "state.json"), seed)

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(args.cert, args.key)

    base = f"https://127.0.0.1:{args.port}"
    attrs = {"state": state, "base": base, "admin_token": admin_token, "identity_header": identity_header}
    handler = type("VaultHandler", (Handler,), dict(attrs, imds_only=False))
    servers = [Server(("127.0.0.1", args.port), handler, tls)]
    if args.imds_port:
        imds_handler = type("ImdsHandler", (Handler,), dict(attrs, imds_only=True))
        servers.append(Server(("127.0.0.1", args.imds_port), imds_handler, None))
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    sys.stderr.write(f"azure-kv: serving {base}" + (f" and IMDS on http://127.0.0.1:{args.imds_port}" if args.imds_port else "") + "\n")
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    main()
