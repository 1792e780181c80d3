package main

import (
	"flag"
	"fmt"
	"strings"
)

// commands are the command line's commands, in the order the usage lists them:
// their arguments and what each is for. `condaproxy COMMAND --help` prints the
// synopsis, the flags and the command's examples: a command's help is where a new
// operator looks first, and a line to copy says more than a flag list.
var commands = []struct{ name, args, what string }{
	{"serve", "[-c FILE] [--listen ADDR] [--data DIR]", "run the proxy"},
	{"sync", "[-c FILE | --mirror-config FILE] [--channel NAME]... [--dry-run] [--reset] [--jobs N] [--server URL]", "pre-warm the cache"},
	{"clean", "[-c FILE] [--channel NAME]... [--dry-run] [--server URL]", "drop cached packages the filter now hides"},
	{"export", "[-c FILE] -o FILE.tar [--channel NAME]... [--delta] [--server URL]", "write the cache as a channel tree in a tar"},
	{"import", "[-c FILE] FILE.tar [--server URL]", "verify and add an exported tar"},
	{"explain", "[-c FILE] CHANNEL SUBDIR (FILENAME | NAME) [--server URL]", "served, or which rule hides it"},
	{"config show", "[-c FILE]", "the effective configuration, secrets masked"},
	{"config check", "[-c FILE]", "validate: exit 0, or 2 naming the key"},
	{"ca init", "[-o DIR] [--force]", "a CA for forward-proxy mode, and the client settings"},
	{"version", "", ""},
}

// synopsis is "condaproxy NAME ARGS" of a command, or "".
func synopsis(name string) string {
	for _, c := range commands {
		if c.name == name {
			return strings.TrimSpace("condaproxy " + c.name + " " + c.args)
		}
	}
	return ""
}

// usageText is what `condaproxy` alone and `condaproxy help` print.
func usageText() string {
	var b strings.Builder
	b.WriteString("usage: condaproxy COMMAND [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %s\n", strings.TrimSpace(fmt.Sprintf("%-13s %s", c.name, c.args)))
		if c.what != "" {
			fmt.Fprintf(&b, "  %-13s %s\n", "", c.what)
		}
	}
	b.WriteString(`
The configuration file is -c, else $CONDAPROXY_CONFIG, else ./condaproxy.yaml if it
exists, else the embedded default. condaproxy COMMAND --help shows a command's
flags and examples.

examples:
  condaproxy serve                          # run the proxy on the embedded default
  condaproxy config check -c condaproxy.yaml
  condaproxy sync --channel conda-forge     # pre-warm (through the running server, if any)
`)
	return b.String()
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
		if s := synopsis(name); s != "" {
			fmt.Fprintf(w, "usage: %s\n\nflags:\n", s)
		}
		fs.PrintDefaults()
		if ex := examples[name]; len(ex) > 0 {
			fmt.Fprintf(w, "\nexamples:\n  %s\n", strings.Join(ex, "\n  "))
		}
	}
}
