# The Azure Key Vault test server in the realenv: sourced by tests/realenv/up (after common.sh,
# and after up's port/start/ready helpers) and by tests/realenv/azure/kvctl.
# shellcheck shell=bash

AZURE_DIR="$REALENV_DIR/azure"
AZURE_STATE="$STATE/azure"

# azure_value NAME [uuid]: a test identifier or credential (not a secret), made once per environment.
azure_value() {
	local file="$AZURE_STATE/$1" kind=${2:-text}
	if [[ ! -f $file ]]; then
		case $kind in
		uuid) python3 -c 'import uuid; print(uuid.uuid4())' >"$file" ;;
		*) python3 -c 'import secrets; print("mooring-" + secrets.token_urlsafe(18))' >"$file" ;;
		esac
	fi
	cat "$file"
}

# The server's certificate, issued by the realenv CA (pki/ca.crt, made by up's make_pki).
azure_pki() {
	local pki="$STATE/pki"
	[[ -f $pki/azure-kv.crt ]] && return 0
	(
		cd "$pki"
		printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
			'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,DNS:localhost' >azure-kv.ext
		openssl req -newkey rsa:2048 -nodes -keyout azure-kv.key -out azure-kv.csr -subj "/CN=azure-kv" 2>/dev/null
		openssl x509 -req -in azure-kv.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out azure-kv.crt -days 30 -extfile azure-kv.ext 2>/dev/null
		chmod 600 azure-kv.key
	) || fail "issuing the Azure test server's certificate failed"
}

# The seed: one tenant, the main principal (reads and writes every secret) and a
# system-assigned managed identity (reads every secret).
azure_seed() {
	mkdir -p "$AZURE_STATE"
	local tenant client secret mi
	tenant=$(azure_value tenant uuid)
	client=$(azure_value client-id uuid)
	secret=$(azure_value client-secret)
	mi=$(azure_value managed-identity-client-id uuid)
	azure_value admin-token >/dev/null
	azure_value identity-header >/dev/null
	cat >"$AZURE_STATE/seed.json" <<EOF
{"tenant": "$tenant",
 "principals": {
  "$client": {"secret": "$secret", "read": "all", "write": true},
  "$mi": {"managed_identity": true, "system_assigned": true, "read": "all"}
 }}
EOF
	chmod 600 "$AZURE_STATE/seed.json"
}

# run.sh: the exact command, so kvctl restarts the server on the same ports with the same state.
azure_write_run() {
	cat >"$AZURE_STATE/run.sh" <<EOF
#!/bin/sh
exec '$CACHE_VENV/bin/python' '$AZURE_DIR/kv_server.py' --port '$1' --imds-port '$2' \\
	--cert '$STATE/pki/azure-kv.crt' --key '$STATE/pki/azure-kv.key' \\
	--state-dir '$AZURE_STATE/data' --seed '$AZURE_STATE/seed.json' \\
	--admin-token-file '$AZURE_STATE/admin-token' --identity-header-file '$AZURE_STATE/identity-header'
EOF
	chmod 700 "$AZURE_STATE/run.sh"
}

# azure_admin PORT METHOD PATH [BODY]: one admin API call; fails on a non-2xx answer.
azure_admin() {
	curl -sf --cacert "$STATE/pki/ca.crt" -X "$2" -H "Authorization: Bearer $(cat "$AZURE_STATE/admin-token")" \
		${4:+-H 'Content-Type: application/json' -d "$4"} "https://127.0.0.1:$1/_admin/$3"
}

# The environment every Azure client of the realenv reads (also written into env.sh).
azure_env_lines() {
	local p=$1 imds=$2
	cat <<EOF
export AZURE_KEYVAULT_URL='https://127.0.0.1:$p'
export AZURE_AUTHORITY_HOST='https://127.0.0.1:$p'
export AZURE_TENANT_ID='$(cat "$AZURE_STATE/tenant")'
export AZURE_CLIENT_ID='$(cat "$AZURE_STATE/client-id")'
export AZURE_CLIENT_SECRET='$(cat "$AZURE_STATE/client-secret")'
export AZURE_KEYVAULT_CA='$STATE/pki/ca.crt'
export AZURE_KV_ADMIN_URL='https://127.0.0.1:$p/_admin'
export AZURE_KV_ADMIN_TOKEN='$(cat "$AZURE_STATE/admin-token")'
export AZURE_KV_STATE='$AZURE_STATE'
export AZURE_KV_CTL='$AZURE_DIR/kvctl'
export AZURE_IMDS_ENDPOINT='http://127.0.0.1:$imds'
export AZURE_IMDS_TLS_ENDPOINT='https://127.0.0.1:$p'
export AZURE_APP_SERVICE_IDENTITY_ENDPOINT='https://127.0.0.1:$p/msi/token'
export AZURE_APP_SERVICE_IDENTITY_HEADER='$(cat "$AZURE_STATE/identity-header")'
export AZURE_MANAGED_IDENTITY_CLIENT_ID='$(cat "$AZURE_STATE/managed-identity-client-id")'
EOF
}

# Stops the server by its recorded pid (it leads its own session: the whole group).
azure_stop() {
	pid_alive azure-kv || return 0
	local pid
	pid=$(cat "$STATE/pids/azure-kv")
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null || true
	rm -f "$STATE/pids/azure-kv"
}

# Microsoft's Python and Go clients against the fresh server; `up` fails naming the scenario.
# The vault is reset to the seed before and after, so tests start from an empty vault.
azure_conformance() {
	local p=$1 imds=$2 work="$AZURE_STATE/conformance" log="$STATE/logs/azure-conformance.log"
	local go_bin="$CACHE_BIN/azure-conformance-$AZURE_CONFORMANCE_VERSION"
	rm -rf "$work" && mkdir -p "$work"
	azure_admin "$p" POST reset '{"state": true}' >/dev/null || fail "resetting the Azure test server failed"
	local started=$SECONDS status=0
	(
		# shellcheck disable=SC1090
		source <(azure_env_lines "$p" "$imds")
		export AZURE_CONFORMANCE_DIR="$work"
		REQUESTS_CA_BUNDLE="$AZURE_KEYVAULT_CA" "$CACHE_VENV/bin/python" "$AZURE_DIR/conformance.py" \
			"$work/fixtures.json" || exit 1
		SSL_CERT_FILE="$AZURE_KEYVAULT_CA" "$go_bin" "$work/fixtures.json" || exit 1
	) >"$log" 2>&1 || status=$?
	if ((status != 0)); then
		tail -n 20 "$log" >&2
		# Stopped, so that the next `up` starts it again and repeats the conformance.
		azure_stop
		fail "the Azure test server disagrees with Microsoft's clients: $(grep -m1 '^FAIL' "$log" || echo 'see target/realenv/logs/azure-conformance.log')"
	fi
	azure_admin "$p" POST reset '{"state": true}' >/dev/null || fail "resetting the Azure test server failed"
	say "Azure conformance: $(grep -c '^ok ' "$log") scenarios agree with Microsoft's Python and Go clients ($((SECONDS - started))s)"
}
