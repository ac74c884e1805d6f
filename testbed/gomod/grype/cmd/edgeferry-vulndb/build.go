package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/afero"

	grypedb "github.com/anchore/grype/grype/db"
	"github.com/anchore/grype/grype/db/provider"
	dbv6 "github.com/anchore/grype/grype/db/v6"
)

// sqliteCacheKiB bounds SQLite's page cache while writing; grype's default (1 GiB) is sized for
// the full upstream DB, far beyond what a directory of records needs on a small build machine.
const sqliteCacheKiB = 64 * 1024

type buildOptions struct {
	RecordsDir string
	OutDir     string
	Archive    string
}

// summary is what "build" prints on stdout: enough for a caller to import the DB and to tell
// later which DB a scan used (grype reports the same built time and checksum).
type summary struct {
	VulnerabilityDB string          `json:"vulnerabilityDb"`
	ImportMetadata  string          `json:"importMetadata"`
	Archive         string          `json:"archive,omitempty"`
	Built           time.Time       `json:"built"`
	SchemaVersion   string          `json:"schemaVersion"`
	Checksum        string          `json:"checksum"`
	GrypeVersion    string          `json:"grypeVersion"`
	Records         int             `json:"records"`
	Providers       []providerCount `json:"providers"`
	DurationSeconds float64         `json:"durationSeconds"`
}

type providerCount struct {
	Name    string `json:"name"`
	Records int    `json:"records"`
	Source  string `json:"source"` // "records" (assembled here) or "workspace" (vunnel's own)
}

func schemaVersion() string {
	return fmt.Sprintf("v%d.%d.%d", dbv6.ModelVersion, dbv6.Revision, dbv6.Addition)
}

func build(opts buildOptions) (*summary, error) {
	start := time.Now()
	recordsDir, err := existingDir(opts.RecordsDir, "--records")
	if err != nil {
		return nil, err
	}
	outDir, err := filepath.Abs(opts.OutDir)
	if err != nil {
		return nil, err
	}
	archive := ""
	if opts.Archive != "" {
		if archive, err = filepath.Abs(opts.Archive); err != nil {
			return nil, err
		}
		if _, err := archiveExtension(archive); err != nil {
			return nil, err
		}
	}
	scratch, err := os.MkdirTemp("", "edgeferry-vulndb-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)

	// Read and check every record before touching --out: a bad record must not cost the user
	// the DB they built last time.
	states, counts, err := collectStates(recordsDir, scratch, start)
	if err != nil {
		return nil, err
	}
	if err := prepareOutDir(outDir); err != nil {
		return nil, err
	}

	err = grypedb.Build(grypedb.BuildConfig{
		SchemaVersion:      dbv6.ModelVersion,
		Directory:          outDir,
		States:             states,
		Timestamp:          start,
		Hydrate:            true, // also writes import.json with the DB's checksum
		SQLiteCacheSizeKiB: sqliteCacheKiB,
	})
	if err != nil {
		return nil, fmt.Errorf("building the database: %w", err)
	}

	result := &summary{
		VulnerabilityDB: filepath.Join(outDir, dbv6.VulnerabilityDBFileName),
		ImportMetadata:  filepath.Join(outDir, dbv6.ImportMetadataFileName),
		SchemaVersion:   schemaVersion(),
		GrypeVersion:    grypeVersion(),
		Providers:       counts,
	}
	for _, c := range counts {
		result.Records += c.Records
	}
	if result.Built, err = builtTimestamp(outDir); err != nil {
		return nil, err
	}
	meta, err := dbv6.ReadImportMetadata(afero.NewOsFs(), outDir)
	if err != nil {
		return nil, err
	}
	result.Checksum = meta.Digest

	if archive != "" {
		if err := packageArchive(outDir, archive); err != nil {
			return nil, err
		}
		result.Archive = archive
	}
	result.DurationSeconds = time.Since(start).Seconds()
	return result, nil
}

func existingDir(path, flagName string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	info, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flagName, path, err)
	}
	if !info.IsDir() {
		return "", fmt.Errorf("%s %s: not a directory", flagName, path)
	}
	return abs, nil
}

// prepareOutDir creates the output directory and removes a DB from an earlier build, so a
// rebuild into the same directory never mixes old rows into the new database.
func prepareOutDir(outDir string) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{dbv6.VulnerabilityDBFileName, dbv6.ImportMetadataFileName} {
		if err := os.Remove(filepath.Join(outDir, name)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// collectStates turns the records directory into provider states grype's builder reads:
// existing vunnel workspaces (a directory with metadata.json) are used as they are, and loose
// record envelopes are grouped per provider into fresh workspaces under scratch.
func collectStates(recordsDir, scratch string, now time.Time) (provider.States, []providerCount, error) {
	workspaces, loose, err := discover(recordsDir)
	if err != nil {
		return nil, nil, err
	}

	var states provider.States
	var counts []providerCount
	seen := map[string]string{}
	for _, statePath := range workspaces {
		state, err := provider.ReadState(statePath)
		if err != nil {
			return nil, nil, fmt.Errorf("reading vunnel workspace state %s: %w", statePath, err)
		}
		if err := state.Verify(); err != nil {
			return nil, nil, fmt.Errorf("vunnel workspace %s: %w", filepath.Dir(statePath), err)
		}
		if prev, dup := seen[state.Provider]; dup {
			return nil, nil, fmt.Errorf("provider %q appears twice: %s and %s", state.Provider, prev, statePath)
		}
		seen[state.Provider] = statePath
		states = append(states, *state)
		counts = append(counts, providerCount{Name: state.Provider, Records: len(state.ResultPaths()), Source: "workspace"})
	}

	grouped, err := groupRecords(loose)
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(grouped))
	for name := range grouped {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if prev, dup := seen[name]; dup {
			return nil, nil, fmt.Errorf("provider %q has both a vunnel workspace (%s) and loose records", name, prev)
		}
		state, err := writeWorkspace(scratch, name, grouped[name], now)
		if err != nil {
			return nil, nil, err
		}
		states = append(states, *state)
		counts = append(counts, providerCount{Name: name, Records: len(grouped[name]), Source: "records"})
	}

	if len(states) == 0 {
		return nil, nil, &recordError{path: recordsDir, msg: "no advisory records (*.json) found"}
	}
	return states, counts, nil
}

// discover walks the records tree: directories holding metadata.json are vunnel workspaces
// (not descended into), every other *.json file is a loose record envelope.
func discover(root string) (workspaces, loose []string, err error) {
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, walkErr error) error {
		if walkErr != nil {
			return walkErr
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && path != root {
				return filepath.SkipDir
			}
			statePath := filepath.Join(path, "metadata.json")
			if _, err := os.Stat(statePath); err == nil {
				workspaces = append(workspaces, statePath)
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(d.Name(), ".json") {
			loose = append(loose, path)
		}
		return nil
	})
	sort.Strings(workspaces)
	sort.Strings(loose)
	return workspaces, loose, err
}

// writeWorkspace lays records out the way vunnel does (metadata.json, results/, listing), so
// grype's own provider reader and processors take them exactly like upstream data.
func writeWorkspace(root, name string, records []record, now time.Time) (*provider.State, error) {
	w := provider.NewWorkspaceWriter(root, name)
	files := make([]provider.File, 0, len(records))
	for _, r := range records {
		f, err := w.WriteResult(r.resultName(), r.raw)
		if err != nil {
			return nil, err
		}
		files = append(files, *f)
	}
	if err := w.WriteListing(files); err != nil {
		return nil, err
	}
	listingDigest, err := provider.HashFileXXH64(w.ListingPath())
	if err != nil {
		return nil, err
	}
	state := provider.State{
		Provider:  name,
		Version:   1,
		Processor: "edgeferry-vulndb",
		Schema: provider.Schema{
			Version: "1.0.0",
			URL:     "https://raw.githubusercontent.com/anchore/vunnel/main/schema/provider-workspace-state/schema-1.0.0.json",
		},
		Timestamp: now.UTC(),
		Listing:   &provider.File{Path: "results/listing.xxh64", Digest: listingDigest, Algorithm: "xxh64"},
		Store:     "flat-file",
	}
	if err := w.WriteState(state); err != nil {
		return nil, err
	}
	return provider.ReadState(filepath.Join(w.Path(), "metadata.json"))
}

func builtTimestamp(dbDir string) (time.Time, error) {
	reader, err := dbv6.NewReader(dbv6.Config{DBDirPath: dbDir})
	if err != nil {
		return time.Time{}, fmt.Errorf("opening the new database: %w", err)
	}
	defer reader.Close()
	meta, err := reader.GetDBMetadata()
	if err != nil || meta == nil || meta.BuildTimestamp == nil {
		return time.Time{}, fmt.Errorf("reading the new database's metadata: %v", err)
	}
	return meta.BuildTimestamp.UTC(), nil
}

func archiveExtension(path string) (string, error) {
	for _, ext := range []string{"tar.gz", "tar.xz", "tar.zst"} {
		if strings.HasSuffix(path, "."+ext) {
			return ext, nil
		}
	}
	return "", fmt.Errorf("--archive %s: name must end in .tar.gz, .tar.xz or .tar.zst", path)
}

// packageArchive lets grype's packager write its archive (vulnerability.db + import.json at the
// root, the layout "grype db import" expects) and moves it to the requested name. grype's
// latest.json names the archive it wrote, so it is dropped once the archive has moved.
func packageArchive(outDir, archive string) error {
	ext, err := archiveExtension(archive)
	if err != nil {
		return err
	}
	before, err := filepath.Glob(filepath.Join(outDir, "vulnerability-db_*"))
	if err != nil {
		return err
	}
	for _, stale := range before {
		_ = os.Remove(stale)
	}
	if err := grypedb.Package(outDir, "", ext, nil); err != nil {
		return fmt.Errorf("packaging the database: %w", err)
	}
	written, err := filepath.Glob(filepath.Join(outDir, "vulnerability-db_*."+ext))
	if err != nil {
		return err
	}
	if len(written) != 1 {
		return fmt.Errorf("packaging the database: expected one archive in %s, found %d", outDir, len(written))
	}
	if written[0] == archive {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		return err
	}
	if err := moveFile(written[0], archive); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(outDir, "latest.json"))
	return nil
}

func moveFile(from, to string) error {
	if err := os.Rename(from, to); err == nil {
		return nil
	}
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		return err
	}
	return os.Remove(from)
}
