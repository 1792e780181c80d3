package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/proxy"
)

// parseInterleaved parses flags that may stand before, between or after the
// positional arguments ("explain C S F --server URL") and returns the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func cmdExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("explain", stderr)
	file := fs.String("c", "", "configuration file")
	server := fs.String("server", "", "URL of a running condaproxy to ask (default: the one on the data directory, if any)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 {
		return usageErr("usage: condaproxy explain [-c FILE] CHANNEL SUBDIR (FILENAME | NAME) [--server URL]")
	}
	cfg, err := config.Load(config.Locate(*file))
	if err != nil {
		return err
	}
	channel, subdir, query := pos[0], pos[1], pos[2]
	if ch := cfg.Channel(channel); ch == nil || ch.Kind != config.KindConda {
		return usageErr("explain: %q is not a conda channel of %s", channel, cfg.Source)
	}
	var out []proxy.Explanation
	base := *server
	if base == "" {
		out, err = explainLocal(ctx, cfg, channel, subdir, query)
		if errors.Is(err, cache.ErrLocked) {
			if base = findServer(cfg.Data); base == "" {
				return fmt.Errorf("%w; pass --server URL of the condaproxy that holds it", err)
			}
		} else if err != nil {
			return err
		}
	}
	if base != "" {
		// The admin API's reads need a token that opens every channel.
		token := ""
		for _, t := range cfg.Auth.Tokens {
			if !t.Scoped {
				token = t.Token
				break
			}
		}
		q := url.Values{"channel": {channel}, "subdir": {subdir}, "package": {query}}
		if err := apiGet(strings.TrimRight(base, "/"), "/api/v1/explain", q, token, &out); err != nil {
			return err
		}
	}
	if len(out) == 0 {
		return &exitError{1, fmt.Errorf("explain: no record %q in %s/%s", query, channel, subdir)}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, e := range out {
		verdict := "served"
		if !e.Served {
			verdict = "hidden by " + e.Rule
			if e.Detail != "" {
				verdict += " (" + e.Detail + ")"
			}
		}
		if e.Cached {
			verdict += "\tcached"
		}
		fmt.Fprintf(tw, "%s\t%s\n", e.Filename, verdict)
	}
	return tw.Flush()
}

// explainLocal opens the data directory itself; it fetches the subdir's repodata
// from upstream if none is stored.
func explainLocal(ctx context.Context, cfg *config.Config, channel, subdir, query string) ([]proxy.Explanation, error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := newApp(cfg, log)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	defer a.proxy.Shutdown(context.Background())
	return a.proxy.Explain(ctx, channel, subdir, query)
}
