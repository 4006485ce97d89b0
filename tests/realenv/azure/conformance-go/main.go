// Command azure-conformance proves the realenv Azure Key Vault test server with Microsoft's Go
// clients: azsecrets (the client ESO uses with useAzureSDK) and azidentity.
//
// It reads the server's coordinates from the environment env.sh exports (AZURE_KEYVAULT_URL,
// AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_KV_ADMIN_URL,
// AZURE_KV_ADMIN_TOKEN, AZURE_APP_SERVICE_IDENTITY_ENDPOINT, AZURE_APP_SERVICE_IDENTITY_HEADER)
// and trusts the realenv CA through SSL_CERT_FILE. The Python conformance seeds the data and
// writes the fixtures file named by the only argument.
//
// It prints "ok go/<scenario>" per scenario and stops at the first failure with
// "FAIL go/<scenario>: <why>" and exit code 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

const scope = "https://vault.azure.net/.default"

type fixtures struct {
	V1                  string            `json:"v1"`
	V2                  string            `json:"v2"`
	Paged               []string          `json:"paged"`
	Principals          map[string]string `json:"principals"`
	WIClientID          string            `json:"wi_client_id"`
	WITokenFile         string            `json:"wi_token_file"`
	WIWrongSubjectFile  string            `json:"wi_wrong_subject_file"`
	WIBadSignatureFile  string            `json:"wi_bad_signature_file"`
	ManagedIdentityUser string            `json:"mi_client_id"`
}

type run struct {
	ctx    context.Context
	fx     fixtures
	vault  string
	tenant string
	main   *azsecrets.Client
}

func env(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fmt.Printf("FAIL go/setup: %s is not set\n", name)
		os.Exit(1)
	}
	return v
}

// The authority host comes from AZURE_AUTHORITY_HOST; instance discovery would ask the public
// cloud, so it is off.
func secretCredential(clientID, secret string) (*azidentity.ClientSecretCredential, error) {
	return azidentity.NewClientSecretCredential(os.Getenv("AZURE_TENANT_ID"), clientID, secret,
		&azidentity.ClientSecretCredentialOptions{DisableInstanceDiscovery: true})
}

// 127.0.0.1 is not a *.vault.azure.net host, so the challenge's resource cannot verify.
func (r *run) client(cred azcore.TokenCredential) (*azsecrets.Client, error) {
	return azsecrets.NewClient(r.vault, cred, &azsecrets.ClientOptions{
		DisableChallengeResourceVerification: true,
		ClientOptions:                        azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}},
	})
}

func (r *run) clientFor(clientID, secret string) (*azsecrets.Client, error) {
	cred, err := secretCredential(clientID, secret)
	if err != nil {
		return nil, err
	}
	return r.client(cred)
}

func (r *run) value(c *azsecrets.Client, name, version string) (string, error) {
	resp, err := c.GetSecret(r.ctx, name, version, nil)
	if err != nil {
		return "", err
	}
	if resp.Value == nil {
		return "", errors.New("no value")
	}
	return *resp.Value, nil
}

func expectValue(r *run, c *azsecrets.Client, name, version, want string) error {
	got, err := r.value(c, name, version)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s/%s = %q, want %q", name, version, got, want)
	}
	return nil
}

// expectError checks a failed GET: its status, error code and (if given) innererror code.
func expectError(err error, status int, code, inner string) error {
	if err == nil {
		return fmt.Errorf("succeeded; want %d %s", status, code)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("not a ResponseError: %v", err)
	}
	if re.StatusCode != status || re.ErrorCode != code {
		return fmt.Errorf("got %d %q, want %d %q", re.StatusCode, re.ErrorCode, status, code)
	}
	if inner != "" {
		body, rerr := io.ReadAll(re.RawResponse.Body)
		if rerr != nil {
			return rerr
		}
		var e struct {
			Error struct {
				InnerError struct {
					Code string `json:"code"`
				} `json:"innererror"`
			} `json:"error"`
		}
		if jerr := json.Unmarshal(body, &e); jerr != nil || e.Error.InnerError.Code != inner {
			return fmt.Errorf("innererror %q, want %q (body %s)", e.Error.InnerError.Code, inner, body)
		}
	}
	return nil
}

func (r *run) admin(method, path string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(r.ctx, method, os.Getenv("AZURE_KV_ADMIN_URL")+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv("AZURE_KV_ADMIN_TOKEN"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

func (r *run) issued(clientID string) (int, error) {
	s, err := r.admin(http.MethodGet, "stats")
	if err != nil {
		return 0, err
	}
	m, _ := s["tokens_issued"].(map[string]any)
	n, _ := m[clientID].(float64)
	return int(n), nil
}

func (r *run) getLatest() error {
	resp, err := r.main.GetSecret(r.ctx, "conf-plain", "", nil)
	if err != nil {
		return err
	}
	if *resp.Value != "two" || resp.ID.Version() != r.fx.V2 || resp.ID.Name() != "conf-plain" {
		return fmt.Errorf("latest: %q %s", *resp.Value, *resp.ID)
	}
	if resp.Attributes == nil || resp.Attributes.Enabled == nil || !*resp.Attributes.Enabled || resp.Attributes.Created == nil {
		return errors.New("attributes missing")
	}
	return nil
}

func (r *run) getVersion() error {
	if err := expectValue(r, r.main, "conf-plain", r.fx.V1, "one"); err != nil {
		return err
	}
	var versions []string
	pager := r.main.NewListSecretPropertiesVersionsPager("conf-plain", nil)
	for pager.More() {
		page, err := pager.NextPage(r.ctx)
		if err != nil {
			return err
		}
		for _, p := range page.Value {
			versions = append(versions, p.ID.Version())
		}
	}
	slices.Sort(versions)
	want := []string{r.fx.V1, r.fx.V2}
	slices.Sort(want)
	if !slices.Equal(versions, want) {
		return fmt.Errorf("versions %v, want %v", versions, want)
	}
	return nil
}

func (r *run) disabled() error {
	_, err := r.main.GetSecret(r.ctx, "conf-disabled", "", nil)
	if err := expectError(err, 403, "Forbidden", "SecretDisabled"); err != nil {
		return err
	}
	pager := r.main.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(r.ctx)
		if err != nil {
			return err
		}
		for _, p := range page.Value {
			if p.ID.Name() == "conf-disabled" {
				if p.Attributes == nil || p.Attributes.Enabled == nil || *p.Attributes.Enabled {
					return errors.New("the disabled secret is not listed with enabled=false")
				}
				return nil
			}
		}
	}
	return errors.New("the disabled secret is not listed")
}

func (r *run) missing() error {
	_, err := r.main.GetSecret(r.ctx, "conf-missing", "", nil)
	return expectError(err, 404, "SecretNotFound", "")
}

func (r *run) noAccess() error {
	nobody, err := r.clientFor("conf-nobody", r.fx.Principals["conf-nobody"])
	if err != nil {
		return err
	}
	_, err = nobody.GetSecret(r.ctx, "conf-plain", "", nil)
	if err := expectError(err, 403, "Forbidden", "ForbiddenByRbac"); err != nil {
		return fmt.Errorf("no access: %w", err)
	}
	some, err := r.clientFor("conf-reader-some", r.fx.Principals["conf-reader-some"])
	if err != nil {
		return err
	}
	if err := expectValue(r, some, "conf-allowed", "", "allowed-value"); err != nil {
		return err
	}
	_, err = some.GetSecret(r.ctx, "conf-plain", "", nil)
	return expectError(err, 403, "Forbidden", "ForbiddenByRbac")
}

func (r *run) paging() error {
	pages, seen := 0, map[string]bool{}
	pager := r.main.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(r.ctx)
		if err != nil {
			return err
		}
		pages++
		for _, p := range page.Value {
			name := p.ID.Name()
			if seen[name] {
				return fmt.Errorf("%s listed twice", name)
			}
			seen[name] = true
			if name == "conf-page-07" && (p.ID.Version() != "" || p.Tags["group"] == nil || *p.Tags["group"] != "paged") {
				return fmt.Errorf("list item %s", *p.ID)
			}
		}
	}
	if pages < 3 {
		return fmt.Errorf("%d pages for %d secrets", pages, len(seen))
	}
	for _, name := range r.fx.Paged {
		if !seen[name] {
			return fmt.Errorf("%s not listed", name)
		}
	}
	return nil
}

func (r *run) tags() error {
	resp, err := r.main.GetSecret(r.ctx, "conf-tagged", "", nil)
	if err != nil {
		return err
	}
	if len(resp.Tags) != 2 || *resp.Tags["env"] != "test" || *resp.Tags["team"] != "mooring" {
		return fmt.Errorf("tags %v", resp.Tags)
	}
	if resp.ContentType == nil || *resp.ContentType != "text/plain" {
		return errors.New("contentType")
	}
	return nil
}

func (r *run) certificateSecret() error {
	resp, err := r.main.GetSecret(r.ctx, "conf-cert", "", nil)
	if err != nil {
		return err
	}
	if resp.Managed == nil || !*resp.Managed || resp.KID == nil || !strings.Contains(string(*resp.KID), "/keys/conf-cert/") {
		return errors.New("a certificate's secret is managed and names its key")
	}
	if !strings.Contains(*resp.Value, "BEGIN CERTIFICATE") {
		return errors.New("the certificate's secret holds the PEM")
	}
	return nil
}

func (r *run) wrongSecret() error {
	cred, err := secretCredential(os.Getenv("AZURE_CLIENT_ID"), "wrong")
	if err != nil {
		return err
	}
	_, err = cred.GetToken(r.ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
	if err == nil || !strings.Contains(err.Error(), "AADSTS7000215") {
		return fmt.Errorf("want AADSTS7000215, got %v", err)
	}
	return nil
}

func wiCredential(fx fixtures, path string) (*azidentity.WorkloadIdentityCredential, error) {
	return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientID: fx.WIClientID, TenantID: os.Getenv("AZURE_TENANT_ID"), TokenFilePath: path,
		DisableInstanceDiscovery: true,
	})
}

func (r *run) workloadIdentity() error {
	cred, err := wiCredential(r.fx, r.fx.WITokenFile)
	if err != nil {
		return err
	}
	c, err := r.client(cred)
	if err != nil {
		return err
	}
	if err := expectValue(r, c, "conf-plain", "", "two"); err != nil {
		return err
	}
	for path, code := range map[string]string{r.fx.WIWrongSubjectFile: "AADSTS70021", r.fx.WIBadSignatureFile: "AADSTS50013"} {
		bad, err := wiCredential(r.fx, path)
		if err != nil {
			return err
		}
		_, err = bad.GetToken(r.ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
		if err == nil || !strings.Contains(err.Error(), code) {
			return fmt.Errorf("want %s, got %v", code, err)
		}
	}
	return nil
}

// azidentity's IMDS endpoint is a constant (169.254.169.254), which tests never reach; the
// App Service protocol takes its endpoint from IDENTITY_ENDPOINT.
func (r *run) managedIdentityAppService() error {
	os.Setenv("IDENTITY_ENDPOINT", os.Getenv("AZURE_APP_SERVICE_IDENTITY_ENDPOINT"))
	os.Setenv("IDENTITY_HEADER", os.Getenv("AZURE_APP_SERVICE_IDENTITY_HEADER"))
	defer os.Unsetenv("IDENTITY_ENDPOINT")
	defer os.Unsetenv("IDENTITY_HEADER")
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ID: azidentity.ClientID(r.fx.ManagedIdentityUser),
	})
	if err != nil {
		return err
	}
	c, err := r.client(cred)
	if err != nil {
		return err
	}
	return expectValue(r, c, "conf-plain", "", "two")
}

func (r *run) tokenExpiry() error {
	cred, err := secretCredential("conf-short", r.fx.Principals["conf-short"])
	if err != nil {
		return err
	}
	c, err := r.client(cred)
	if err != nil {
		return err
	}
	before, err := r.issued("conf-short")
	if err != nil {
		return err
	}
	if err := expectValue(r, c, "conf-plain", "", "two"); err != nil {
		return err
	}
	tk, err := cred.GetToken(r.ctx, policy.TokenRequestOptions{Scopes: []string{scope}})
	if err != nil {
		return err
	}
	if life := time.Until(tk.ExpiresOn); life > 3*time.Second {
		return fmt.Errorf("the token lives %s", life)
	}
	// The lifetime is the thing under test: wait it out (bounded), then the old token is dead.
	time.Sleep(time.Until(tk.ExpiresOn) + 1100*time.Millisecond)
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.vault+"/secrets/conf-plain/?api-version=7.4", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tk.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		return fmt.Errorf("an expired token: %d", resp.StatusCode)
	}
	if err := expectValue(r, c, "conf-plain", "", "two"); err != nil {
		return fmt.Errorf("after expiry: %w", err)
	}
	after, err := r.issued("conf-short")
	if err != nil {
		return err
	}
	if after-before < 2 {
		return fmt.Errorf("the credential did not renew its token (%d issued)", after-before)
	}
	return nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Println("usage: azure-conformance FIXTURES.json")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := &run{ctx: ctx, vault: env("AZURE_KEYVAULT_URL"), tenant: env("AZURE_TENANT_ID")}
	env("AZURE_AUTHORITY_HOST")
	data, err := os.ReadFile(os.Args[1])
	if err == nil {
		err = json.Unmarshal(data, &r.fx)
	}
	if err == nil {
		r.main, err = r.clientFor(env("AZURE_CLIENT_ID"), env("AZURE_CLIENT_SECRET"))
	}
	if err != nil {
		fmt.Printf("FAIL go/setup: %v\n", err)
		os.Exit(1)
	}
	scenarios := []struct {
		name string
		fn   func() error
	}{
		{"get-latest", r.getLatest},
		{"get-version", r.getVersion},
		{"disabled", r.disabled},
		{"missing", r.missing},
		{"no-access", r.noAccess},
		{"paging", r.paging},
		{"tags", r.tags},
		{"certificate-secret", r.certificateSecret},
		{"wrong-secret", r.wrongSecret},
		{"workload-identity", r.workloadIdentity},
		{"managed-identity-app-service", r.managedIdentityAppService},
		{"token-expiry", r.tokenExpiry},
	}
	for _, s := range scenarios {
		started := time.Now()
		if err := s.fn(); err != nil {
			fmt.Printf("FAIL go/%s: %v\n", s.name, err)
			os.Exit(1)
		}
		fmt.Printf("ok go/%s (%.2fs)\n", s.name, time.Since(started).Seconds())
	}
}
