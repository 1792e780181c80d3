package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/condaproxy/condaproxy/config"
)

// printBanner tells whoever started serve what to do next, once it listens: the
// URL of its page and a .condarc for the address it listens on. A first run on the
// embedded default should need nothing else; the JSON log lines on stderr are for
// machines, this is for the person at the terminal.
func printBanner(w io.Writer, cfg *config.Config, addr net.Addr) {
	base, local := clientBase(cfg, addr)
	var names []string
	for _, ch := range cfg.Channels {
		names = append(names, ch.Name)
	}
	from := cfg.Source
	if from != config.EmbeddedName {
		from = "config " + from
	}
	var b strings.Builder
	fmt.Fprintf(&b, "condaproxy is serving %s on %s (%s)\n", strings.Join(names, ", "), addr, from)
	fmt.Fprintf(&b, "  page:    %s/\n", base)
	fmt.Fprintf(&b, "  metrics: %s/metrics\n", base)
	b.WriteString("\nPoint conda and mamba at it: put this in ~/.condarc")
	if local {
		host, _ := os.Hostname()
		if host == "" {
			host = "this host's name"
		}
		fmt.Fprintf(&b, " (on another machine, write %s or its address in place of localhost, or set public_url)", host)
	}
	b.WriteString(":\n\n")
	// Through channel_alias every channel, by its name (-c conda-forge, -c
	// pkgs/main), goes through the proxy; "defaults" are the pkgs/* channels.
	prefix := base
	if len(cfg.Auth.Tokens) > 0 {
		prefix += "/t/<token>"
	}
	fmt.Fprintf(&b, "channel_alias: %s\n", prefix)
	var defaults []string
	for _, ch := range cfg.Channels {
		if ch.Kind == config.KindConda && strings.HasPrefix(ch.Name, "pkgs/") {
			defaults = append(defaults, prefix+"/"+ch.Name)
		}
	}
	if len(defaults) > 0 {
		b.WriteString("default_channels:\n")
		for _, d := range defaults {
			fmt.Fprintf(&b, "  - %s\n", d)
		}
	}
	if len(cfg.Auth.Tokens) > 0 {
		b.WriteString("\n(auth.tokens is set: write a client token in place of <token>)\n")
	}
	b.WriteString("\n")
	io.WriteString(w, b.String())
}

// clientBase is the URL clients reach the proxy at: public_url when set, else the
// address it listens on, with localhost for a wildcard address (local reports
// that: another machine needs this host's name instead).
func clientBase(cfg *config.Config, addr net.Addr) (base string, local bool) {
	if cfg.PublicURL != "" {
		// Redacted: the banner lands in terminals and service logs, and a URL's
		// user:password@ would be a secret there (clients need none from it).
		return strings.TrimRight(config.RedactURL(cfg.PublicURL), "/"), false
	}
	scheme := "http"
	if cfg.TLS.Cert != "" {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + "://" + addr.String(), false
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host, local = "localhost", true
	}
	return scheme + "://" + net.JoinHostPort(host, port), local
}
