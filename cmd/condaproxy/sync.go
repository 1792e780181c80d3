package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/mirror"
	"github.com/condaproxy/condaproxy/proxy"
)

// listFlag collects a repeated flag (--channel A --channel B).
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// openLocal opens the data directory for a maintenance command. When a server
// holds it, the command must not fight that server for the storage: it says which
// server, and how to proceed.
func openLocal(cfg *config.Config, cmd string, stderr io.Writer) (*app, error) {
	// Errors only: what failed is in the command's own summary.
	h := slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError})
	a, err := newApp(cfg, slog.New(config.NewRedactor(cfg.Secrets()).Handler(h)))
	if errors.Is(err, cache.ErrLocked) {
		if url := findServer(cfg.Data); url != "" {
			return nil, fmt.Errorf("%s: the data directory %s is in use by the condaproxy server at %s; stop it first (%s never works on a live cache behind its back)", cmd, cfg.Data, url, cmd)
		}
		return nil, fmt.Errorf("%s: %w; stop the process that holds it", cmd, err)
	}
	return a, err
}

func cmdSync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sync", stderr)
	file := fs.String("c", "", "configuration file")
	mirrorCfg := fs.String("mirror-config", "", "an anaconda-mirror / cas-sync YAML file")
	var channels listFlag
	fs.Var(&channels, "channel", "sync only this channel (repeatable)")
	dryRun := fs.Bool("dry-run", false, "say what would be fetched (count, bytes); fetch nothing")
	reset := fs.Bool("reset", false, "forget what was verified: hash every cached file again")
	jobs := fs.Int("jobs", 4, "parallel fetches")
	server := fs.String("server", "", "URL of the condaproxy server that holds the data directory")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("sync: unexpected argument %q", pos[0])
	}
	if *jobs < 1 || *jobs > 64 {
		return usageErr("sync: --jobs %d: want 1 to 64", *jobs)
	}
	cfg, err := loadMirrorConfig(*file, *mirrorCfg, stderr)
	if err != nil {
		return err
	}
	remote := func(base string) error {
		if *dryRun || *reset || *mirrorCfg != "" {
			return &exitError{1, fmt.Errorf("sync: the server at %s holds the data directory; --dry-run, --reset and --mirror-config work on a data directory of their own: stop the server, or drop the flag to sync through it", base)}
		}
		return remoteSync(ctx, base, cfg.Auth.AdminToken, channels, stdout)
	}
	if *server != "" {
		return remote(strings.TrimRight(*server, "/"))
	}
	conda, err := condaChannels(cfg, nil)
	if err != nil {
		return err
	}
	if _, err := condaChannels(cfg, channels); err != nil {
		return err // an unknown --channel is a usage error (exit 2)
	}
	if url := serverFor(cfg, ""); url != "" {
		return remote(url) // a server holds the data directory: sync through it
	}
	a, err := openLocal(cfg, "sync", stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	defer a.proxy.Shutdown(context.Background())
	prog := newProgress(stdout, *dryRun)
	start := time.Now()
	rep, err := mirror.Sync(ctx, a.proxy, a.store, conda, mirror.SyncOptions{
		Channels: channels, DryRun: *dryRun, Reset: *reset, Jobs: *jobs, Progress: prog,
	})
	prog.finish()
	if rep == nil {
		return err
	}
	printSyncReport(stdout, rep, *dryRun, time.Since(start))
	if !*dryRun && err == nil {
		// A sync that ran to its end, failed files and all, as the admin
		// API's jobs record theirs; an interrupted one is no "last sync".
		if err := (mirror.SyncLedger{Meta: a.store.Meta}).Record(rep, time.Now()); err != nil {
			a.log.Warn("cannot record the sync for the admin page", "err", err)
		}
	}
	if err != nil {
		return &exitError{1, fmt.Errorf("sync interrupted (%v); run it again to resume: committed files are kept", err)}
	}
	if len(rep.Failures) > 0 {
		return &exitError{1, fmt.Errorf("sync: %d files failed", len(rep.Failures))}
	}
	return nil
}

func printSyncReport(w io.Writer, rep *mirror.SyncReport, dryRun bool, took time.Duration) {
	if dryRun {
		fmt.Fprintf(w, "dry run: %d records served, %d cached, would fetch %d files (%s)\n",
			rep.Records, rep.Present, rep.ToFetch, human(rep.ToFetchBytes))
		return
	}
	fmt.Fprintf(w, "sync: %d records served; fetched %d files (%s), %d already there", rep.Records, rep.Fetched, human(rep.FetchedBytes), rep.Present)
	if rep.Reverified > 0 {
		fmt.Fprintf(w, ", %d re-verified (%d dropped and refetched)", rep.Reverified, rep.Dropped)
	}
	fmt.Fprintf(w, ", %d failed, in %s\n", len(rep.Failures), took.Round(time.Millisecond))
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "  failed: %s/%s/%s: %s\n", f.Channel, f.Subdir, f.Filename, f.Reason)
	}
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// progress shows a bar on a terminal (files, bytes, rate, ETA) and plain lines
// otherwise (CI logs), at most one every 5 seconds.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	bar     *progressbar.ProgressBar
	total   int
	bytes   int64
	done    int
	got     int64
	failed  int
	last    time.Time
	dryRun  bool
	started time.Time
}

func newProgress(w io.Writer, dryRun bool) *progress {
	return &progress{w: w, dryRun: dryRun, started: time.Now()}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (p *progress) Planned(files int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.bytes = files, bytes
	if p.dryRun || files == 0 {
		return
	}
	if isTerminal(p.w) {
		p.bar = progressbar.NewOptions64(bytes,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetDescription(fmt.Sprintf("fetching %d files", files)),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
		return
	}
	fmt.Fprintf(p.w, "sync: fetching %d files (%s)\n", files, human(bytes))
}

func (p *progress) Done(f proxy.ServedFile, fetched bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done++
	if err != nil {
		p.failed++
	}
	if f.Size > 0 && err == nil {
		p.got += f.Size
	}
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("%d/%d files", p.done, p.total))
		p.bar.Set64(p.got)
		return
	}
	if time.Since(p.last) >= 5*time.Second || p.done == p.total {
		p.last = time.Now()
		el := time.Since(p.started).Seconds()
		rate := float64(p.got) / max(el, 0.001)
		eta := "?"
		if rate > 0 {
			eta = (time.Duration(float64(p.bytes-p.got)/rate) * time.Second).Round(time.Second).String()
		}
		fmt.Fprintf(p.w, "sync: %d/%d files, %s/%s, %s/s, %d failed, eta %s\n",
			p.done, p.total, human(p.got), human(p.bytes), human(int64(rate)), p.failed, eta)
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
	}
}

func cmdClean(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("clean", stderr)
	file := fs.String("c", "", "configuration file")
	var channels listFlag
	fs.Var(&channels, "channel", "clean only this channel (repeatable)")
	dryRun := fs.Bool("dry-run", false, "list what would be removed; remove nothing")
	server := fs.String("server", "", "URL of the condaproxy server that holds the data directory")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("clean: unexpected argument %q", pos[0])
	}
	cfg, err := config.Load(config.Locate(*file))
	if err != nil {
		return err
	}
	if _, err := compilePolicies(cfg); err != nil {
		return err
	}
	if _, err := condaChannels(cfg, channels); err != nil {
		return err // an unknown --channel is a usage error (exit 2)
	}
	if base := serverFor(cfg, *server); base != "" {
		return remoteClean(ctx, base, cfg.Auth.AdminToken, channels, *dryRun, stdout)
	}
	a, err := openLocal(cfg, "clean", stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	defer a.proxy.Shutdown(context.Background())
	names := []string(channels)
	if len(names) == 0 {
		for _, ch := range cfg.Channels {
			if ch.Kind == config.KindConda {
				names = append(names, ch.Name)
			}
		}
	}
	var count int
	var total int64
	if !*dryRun {
		for _, ch := range names {
			packs, bytes, err := a.proxy.CleanShards(ch)
			if err != nil {
				return fmt.Errorf("clean %s: sharded repodata: %w", ch, err)
			}
			if packs > 0 {
				fmt.Fprintf(stdout, "removed %d packs of shards no index has named for a week from %s (%s)\n", packs, ch, human(bytes))
			}
		}
	}
	for _, ch := range names {
		files, err := a.proxy.CachedHidden(ctx, ch)
		if err != nil {
			return err
		}
		verb := "would remove"
		if !*dryRun {
			verb = "removed"
			if err := a.proxy.UncacheFiles(ch, files); err != nil {
				return fmt.Errorf("clean %s: %w", ch, err)
			}
		}
		for _, f := range files {
			fmt.Fprintf(stdout, "%s %s/%s/%s (%s), hidden by %s\n", verb, ch, f.Subdir, f.Filename, human(f.Size), f.Rule)
			count++
			total += f.Size
		}
	}
	if *dryRun {
		fmt.Fprintf(stdout, "clean: would remove %d files (%s)\n", count, human(total))
	} else {
		fmt.Fprintf(stdout, "clean: removed %d files (%s)\n", count, human(total))
	}
	return nil
}

// loadMirrorConfig loads -c (or the default chain) and, with --mirror-config,
// replaces its channels by the mirror tool's.
func loadMirrorConfig(file, mirrorFile string, stderr io.Writer) (*config.Config, error) {
	cfg, err := config.Load(config.Locate(file))
	if err != nil {
		return nil, err
	}
	if mirrorFile != "" {
		if cfg, err = applyMirrorConfig(cfg, mirrorFile, stderr); err != nil {
			return nil, err
		}
	}
	if _, err := compilePolicies(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// newStoreProbe tries to open the data directory, to learn whether a server
// holds it; it closes what it opened.
func newStoreProbe(cfg *config.Config) (struct{}, error) {
	st, err := cache.Open(cfg.Data, cache.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		st.Close()
	}
	return struct{}{}, err
}

// remoteSync runs a sync as a job of the server at base (POST /api/v1/sync) and
// follows its progress until it ends; exit 1 if any file failed.
func remoteSync(ctx context.Context, base, adminToken string, channels []string, stdout io.Writer) error {
	var job admin.Job
	if err := apiPost(base, "/api/v1/sync", map[string]any{"channels": channels}, adminToken, &job); err != nil {
		return &exitError{1, fmt.Errorf("sync through %s: %w", base, err)}
	}
	fmt.Fprintf(stdout, "sync: through the server at %s, job %s\n", base, job.ID)
	job, err := followJob(ctx, base, adminToken, "sync", job, func(job admin.Job) {
		fmt.Fprintf(stdout, "sync: %d/%d files, %s/%s\n", job.Done, job.Files, human(job.BytesDone), human(job.Bytes))
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sync: fetched %d files, %d already there, %d failed (job %s, %s)\n",
		job.Fetched, job.Present, len(job.Failed), job.ID, job.State)
	for _, f := range job.Failed {
		fmt.Fprintf(stdout, "  failed: %s\n", f)
	}
	if job.Error != "" {
		return &exitError{1, fmt.Errorf("sync job %s: %s", job.ID, job.Error)}
	}
	if len(job.Failed) > 0 {
		return &exitError{1, fmt.Errorf("sync: %d files failed", len(job.Failed))}
	}
	return nil
}
