package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/mirror"
)

func cmdExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("export", stderr)
	file := fs.String("c", "", "configuration file")
	out := fs.String("o", "", "the tar to write")
	var channels listFlag
	fs.Var(&channels, "channel", "export only this channel (repeatable)")
	delta := fs.Bool("delta", false, "export only what earlier exports did not write")
	server := fs.String("server", "", "URL of the condaproxy server that holds the data directory")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("export: unexpected argument %q", pos[0])
	}
	if *out == "" {
		return usageErr("usage: condaproxy export [-c FILE] -o FILE.tar [--channel NAME]... [--delta] [--server URL]")
	}
	cfg, err := config.Load(config.Locate(*file))
	if err != nil {
		return err
	}
	names, err := condaChannels(cfg, channels)
	if err != nil {
		return err
	}
	if base := serverFor(cfg, *server); base != "" {
		return remoteExport(ctx, base, cfg.Auth.AdminToken, names, *delta, *out, stdout)
	}
	a, err := openLocal(cfg, "export", stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	defer a.proxy.Shutdown(context.Background())
	// Written beside the target and renamed at the end: a failed export leaves no
	// tar that looks complete.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".export-*.tar")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.Remove(tmp.Name())
	rep, err := mirror.Export(ctx, a.proxy, a.store, tmp, mirror.ExportOptions{
		Channels: names, Delta: *delta, Source: cfg.Source, TempDir: filepath.Join(cfg.Data, "tmp"),
	})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", *out, err)
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	kind := "export"
	if *delta {
		kind = "delta export"
	}
	fmt.Fprintf(stdout, "%s: %d packages (%s) of %v written to %s\n", kind, rep.Packages, human(rep.Bytes), names, *out)
	return nil
}

func cmdImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("import", stderr)
	file := fs.String("c", "", "configuration file")
	server := fs.String("server", "", "URL of the condaproxy server that holds the data directory")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("usage: condaproxy import [-c FILE] FILE.tar [--server URL]")
	}
	cfg, err := config.Load(config.Locate(*file))
	if err != nil {
		return err
	}
	if _, err := compilePolicies(cfg); err != nil {
		return err
	}
	if base := serverFor(cfg, *server); base != "" {
		return remoteImport(ctx, base, cfg.Auth.AdminToken, pos[0], stdout)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return &exitError{1, fmt.Errorf("import: %w", err)}
	}
	defer f.Close()
	a, err := openLocal(cfg, "import", stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	defer a.proxy.Shutdown(context.Background())
	known := func(name string) bool {
		ch := cfg.Channel(name)
		return ch != nil && ch.Kind == config.KindConda
	}
	rep, err := mirror.Import(ctx, a.proxy, a.store, f, mirror.ImportOptions{
		Known:       known,
		MaxRepodata: int64(cfg.Limits.MaxRepodata),
		MaxMetadata: int64(cfg.Limits.MaxMetadata),
	})
	if err != nil {
		// Refused or failed, the cache is as it was; the error names the entry.
		return &exitError{1, fmt.Errorf("import %s: %w", pos[0], err)}
	}
	fmt.Fprintf(stdout, "import: %d packages (%s) into %v\n", rep.Packages, human(rep.Bytes), rep.Channels)
	return nil
}

// condaChannels is the --channel list, checked, or every conda channel.
func condaChannels(cfg *config.Config, named []string) ([]string, error) {
	if len(named) > 0 {
		for _, n := range named {
			if ch := cfg.Channel(n); ch == nil || ch.Kind != config.KindConda {
				return nil, usageErr("--channel %q: no conda channel of that name in %s", n, cfg.Source)
			}
		}
		return named, nil
	}
	var out []string
	for _, ch := range cfg.Channels {
		if ch.Kind == config.KindConda {
			out = append(out, ch.Name)
		}
	}
	return out, nil
}
