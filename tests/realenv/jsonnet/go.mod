// Pins go-jsonnet, the Jsonnet implementation Argo CD evaluates directory sources with: its
// `jsonnet` command (the benchmark's baseline) and its testdata (the reference the agent's
// evaluator is compared with), both fetched by tests/realenv/install.
module mooring.dev/realenv/jsonnet

go 1.26.0

require github.com/google/go-jsonnet v0.22.0

require (
	github.com/fatih/color v1.18.0 // indirect
	github.com/mattn/go-colorable v0.1.13 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	golang.org/x/crypto v0.45.0 // indirect
	golang.org/x/sys v0.38.0 // indirect
	sigs.k8s.io/yaml v1.4.0 // indirect
)
