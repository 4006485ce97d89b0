//go:build tools

// Package kustomize pins the kustomize command the agent executes to render Kustomize
// sources, so that `go mod tidy` keeps its dependencies and every machine builds the same one.
package kustomize

import (
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
