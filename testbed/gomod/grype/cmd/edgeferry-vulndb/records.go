package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/anchore/grype/grype/db/data"
	buildv6 "github.com/anchore/grype/grype/db/v6/build"
)

// recordError is a problem with the user's input records (as opposed to a build failure).
type recordError struct {
	path string
	msg  string
}

func (e *recordError) Error() string { return e.path + ": " + e.msg }

// record is one vunnel envelope read from the records directory.
type record struct {
	source     string // file it came from
	provider   string
	identifier string
	raw        []byte
}

type envelope struct {
	Schema     string          `json:"schema"`
	Identifier string          `json:"identifier"`
	Item       json.RawMessage `json:"item"`
}

// osItem is the little of an OS record needed to name its provider ("debian:12" -> "debian").
type osItem struct {
	Vulnerability struct {
		NamespaceName string `json:"NamespaceName"`
	} `json:"Vulnerability"`
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._@-]+`)

// resultName is the record's file name inside its workspace, derived from the identifier the
// way vunnel does (e.g. "debian:12/CVE-2023-1234" -> "debian:12/CVE-2023-1234.json" becomes
// "debian_12/CVE-2023-1234.json"), so duplicates of one identifier collide and are reported.
func (r record) resultName() string {
	parts := strings.Split(r.identifier, "/")
	for i, p := range parts {
		parts[i] = unsafeName.ReplaceAllString(p, "_")
	}
	return path.Join(parts...) + ".json"
}

// groupRecords reads every loose envelope, rejects what grype's processors would silently drop
// (unknown schema, not an envelope at all) and groups the rest by provider.
func groupRecords(paths []string) (map[string][]record, error) {
	processors := buildv6.Processors(buildv6.NewConfig())
	grouped := map[string][]record{}
	seen := map[string]string{}
	for _, p := range paths {
		r, err := readRecord(p, processors)
		if err != nil {
			return nil, err
		}
		key := r.provider + "\x00" + r.resultName()
		if prev, dup := seen[key]; dup {
			return nil, &recordError{path: p, msg: fmt.Sprintf("identifier %q of provider %q already read from %s", r.identifier, r.provider, prev)}
		}
		seen[key] = p
		grouped[r.provider] = append(grouped[r.provider], r)
	}
	return grouped, nil
}

func readRecord(p string, processors []data.Processor) (record, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return record{}, err
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return record{}, &recordError{path: p, msg: "not a JSON object: " + err.Error()}
	}
	if env.Schema == "" || env.Identifier == "" || len(env.Item) == 0 {
		return record{}, &recordError{path: p, msg: "missing one of \"schema\", \"identifier\", \"item\""}
	}
	supported := false
	for _, proc := range processors {
		if proc.IsSupported(env.Schema) {
			supported = true
			break
		}
	}
	if !supported {
		return record{}, &recordError{path: p, msg: fmt.Sprintf("schema %q is not one grype %s can process", env.Schema, grypeVersion())}
	}
	name, err := providerName(env)
	if err != nil {
		return record{}, &recordError{path: p, msg: err.Error()}
	}
	return record{source: p, provider: name, identifier: env.Identifier, raw: raw}, nil
}

// providerName names the provider a record belongs to the way vunnel's providers are named:
// GitHub advisories are "github", OS records take their distro family from the namespace
// ("debian:12" -> "debian"), other schemas their schema directory ("nvd", "osv", ...).
// grype shows this name in match namespaces (e.g. "github:language:python").
func providerName(env envelope) (string, error) {
	dir := path.Base(path.Dir(env.Schema))
	switch dir {
	case "github-security-advisory":
		return "github", nil
	case "os":
		var item osItem
		if err := json.Unmarshal(env.Item, &item); err != nil {
			return "", fmt.Errorf("OS record item: %w", err)
		}
		family, _, ok := strings.Cut(item.Vulnerability.NamespaceName, ":")
		if !ok || family == "" {
			return "", fmt.Errorf("OS record without a \"Vulnerability.NamespaceName\" like \"debian:12\"")
		}
		return family, nil
	case "", ".", "/":
		return "", fmt.Errorf("cannot tell the provider from schema %q", env.Schema)
	default:
		return dir, nil
	}
}
