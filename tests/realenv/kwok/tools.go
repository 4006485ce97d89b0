//go:build tools

// Package kwok pins the kwok command (tests/realenv/up starts it next to the control plane), so
// that `go mod tidy` keeps its dependencies and every machine builds the same one.
package kwok

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
