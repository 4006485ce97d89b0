// Command sealvectors seals and opens single values with upstream bitnami sealed-secrets code,
// so that mooring's tests can check its envelope against the real thing in both directions.
//
//	sealvectors seal --cert cert.pem [--scope S] [--namespace N] [--name M]  < value   > base64
//	sealvectors open --key key.pem   [--scope S] [--namespace N] [--name M]  < base64  > value
//
// Everything that matters is upstream's: the certificate parser (kubeseal.ParseKey, which also
// refuses expired certificates), the scope names and OAEP labels (v1alpha1.SealingScope and
// v1alpha1.EncryptionLabel), the envelope (crypto.HybridEncrypt / crypto.HybridDecrypt) and the
// private-key parser (client-go keyutil, as kubeseal --recovery-private-key uses). The base64
// flavour is Go's StdEncoding, as in spec.encryptedData and `kubeseal --raw`; `seal` prints no
// trailing newline, like `kubeseal --raw`.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	ssv1alpha1 "github.com/bitnami-labs/sealed-secrets/pkg/apis/sealedsecrets/v1alpha1"
	"github.com/bitnami-labs/sealed-secrets/pkg/crypto"
	"github.com/bitnami-labs/sealed-secrets/pkg/kubeseal"
	"k8s.io/client-go/util/keyutil"
)

const usage = `usage:
  sealvectors seal --cert cert.pem [--scope strict|namespace-wide|cluster-wide] [--namespace N] [--name M]
      reads the value on stdin, prints it sealed, base64 (StdEncoding), on stdout
  sealvectors open --key key.pem [--key other.pem ...] [--scope ...] [--namespace N] [--name M]
      reads a base64 sealed value on stdin, prints the plaintext on stdout
`

// errUsage marks command-line mistakes (exit status 2, usage printed).
var errUsage = errors.New("usage error")

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "sealvectors: %v\n", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: missing subcommand", errUsage)
	}
	switch args[0] {
	case "seal":
		return seal(args[1:], stdin, stdout)
	case "open":
		return open(args[1:], stdin, stdout)
	default:
		return fmt.Errorf("%w: unknown subcommand %q", errUsage, args[0])
	}
}

// target is the scope and identity a value is bound to, as upstream computes its OAEP label.
type target struct {
	scope     ssv1alpha1.SealingScope
	namespace string
	name      string
}

func (t *target) register(fs *flag.FlagSet) {
	fs.Var(&t.scope, "scope", "strict, namespace-wide or cluster-wide (upstream's SealingScope parser)")
	fs.StringVar(&t.namespace, "namespace", "", "namespace the value is bound to")
	fs.StringVar(&t.name, "name", "", "SealedSecret name the value is bound to")
}

func (t *target) label() []byte {
	return ssv1alpha1.EncryptionLabel(t.namespace, t.name, t.scope)
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	return nil
}

func seal(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlagSet("seal")
	var t target
	t.register(fs)
	certPath := fs.String("cert", "", "PEM certificate to seal with")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *certPath == "" {
		return fmt.Errorf("%w: --cert is required", errUsage)
	}
	certFile, err := os.Open(*certPath)
	if err != nil {
		return fmt.Errorf("failed to open the certificate: %w", err)
	}
	defer certFile.Close()
	publicKey, err := kubeseal.ParseKey(certFile)
	if err != nil {
		return fmt.Errorf("failed to parse the certificate %s: %w", *certPath, err)
	}
	plaintext, err := io.ReadAll(stdin)
	if err != nil {
		return fmt.Errorf("failed to read the value from stdin: %w", err)
	}
	sealed, err := crypto.HybridEncrypt(rand.Reader, publicKey, plaintext, t.label())
	if err != nil {
		return fmt.Errorf("failed to seal the value: %w", err)
	}
	if _, err := io.WriteString(stdout, base64.StdEncoding.EncodeToString(sealed)); err != nil {
		return fmt.Errorf("failed to write the sealed value: %w", err)
	}
	return nil
}

// keyPaths collects repeated --key flags (upstream tries every key it holds).
type keyPaths []string

func (k *keyPaths) String() string     { return strings.Join(*k, ",") }
func (k *keyPaths) Set(v string) error { *k = append(*k, v); return nil }

func open(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlagSet("open")
	var t target
	t.register(fs)
	var paths keyPaths
	fs.Var(&paths, "key", "PEM private key (PKCS#1 or PKCS#8); repeatable")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("%w: --key is required", errUsage)
	}
	privateKeys := map[string]*rsa.PrivateKey{}
	for _, path := range paths {
		privateKey, err := readPrivateKey(path)
		if err != nil {
			return err
		}
		fingerprint, err := crypto.PublicKeyFingerprint(&privateKey.PublicKey)
		if err != nil {
			return fmt.Errorf("failed to fingerprint the key %s: %w", path, err)
		}
		privateKeys[fingerprint] = privateKey
	}
	encoded, err := io.ReadAll(stdin)
	if err != nil {
		return fmt.Errorf("failed to read the sealed value from stdin: %w", err)
	}
	// StdEncoding, as the controller decodes spec.encryptedData (it skips '\r' and '\n').
	sealed, err := base64.StdEncoding.DecodeString(string(encoded))
	if err != nil {
		return fmt.Errorf("failed to decode the sealed value as base64: %w", err)
	}
	plaintext, err := crypto.HybridDecrypt(rand.Reader, privateKeys, sealed, t.label())
	if err != nil {
		return fmt.Errorf("failed to open the value (label %q): %w", t.label(), err)
	}
	if _, err := io.Copy(stdout, bytes.NewReader(plaintext)); err != nil {
		return fmt.Errorf("failed to write the plaintext: %w", err)
	}
	return nil
}

func readPrivateKey(path string) (*rsa.PrivateKey, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read the key: %w", err)
	}
	key, err := keyutil.ParsePrivateKeyPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the key %s: %w", path, err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key %s is a %T, not an RSA key", path, key)
	}
	return rsaKey, nil
}
