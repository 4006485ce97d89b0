//go:build tools

// Keeps go-jsonnet's command in this module's requirements.
package tools

import _ "github.com/google/go-jsonnet/cmd/jsonnet"
