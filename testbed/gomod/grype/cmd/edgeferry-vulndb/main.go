// Command edgeferry-vulndb builds a grype vulnerability database (schema v6) from a directory of
// vunnel-format advisory records, for air-gapped clusters and for tests that must never reach
// the network.
//
// It is linked against the same grype release as the scanner binary built beside it, and uses
// that release's own DB-building packages (provider workspaces, processors, writer, hydration,
// archive), so a DB it writes is exactly what that grype reads: no second tool whose schema
// version could drift from the scanner's.
//
// Usage:
//
//	edgeferry-vulndb build --records DIR --out DIR [--archive FILE]
//	edgeferry-vulndb version
//
// On success "build" prints one JSON document (see summary) on stdout; errors go to stderr with
// exit code 1, usage errors exit with 2.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

const grypeModule = "github.com/anchore/grype"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "build":
		return runBuild(args[1:], stdout, stderr)
	case "version":
		return printJSON(stdout, stderr, currentVersion())
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "edgeferry-vulndb: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  edgeferry-vulndb build --records DIR --out DIR [--archive FILE]
      Build vulnerability.db and import.json in --out from the vunnel records under --records
      (any tree of record envelopes, and/or vunnel provider workspaces with metadata.json).
      --archive writes a .tar.gz (or .tar.xz/.tar.zst) that "grype db import" accepts.
  edgeferry-vulndb version
      Print the grype release and DB schema this builder writes.
`)
}

func runBuild(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	records := fs.String("records", "", "directory of vunnel advisory records (required)")
	out := fs.String("out", "", "directory to write vulnerability.db and import.json into (required)")
	archive := fs.String("archive", "", "also package the DB as this .tar.gz/.tar.xz/.tar.zst file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *records == "" || *out == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "edgeferry-vulndb build: --records and --out are required, no positional arguments")
		return 2
	}

	result, err := build(buildOptions{RecordsDir: *records, OutDir: *out, Archive: *archive})
	if err != nil {
		fmt.Fprintf(stderr, "edgeferry-vulndb build: %v\n", err)
		var inputErr *recordError
		if errors.As(err, &inputErr) {
			fmt.Fprintln(stderr, "hint: each record is one JSON envelope {\"schema\": URL, \"identifier\": ID, \"item\": {...}} as vunnel writes it")
		}
		return 1
	}
	return printJSON(stdout, stderr, result)
}

type versionInfo struct {
	Builder       string `json:"builder"`
	GrypeVersion  string `json:"grypeVersion"`
	SchemaVersion string `json:"schemaVersion"`
}

func currentVersion() versionInfo {
	return versionInfo{Builder: "edgeferry-vulndb", GrypeVersion: grypeVersion(), SchemaVersion: schemaVersion()}
}

// grypeVersion reads the grype module version this binary was linked against from its build info.
func grypeVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == grypeModule {
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "edgeferry-vulndb: writing output: %v\n", err)
		return 1
	}
	return 0
}
