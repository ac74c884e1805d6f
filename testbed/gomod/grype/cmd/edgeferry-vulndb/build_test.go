package main

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/anchore/grype/grype/db/provider"
)

// A GitHub advisory envelope as vunnel writes it (GHSA-x84v-xcm2-53pg, requests < 2.20.0).
const requestsAdvisory = `{
  "schema": "https://raw.githubusercontent.com/anchore/vunnel/main/schema/vulnerability/github-security-advisory/schema-1.0.3.json",
  "identifier": "github:python/ghsa-x84v-xcm2-53pg",
  "item": {
    "Vulnerability": {},
    "Advisory": {
      "ghsaId": "GHSA-x84v-xcm2-53pg",
      "CVE": ["CVE-2018-18074"],
      "Metadata": {"CVE": ["CVE-2018-18074"]},
      "Severity": "High",
      "Summary": "Insufficiently Protected Credentials in Requests",
      "namespace": "github:python",
      "url": "https://github.com/advisories/GHSA-x84v-xcm2-53pg",
      "published": "2018-10-29T19:06:46Z",
      "withdrawn": null,
      "FixedIn": [{"ecosystem": "python", "identifier": "2.20.0", "name": "requests",
                   "namespace": "github:python", "range": "< 2.20.0"}]
    }
  }
}`

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func archiveEntries(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	sort.Strings(names)
	return names
}

func TestLooseRecordsBuildAnImportableArchive(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "records", "python", "GHSA-x84v-xcm2-53pg.json"), requestsAdvisory)
	writeFile(t, filepath.Join(dir, "records", "README.md"), "not a record")

	before := time.Now().Add(-time.Second)
	got, err := build(buildOptions{
		RecordsDir: filepath.Join(dir, "records"),
		OutDir:     filepath.Join(dir, "out"),
		Archive:    filepath.Join(dir, "db.tar.gz"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Records != 1 || len(got.Providers) != 1 || got.Providers[0].Name != "github" {
		t.Errorf("want 1 github record, got %+v", got)
	}
	if got.Built.Before(before.Truncate(time.Second)) || got.Built.After(time.Now().Add(time.Second)) {
		t.Errorf("build timestamp %s is not now", got.Built)
	}
	if got.SchemaVersion != schemaVersion() || got.Checksum == "" {
		t.Errorf("schema %q checksum %q", got.SchemaVersion, got.Checksum)
	}
	if names := archiveEntries(t, got.Archive); len(names) != 2 || names[0] != "import.json" || names[1] != "vulnerability.db" {
		t.Errorf("archive holds %v, want import.json and vulnerability.db at its root", names)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "latest.json")); !os.IsNotExist(err) {
		t.Errorf("latest.json names an archive that was moved away; it should be gone")
	}
}

func TestVunnelWorkspaceIsUsedAsIs(t *testing.T) {
	dir := t.TempDir()
	w := provider.NewWorkspaceWriter(filepath.Join(dir, "records"), "github")
	f, err := w.WriteResult("github:python/ghsa-x84v-xcm2-53pg.json", []byte(requestsAdvisory))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteListing([]provider.File{*f}); err != nil {
		t.Fatal(err)
	}
	err = w.WriteState(provider.State{
		Provider: "github", Version: 1, Processor: "vunnel@test", Timestamp: time.Now(),
		Listing: &provider.File{Path: "results/listing.xxh64", Algorithm: "xxh64"}, Store: "flat-file",
	})
	if err != nil {
		t.Fatal(err)
	}

	got, err := build(buildOptions{RecordsDir: filepath.Join(dir, "records"), OutDir: filepath.Join(dir, "out")})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Providers) != 1 || got.Providers[0].Source != "workspace" || got.Providers[0].Records != 1 {
		t.Errorf("want the workspace's one record, got %+v", got.Providers)
	}
}

func TestBadRecordLeavesThePreviousDatabase(t *testing.T) {
	dir := t.TempDir()
	records, out := filepath.Join(dir, "records"), filepath.Join(dir, "out")
	writeFile(t, filepath.Join(records, "ok.json"), requestsAdvisory)
	if _, err := build(buildOptions{RecordsDir: records, OutDir: out}); err != nil {
		t.Fatal(err)
	}

	writeFile(t, filepath.Join(records, "bad.json"), `{"schema": "https://example.com/schema/vulnerability/nope/schema-1.0.0.json", "identifier": "x", "item": {}}`)
	_, err := build(buildOptions{RecordsDir: records, OutDir: out})
	var recErr *recordError
	if !errors.As(err, &recErr) || recErr.path != filepath.Join(records, "bad.json") {
		t.Fatalf("want a record error naming bad.json, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "vulnerability.db")); err != nil {
		t.Errorf("the earlier DB should survive a failed build: %v", err)
	}
}

func TestDuplicateIdentifiersAreRejected(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.json"), requestsAdvisory)
	writeFile(t, filepath.Join(dir, "copy", "a.json"), requestsAdvisory)
	_, err := build(buildOptions{RecordsDir: dir, OutDir: filepath.Join(t.TempDir(), "out")})
	var recErr *recordError
	if !errors.As(err, &recErr) {
		t.Fatalf("want a record error for the duplicate, got %v", err)
	}
}
