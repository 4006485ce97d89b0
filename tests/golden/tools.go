//go:build tools

// Package golden pins the upstream sealed-secrets commands built next to sealvectors (the
// kubeseal CLI and the controller) so that `go mod tidy` keeps their dependencies.
package golden

import (
	_ "github.com/bitnami-labs/sealed-secrets/cmd/controller"
	_ "github.com/bitnami-labs/sealed-secrets/cmd/kubeseal"
)
