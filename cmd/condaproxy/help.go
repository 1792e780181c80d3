package main

import (
	"flag"
	"fmt"
	"strings"
)

// synopses and examples are what `condaproxy COMMAND --help` prints around the
// flags: a command's help is where a new operator looks first, and a line to copy
// says more than a flag list.
var synopses = map[string]string{
	"serve":        "condaproxy serve [-c FILE] [--listen ADDR] [--data DIR]",
	"sync":         "condaproxy sync [-c FILE | --mirror-config FILE] [--channel NAME]... [--dry-run] [--reset] [--jobs N] [--server URL]",
	"clean":        "condaproxy clean [-c FILE] [--channel NAME]... [--dry-run] [--server URL]",
	"export":       "condaproxy export [-c FILE] -o FILE.tar [--channel NAME]... [--delta] [--server URL]",
	"import":       "condaproxy import [-c FILE] FILE.tar [--server URL]",
	"explain":      "condaproxy explain [-c FILE] CHANNEL SUBDIR (FILENAME | NAME) [--server URL]",
	"config show":  "condaproxy config show [-c FILE]",
	"config check": "condaproxy config check [-c FILE]",
	"ca init":      "condaproxy ca init [-o DIR] [--force]",
}

var examples = map[string][]string{
	"serve": {
		"condaproxy serve                                   # the embedded default channels on :8080, data in ./condaproxy-data",
		"condaproxy serve -c /etc/condaproxy/condaproxy.yaml --listen 127.0.0.1:8080",
	},
	"sync": {
		"condaproxy sync --dry-run                          # what a pre-warm would fetch (files, bytes)",
		"condaproxy sync -c condaproxy.yaml --channel conda-forge --jobs 8",
		"condaproxy sync --mirror-config anaconda-mirror.yaml   # a mirror tool's file as it is",
	},
	"clean": {
		"condaproxy clean --dry-run                         # what the filter now hides and the cache still holds",
		"condaproxy clean --channel conda-forge",
	},
	"export": {
		"condaproxy export -o mirror.tar                    # every conda channel, for an air-gapped site",
		"condaproxy export -o delta.tar --delta --channel conda-forge",
	},
	"import": {
		"condaproxy import mirror.tar                       # verified whole before anything is visible",
		"condaproxy import --server http://localhost:8080 delta.tar",
	},
	"explain": {
		"condaproxy explain conda-forge linux-64 numpy      # every numpy record: served, or the rule that hides it",
		"condaproxy explain conda-forge noarch requests-2.32.3-pyhd8ed1ab_0.conda",
	},
	"config show":  {"condaproxy config show -c condaproxy.yaml             # defaults filled in, secrets masked"},
	"config check": {"condaproxy config check -c condaproxy.yaml && echo ok  # exit 2 names the bad key"},
	"ca init":      {"condaproxy ca init -o /etc/condaproxy                 # ca.pem for clients, ca-key.pem for the proxy"},
}

// helpUsage is a FlagSet's Usage for the command name: synopsis, flags, examples.
func helpUsage(name string, fs *flag.FlagSet) func() {
	return func() {
		w := fs.Output()
		if s := synopses[name]; s != "" {
			fmt.Fprintf(w, "usage: %s\n\nflags:\n", s)
		}
		fs.PrintDefaults()
		if ex := examples[name]; len(ex) > 0 {
			fmt.Fprintf(w, "\nexamples:\n  %s\n", strings.Join(ex, "\n  "))
		}
	}
}
