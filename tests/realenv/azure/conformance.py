#!/usr/bin/env python3
"""Proves the realenv Azure Key Vault test server with Microsoft's Python clients.

Runs in the realenv venv (azure-keyvault-secrets/-certificates/-keys, azure-identity) against
the server `up` started, reading its coordinates from the environment env.sh exports:
  AZURE_KEYVAULT_URL AZURE_AUTHORITY_HOST AZURE_TENANT_ID AZURE_CLIENT_ID AZURE_CLIENT_SECRET
  AZURE_KEYVAULT_CA AZURE_KV_ADMIN_URL AZURE_KV_ADMIN_TOKEN AZURE_IMDS_ENDPOINT
  AZURE_APP_SERVICE_IDENTITY_ENDPOINT AZURE_APP_SERVICE_IDENTITY_HEADER
and REQUESTS_CA_BUNDLE (the CA) for the SDK's transport.

It seeds the principals and objects it needs (admin API and the SDK's own writes), runs every
scenario, and writes the fixtures the Go conformance reads to the path given as argv[1].
It prints `ok <scenario>` per scenario and stops at the first failure with
`FAIL <scenario>: <why>` and exit code 1.
"""

import base64
import json
import logging
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential, WorkloadIdentityCredential
from azure.keyvault.certificates import CertificateClient
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ENV = os.environ
VAULT = ENV["AZURE_KEYVAULT_URL"]
AUTHORITY = ENV["AZURE_AUTHORITY_HOST"]
TENANT = ENV["AZURE_TENANT_ID"]
ADMIN = ENV["AZURE_KV_ADMIN_URL"]
ADMIN_TOKEN = ENV["AZURE_KV_ADMIN_TOKEN"]
SCOPE = "https://vault.azure.net/.default"
TLS = ssl.create_default_context(cafile=ENV["AZURE_KEYVAULT_CA"])
ISSUER = "https://issuer.conformance.mooring.invalid"
SUBJECT = "system:serviceaccount:conformance:reader"
WORK = ENV.get("AZURE_CONFORMANCE_DIR", "/tmp")

# Test principals: client id -> (secret, admin body). Secrets are test credentials.
PRINCIPALS = {
    "conf-reader-some": {"secret": "conf-some-secret", "read": ["conf-allowed"]},
    "conf-nobody": {"secret": "conf-nobody-secret", "read": "none"},
    "conf-short": {"secret": "conf-short-secret", "read": "all", "token_lifetime": 2},
    "conf-mi-user": {"managed_identity": True, "read": "all", "resource_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/mooring-test/providers/Microsoft.ManagedIdentity/userAssignedIdentities/conf-mi-user"},
}
PAGED = [f"conf-page-{i:02d}" for i in range(60)]


class Failed(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Failed(why)


def http(method, url, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, context=TLS, timeout=30) as r:
            raw = r.read()
            return r.status, dict(r.headers), (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, dict(e.headers), (json.loads(raw) if raw else None)


def admin(method, path, body=None):
    status, _, payload = http(method, f"{ADMIN}/{path}", body, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    if status >= 300:
        raise Failed(f"admin {method} {path}: {status} {payload}")
    return payload


def stats():
    return admin("GET", "stats")


def secret_credential(client_id=None, secret=None):
    return ClientSecretCredential(
        TENANT,
        client_id or ENV["AZURE_CLIENT_ID"],
        secret or ENV["AZURE_CLIENT_SECRET"],
        authority=AUTHORITY,
        disable_instance_discovery=True,
    )


def secrets_client(credential):
    # 127.0.0.1 is not a *.vault.azure.net host: the challenge's resource cannot verify.
    return SecretClient(VAULT, credential, verify_challenge_resource=False, retry_total=0)


def error_body(e):
    return json.loads(e.response.text())


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign_jwt(key, claims, kid="conformance"):
    def enc(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    signed = enc({"alg": "RS256", "typ": "JWT", "kid": kid}) + "." + enc(claims)
    sig = key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signed + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def sa_token(key, subject=SUBJECT, issuer=ISSUER, audience="api://AzureADTokenExchange"):
    t = int(time.time())
    return sign_jwt(key, {"iss": issuer, "sub": subject, "aud": [audience], "iat": t, "nbf": t, "exp": t + 3600})


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class Conformance:
    def __init__(self, fixtures_path):
        self.fixtures_path = fixtures_path
        self.issuer_key = rsa_key()
        self.main = secrets_client(secret_credential())

    # --- setup -------------------------------------------------------------------------------

    def setup(self):
        pem = self.issuer_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        for cid, body in PRINCIPALS.items():
            admin("PUT", f"principals/{cid}", body)
        admin("PUT", "principals/conf-wi", {"read": "all", "federated": [{"issuer": ISSUER, "subject": SUBJECT, "pem": pem}]})
        c = self.main
        self.v1 = c.set_secret("conf-plain", "one").properties.version
        self.v2 = c.set_secret("conf-plain", "two").properties.version
        c.set_secret("conf-tagged", "tagged-value", content_type="text/plain", tags={"env": "test", "team": "mooring"})
        c.set_secret("conf-disabled", "hidden")
        c.update_secret_properties("conf-disabled", enabled=False)
        c.set_secret("conf-allowed", "allowed-value")
        for name in PAGED:
            admin("PUT", f"secrets/{name}", {"value": "paged-" + name, "tags": {"group": "paged"}})
        admin("PUT", "certificates/conf-cert", {"subject": "conf-cert.mooring.invalid", "tags": {"kind": "cert"}})
        admin("PUT", "keys/conf-rsa", {"kty": "RSA", "key_size": 2048})
        admin("PUT", "keys/conf-rsa", {"kty": "RSA", "key_size": 2048})
        admin("PUT", "keys/conf-ec", {"kty": "EC"})
        self.wi_token_file = write(os.path.join(WORK, "conf-wi.token"), sa_token(self.issuer_key))
        self.wi_wrong_subject_file = write(os.path.join(WORK, "conf-wi-wrong-subject.token"), sa_token(self.issuer_key, subject="system:serviceaccount:conformance:other"))
        self.wi_bad_signature_file = write(os.path.join(WORK, "conf-wi-bad-signature.token"), sa_token(rsa_key()))

    def fixtures(self):
        return {
            "v1": self.v1,
            "v2": self.v2,
            "paged": PAGED,
            "principals": {cid: body.get("secret", "") for cid, body in PRINCIPALS.items()},
            "wi_client_id": "conf-wi",
            "wi_token_file": self.wi_token_file,
            "wi_wrong_subject_file": self.wi_wrong_subject_file,
            "wi_bad_signature_file": self.wi_bad_signature_file,
            "mi_client_id": "conf-mi-user",
        }

    # --- scenarios ---------------------------------------------------------------------------

    def challenge(self):
        status, headers, body = http("GET", f"{VAULT}/secrets/conf-plain/?api-version=2026-04-01")
        check(status == 401, f"no token: status {status}")
        want = f'Bearer authorization="{AUTHORITY}/{TENANT}", resource="https://vault.azure.net"'
        check(headers.get("WWW-Authenticate") == want, f"challenge {headers.get('WWW-Authenticate')!r}")
        check(body["error"]["code"] == "Unauthorized", f"body {body}")
        status, _, _ = http("GET", f"{VAULT}/secrets/conf-plain/?api-version=2026-04-01", headers={"Authorization": "Bearer not-a-token"})
        check(status == 401, f"bad token: status {status}")

    def get_latest(self):
        s = self.main.get_secret("conf-plain")
        check(s.value == "two", f"latest value {s.value!r}")
        check(s.properties.version == self.v2 and s.id.endswith(f"/secrets/conf-plain/{self.v2}"), f"latest id {s.id}")
        check(s.properties.enabled is True and s.properties.created_on is not None, "attributes")

    def get_version(self):
        s = self.main.get_secret("conf-plain", self.v1)
        check(s.value == "one" and s.properties.version == self.v1, f"version value {s.value!r}")
        versions = sorted(p.version for p in self.main.list_properties_of_secret_versions("conf-plain"))
        check(versions == sorted([self.v1, self.v2]), f"versions {versions}")

    def trailing_slash(self):
        token = secret_credential().get_token(SCOPE).token
        auth = {"Authorization": f"Bearer {token}"}
        results = []
        for path in ("conf-plain", "conf-plain/", f"conf-plain/{self.v1}", f"conf-plain/{self.v1}/"):
            status, _, body = http("GET", f"{VAULT}/secrets/{path}?api-version=7.4", headers=auth)
            results.append((path, status, body and body.get("value")))
        check([r[1:] for r in results] == [(200, "two"), (200, "two"), (200, "one"), (200, "one")], f"{results}")

    def disabled(self):
        try:
            self.main.get_secret("conf-disabled")
            raise Failed("a disabled secret was returned")
        except HttpResponseError as e:
            body = error_body(e)
            check(e.status_code == 403, f"status {e.status_code}")
            check(body["error"]["code"] == "Forbidden" and body["error"]["innererror"]["code"] == "SecretDisabled", f"body {body}")
        listed = {p.name: p.enabled for p in self.main.list_properties_of_secrets()}
        check(listed.get("conf-disabled") is False, "a disabled secret is listed with enabled=false")

    def missing(self):
        try:
            self.main.get_secret("conf-missing")
            raise Failed("a missing secret was returned")
        except ResourceNotFoundError as e:
            check(e.status_code == 404 and error_body(e)["error"]["code"] == "SecretNotFound", f"{e.status_code} {error_body(e)}")

    def no_access(self):
        nobody = secrets_client(secret_credential("conf-nobody", PRINCIPALS["conf-nobody"]["secret"]))
        try:
            nobody.get_secret("conf-plain")
            raise Failed("a principal without access read a secret")
        except HttpResponseError as e:
            body = error_body(e)
            check(e.status_code == 403 and body["error"]["code"] == "Forbidden", f"{e.status_code} {body}")
            check(body["error"]["innererror"]["code"] == "ForbiddenByRbac", f"{body}")
        some = secrets_client(secret_credential("conf-reader-some", PRINCIPALS["conf-reader-some"]["secret"]))
        check(some.get_secret("conf-allowed").value == "allowed-value", "the allowed secret")
        try:
            some.get_secret("conf-plain")
            raise Failed("a name-scoped principal read another secret")
        except HttpResponseError as e:
            check(e.status_code == 403, f"status {e.status_code}")

    def paging(self):
        pages = list(self.main.list_properties_of_secrets(max_page_size=25).by_page())
        names = [p.name for page in pages for p in page]
        check(len(pages) >= 3, f"{len(pages)} pages for {len(names)} secrets")
        check(all(n in names for n in PAGED), "every paged secret is listed")
        check(len(names) == len(set(names)), "no secret twice")
        default_pages = list(self.main.list_properties_of_secrets().by_page())
        check(sum(len(list(p)) for p in default_pages) == len(names), "the default page size lists the same")
        item = next(p for p in self.main.list_properties_of_secrets() if p.name == "conf-page-07")
        check(item.version is None and item.tags == {"group": "paged"}, f"list item {item.id} {item.tags}")

    def tags(self):
        s = self.main.get_secret("conf-tagged")
        check(s.properties.tags == {"env": "test", "team": "mooring"}, f"tags {s.properties.tags}")
        check(s.properties.content_type == "text/plain", f"contentType {s.properties.content_type}")
        s2 = self.main.set_secret("conf-retagged", "v1", tags={"env": "test"})
        s2 = self.main.set_secret("conf-retagged", "v2", tags={"env": "prod"})
        check(self.main.get_secret("conf-retagged").properties.tags == {"env": "prod"}, "tags of a new version")
        check(self.main.get_secret("conf-retagged", s2.properties.version).value == "v2", "a new version")

    def certificate(self):
        cc = CertificateClient(VAULT, secret_credential(), verify_challenge_resource=False, retry_total=0)
        cert = cc.get_certificate("conf-cert")
        parsed = x509.load_der_x509_certificate(bytes(cert.cer))
        cn = parsed.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
        check(cn == "conf-cert.mooring.invalid", f"CN {cn}")
        check(cert.properties.tags == {"kind": "cert"}, f"tags {cert.properties.tags}")
        check(cert.policy is not None and cert.policy.content_type == "application/x-pem-file", "policy")
        same = cc.get_certificate_version("conf-cert", cert.properties.version)
        check(bytes(same.cer) == bytes(cert.cer), "by version")
        check(cert.key_id.endswith(f"/keys/conf-cert/{cert.properties.version}"), f"kid {cert.key_id}")
        check(cert.secret_id.endswith(f"/secrets/conf-cert/{cert.properties.version}"), f"sid {cert.secret_id}")
        backing = self.main.get_secret("conf-cert")
        check(backing.properties.managed is True and backing.properties.content_type == "application/x-pem-file", "the backing secret is managed")
        check("BEGIN CERTIFICATE" in backing.value and "PRIVATE KEY" in backing.value, "the backing secret holds the PEM")
        check(backing.properties.key_id and backing.properties.key_id.endswith(f"/keys/conf-cert/{cert.properties.version}"), "the backing secret's kid")
        try:
            cc.get_certificate("conf-no-cert")
            raise Failed("a missing certificate was returned")
        except ResourceNotFoundError as e:
            check(error_body(e)["error"]["code"] == "CertificateNotFound", f"{error_body(e)}")

    def keys(self):
        kc = KeyClient(VAULT, secret_credential(), verify_challenge_resource=False, retry_total=0)
        k = kc.get_key("conf-rsa")
        check(k.key_type == "RSA" and k.key.n and k.key.e, f"kty {k.key_type}")
        versions = [p.version for p in kc.list_properties_of_key_versions("conf-rsa")]
        check(len(versions) == 2 and k.properties.version in versions, f"versions {versions}")
        older = next(v for v in versions if v != k.properties.version)
        check(kc.get_key("conf-rsa", older).properties.version == older, "a key by version")
        e = kc.get_key("conf-ec")
        check(e.key_type == "EC" and e.key.crv == "P-256" and e.key.x and e.key.y, f"kty {e.key_type}")
        check(not getattr(e.key, "d", None), "no private part")
        cert_key = kc.get_key("conf-cert")
        check(cert_key.properties.managed is True, "a certificate's key is managed")

    def wrong_secret(self):
        try:
            secret_credential(ENV["AZURE_CLIENT_ID"], "wrong").get_token(SCOPE)
            raise Failed("a wrong secret got a token")
        except ClientAuthenticationError as e:
            check("AADSTS7000215" in str(e), f"{e}")
        try:
            secret_credential("conf-unknown-app", "x").get_token(SCOPE)
            raise Failed("an unknown client got a token")
        except ClientAuthenticationError as e:
            check("AADSTS700016" in str(e), f"{e}")

    def workload_identity(self):
        def cred(path):
            return WorkloadIdentityCredential(tenant_id=TENANT, client_id="conf-wi", token_file_path=path, authority=AUTHORITY)

        client = secrets_client(cred(self.wi_token_file))
        check(client.get_secret("conf-plain").value == "two", "read with a federated assertion")
        for path, code in ((self.wi_wrong_subject_file, "AADSTS70021"), (self.wi_bad_signature_file, "AADSTS50013")):
            try:
                cred(path).get_token(SCOPE)
                raise Failed(f"{os.path.basename(path)} got a token")
            except ClientAuthenticationError as e:
                check(code in str(e), f"{code} expected: {e}")

    def with_env(self, env, fn):
        names = ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT")
        saved = {n: os.environ.pop(n, None) for n in names}
        os.environ.update(env)
        try:
            return fn()
        finally:
            for n in names:
                os.environ.pop(n, None)
                if saved[n] is not None:
                    os.environ[n] = saved[n]

    def managed_identity_imds(self):
        def run():
            before = stats()["tokens_issued"].get("conf-mi-user", 0)
            user = secrets_client(ManagedIdentityCredential(client_id="conf-mi-user"))
            check(user.get_secret("conf-plain").value == "two", "user-assigned by client_id")
            check(stats()["tokens_issued"].get("conf-mi-user", 0) == before + 1, "one IMDS token")
            by_resource = secrets_client(ManagedIdentityCredential(identity_config={"resource_id": PRINCIPALS["conf-mi-user"]["resource_id"]}))
            check(by_resource.get_secret("conf-allowed").value == "allowed-value", "user-assigned by msi_res_id")
            system = secrets_client(ManagedIdentityCredential())
            check(system.get_secret("conf-plain").value == "two", "system-assigned")
            try:
                ManagedIdentityCredential(client_id="conf-not-assigned").get_token(SCOPE)
                raise Failed("an unassigned identity got a token")
            except (ClientAuthenticationError, Exception) as e:  # CredentialUnavailableError
                check("Identity not found" in str(e) or "No identity" in str(e), f"{e}")

        self.with_env({"AZURE_POD_IDENTITY_AUTHORITY_HOST": ENV["AZURE_IMDS_ENDPOINT"]}, run)

    def managed_identity_app_service(self):
        def run():
            user = secrets_client(ManagedIdentityCredential(client_id="conf-mi-user"))
            check(user.get_secret("conf-plain").value == "two", "user-assigned (App Service)")

        self.with_env({"IDENTITY_ENDPOINT": ENV["AZURE_APP_SERVICE_IDENTITY_ENDPOINT"], "IDENTITY_HEADER": ENV["AZURE_APP_SERVICE_IDENTITY_HEADER"]}, run)

        def wrong_header():
            try:
                ManagedIdentityCredential(client_id="conf-mi-user").get_token(SCOPE)
                raise Failed("a wrong X-IDENTITY-HEADER got a token")
            except Failed:
                raise
            except Exception:  # noqa: BLE001 - any refusal will do
                pass

        self.with_env({"IDENTITY_ENDPOINT": ENV["AZURE_APP_SERVICE_IDENTITY_ENDPOINT"], "IDENTITY_HEADER": "wrong"}, wrong_header)

    def token_expiry(self):
        cred = secret_credential("conf-short", PRINCIPALS["conf-short"]["secret"])
        client = secrets_client(cred)
        before = stats()["tokens_issued"].get("conf-short", 0)
        check(client.get_secret("conf-plain").value == "two", "first read")
        first = cred.get_token(SCOPE)
        check(first.expires_on - time.time() <= 3, f"the token lives {first.expires_on - time.time():.0f}s")
        # The lifetime is the thing under test: wait it out (bounded), then the old token is dead.
        time.sleep(max(0.0, first.expires_on - time.time()) + 1.1)
        status, headers, body = http("GET", f"{VAULT}/secrets/conf-plain/?api-version=7.4", headers={"Authorization": f"Bearer {first.token}"})
        check(status == 401 and "WWW-Authenticate" in headers, f"an expired token: {status}")
        check(client.get_secret("conf-plain").value == "two", "read after expiry")
        issued = stats()["tokens_issued"].get("conf-short", 0) - before
        check(issued >= 2, f"the credential renewed its token ({issued} issued)")

    def counters(self):
        before = stats()["secret_reads"].get("conf-allowed", 0)
        self.main.get_secret("conf-allowed")
        self.main.get_secret("conf-allowed")
        check(stats()["secret_reads"].get("conf-allowed", 0) == before + 2, "reads are counted per secret")
        check(stats()["tokens_issued"].get(ENV["AZURE_CLIENT_ID"], 0) >= 1, "tokens are counted per principal")

    def delete_and_recover(self):
        c = self.main
        c.set_secret("conf-deleted", "gone")
        c.begin_delete_secret("conf-deleted").wait()
        try:
            c.get_secret("conf-deleted")
            raise Failed("a deleted secret was returned")
        except ResourceNotFoundError:
            pass
        check(c.get_deleted_secret("conf-deleted").name == "conf-deleted", "the deleted secret is recoverable")
        c.begin_recover_deleted_secret("conf-deleted").wait()
        check(c.get_secret("conf-deleted").value == "gone", "recovered")
        c.begin_delete_secret("conf-deleted").wait()
        c.purge_deleted_secret("conf-deleted")

    def run(self):
        scenarios = [
            ("setup", self.setup),
            ("challenge", self.challenge),
            ("get-latest", self.get_latest),
            ("get-version", self.get_version),
            ("trailing-slash", self.trailing_slash),
            ("disabled", self.disabled),
            ("missing", self.missing),
            ("no-access", self.no_access),
            ("paging", self.paging),
            ("tags", self.tags),
            ("certificate", self.certificate),
            ("keys", self.keys),
            ("wrong-secret", self.wrong_secret),
            ("workload-identity", self.workload_identity),
            ("managed-identity-imds", self.managed_identity_imds),
            ("managed-identity-app-service", self.managed_identity_app_service),
            ("token-expiry", self.token_expiry),
            ("counters", self.counters),
            ("delete-recover", self.delete_and_recover),
        ]
        for name, fn in scenarios:
            started = time.monotonic()
            try:
                fn()
            except Failed as e:
                print(f"FAIL python/{name}: {e}", flush=True)
                return 1
            except Exception as e:  # noqa: BLE001 - the client disagreed: name the scenario
                print(f"FAIL python/{name}: {type(e).__name__}: {e}", flush=True)
                return 1
            print(f"ok python/{name} ({time.monotonic() - started:.2f}s)", flush=True)
        write(self.fixtures_path, json.dumps(self.fixtures()))
        return 0


if __name__ == "__main__":
    # azure-identity logs every refused token request at WARNING; the negative scenarios cause them.
    logging.getLogger("azure").setLevel(logging.CRITICAL)
    sys.exit(Conformance(sys.argv[1]).run())
