package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/admin"
	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/mirror"
)

// Maintenance commands through a running server (its admin API), as sync does:
// the server holds the data directory, so the command asks it to do the work.

// serverFor is the URL of the server a maintenance command goes through: --server,
// else the server that holds the data directory (its server.json, and the store
// it has locked), else "" (the command works on the data directory itself).
func serverFor(cfg *config.Config, flag string) string {
	if flag != "" {
		return strings.TrimRight(flag, "/")
	}
	if url := findServer(cfg.Data); url != "" {
		if _, err := newStoreProbe(cfg); errors.Is(err, cache.ErrLocked) {
			return url
		}
	}
	return ""
}

// followJob polls GET /api/v1/jobs/<id> until the job ends, calling tick (if
// set) at the first poll and then every 5 s while it runs.
func followJob(ctx context.Context, base, token, cmd string, job admin.Job, tick func(admin.Job)) (admin.Job, error) {
	var last time.Time
	for job.State == "running" {
		select {
		case <-ctx.Done():
			return job, &exitError{1, fmt.Errorf("%s: stopped following job %s (it goes on in the server at %s)", cmd, job.ID, base)}
		case <-time.After(200 * time.Millisecond):
		}
		if err := apiGet(base, "/api/v1/jobs/"+job.ID, nil, token, &job); err != nil {
			return job, &exitError{1, fmt.Errorf("%s: job %s: %w", cmd, job.ID, err)}
		}
		if tick != nil && time.Since(last) >= 5*time.Second {
			last = time.Now()
			tick(job)
		}
	}
	return job, nil
}

// remoteClean runs a clean as a job of the server at base and prints what the
// local clean prints.
func remoteClean(ctx context.Context, base, token string, channels []string, dryRun bool, stdout io.Writer) error {
	var job admin.Job
	if err := apiPost(base, "/api/v1/clean", map[string]any{"channels": channels, "dry_run": dryRun}, token, &job); err != nil {
		return &exitError{1, fmt.Errorf("clean through %s: %w", base, err)}
	}
	fmt.Fprintf(stdout, "clean: through the server at %s, job %s\n", base, job.ID)
	job, err := followJob(ctx, base, token, "clean", job, nil)
	if err != nil {
		return err
	}
	if job.ShardPacks > 0 {
		fmt.Fprintf(stdout, "removed %d packs of shards no index has named for a week (%s)\n", job.ShardPacks, human(job.ShardBytes))
	}
	verb := "would remove"
	if !dryRun {
		verb = "removed"
	}
	for _, f := range job.Cleaned {
		fmt.Fprintf(stdout, "%s %s/%s/%s (%s), hidden by %s\n", verb, f.Channel, f.Subdir, f.Filename, human(f.Size), f.Rule)
	}
	if more := job.Files - len(job.Cleaned); more > 0 {
		fmt.Fprintf(stdout, "... and %d more files (the server lists the first %d)\n", more, len(job.Cleaned))
	}
	if job.Error != "" {
		return &exitError{1, fmt.Errorf("clean job %s on the server at %s: %s (removed %d files, %s)", job.ID, base, job.Error, job.Done, human(job.BytesDone))}
	}
	if dryRun {
		fmt.Fprintf(stdout, "clean: would remove %d files (%s)\n", job.Files, human(job.Bytes))
	} else {
		fmt.Fprintf(stdout, "clean: removed %d files (%s)\n", job.Done, human(job.BytesDone))
	}
	return nil
}

// streamClient has no overall timeout: an export or an import lasts as long as
// its bytes take; the server's idle timeouts and ctx end a stalled one.
var streamClient = &http.Client{Transport: &http.Transport{
	Proxy:                 nil, // the server is local, or named: never through HTTP(S)_PROXY
	ResponseHeaderTimeout: 0,
	IdleConnTimeout:       time.Minute,
}}

// apiFailure reads an API error answer.
func apiFailure(base string, resp *http.Response) error {
	var e struct{ Error string }
	json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
	if e.Error == "" {
		return fmt.Errorf("server %s: %s", base, resp.Status)
	}
	return fmt.Errorf("server %s: %s: %s", base, resp.Status, e.Error)
}

// remoteExport has the server at base stream the export tar, checks it whole
// (every entry against the manifest, the tar's end, the server's trailer) as it
// writes it beside out, renames it to out only then, and tells the server it
// has it (for the next --delta).
func remoteExport(ctx context.Context, base, token string, channels []string, delta bool, out string, stdout io.Writer) error {
	fail := func(err error) error {
		return &exitError{1, fmt.Errorf("export through %s: %w; nothing was written to %s", base, err, out)}
	}
	body, _ := json.Marshal(map[string]any{"channels": channels, "delta": delta})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/export", strings.NewReader(string(body)))
	if err != nil {
		return &exitError{1, fmt.Errorf("--server %q: %w", base, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := streamClient.Do(req)
	if err != nil {
		return fail(fmt.Errorf("server %s: %w", base, errors.Unwrap(err)))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(apiFailure(base, resp))
	}
	id := resp.Header.Get(admin.ExportIDHeader)
	tmp, err := os.CreateTemp(filepath.Dir(out), ".export-*.tar")
	if err != nil {
		return &exitError{1, fmt.Errorf("export: %w", err)}
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := checkExportTar(io.TeeReader(resp.Body, tmp)); err != nil {
		return fail(err)
	}
	// The trailer comes after the body's end.
	if _, err := io.Copy(tmp, resp.Body); err != nil {
		return fail(fmt.Errorf("the answer broke off after the tar: %w", err))
	}
	status := resp.Trailer.Get(admin.ExportStatusTrailer)
	var packages int
	var bytes int64
	if n, _ := fmt.Sscanf(status, "ok %d %d", &packages, &bytes); n != 2 {
		return fail(errors.New("the server did not confirm the export whole (no ok trailer)"))
	}
	if err := tmp.Sync(); err != nil {
		return &exitError{1, fmt.Errorf("export %s: %w", out, err)}
	}
	if err := tmp.Close(); err != nil {
		return &exitError{1, fmt.Errorf("export %s: %w", out, err)}
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return &exitError{1, fmt.Errorf("export: %w", err)}
	}
	kind := "export"
	if delta {
		kind = "delta export"
	}
	fmt.Fprintf(stdout, "%s: %d packages (%s) of %v written to %s (through the server at %s)\n", kind, packages, human(bytes), channels, out, base)
	var ok struct{ Committed bool }
	if err := apiPost(base, "/api/v1/export/commit", map[string]any{"id": id}, token, &ok); err != nil {
		return &exitError{1, fmt.Errorf("export: %s is whole, but the server did not record it as exported (a next --delta repeats its packages): %w", out, err)}
	}
	return nil
}

// checkExportTar reads an export tar to its end: the manifest first, then every
// entry the manifest lists, of its size and sha256, each once, and the tar's
// end marker; a tar cut anywhere fails.
func checkExportTar(r io.Reader) error {
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil {
		return fmt.Errorf("the tar: %w", err)
	}
	if hdr.Name != mirror.ManifestName || hdr.Size > 256<<20 {
		return fmt.Errorf("the tar does not start with %s", mirror.ManifestName)
	}
	var m mirror.Manifest
	if err := json.NewDecoder(io.LimitReader(tr, hdr.Size)).Decode(&m); err != nil {
		return fmt.Errorf("the tar's %s: %w", mirror.ManifestName, err)
	}
	want := make(map[string]mirror.ManifestFile, len(m.Files))
	for _, f := range m.Files {
		want[f.Path] = f
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("the tar broke off (%d files still to come): %w", len(want), err)
		}
		f, ok := want[hdr.Name]
		if !ok {
			return fmt.Errorf("the tar's %s is not in its manifest, or twice in the tar", hdr.Name)
		}
		delete(want, hdr.Name)
		h.Reset()
		n, err := io.CopyBuffer(h, tr, buf)
		if err != nil {
			return fmt.Errorf("the tar broke off in %s: %w", hdr.Name, err)
		}
		if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
			return fmt.Errorf("the tar's %s does not match its manifest", hdr.Name)
		}
	}
	for p := range want {
		return fmt.Errorf("the tar ended without %s (%d files of the manifest missing)", p, len(want))
	}
	return nil
}

// uploadProgress reports an upload's bytes, a line every 5 s.
type uploadProgress struct {
	r     io.Reader
	w     io.Writer
	total int64
	mu    sync.Mutex
	n     int64
	last  time.Time
	start time.Time
}

func (p *uploadProgress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	p.n += int64(n)
	if time.Since(p.last) >= 5*time.Second {
		p.last = time.Now()
		rate := float64(p.n) / max(time.Since(p.start).Seconds(), 0.001)
		fmt.Fprintf(p.w, "import: uploaded %s/%s, %s/s\n", human(p.n), human(p.total), human(int64(rate)))
	}
	p.mu.Unlock()
	return n, err
}

// remoteImport uploads the tar at path to the server at base, which verifies and
// commits it whole, as the local import does.
func remoteImport(ctx context.Context, base, token, path string, stdout io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return &exitError{1, fmt.Errorf("import: %w", err)}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return &exitError{1, fmt.Errorf("import: %w", err)}
	}
	fmt.Fprintf(stdout, "import: uploading %s (%s) to the server at %s\n", path, human(st.Size()), base)
	now := time.Now()
	body := &uploadProgress{r: f, w: stdout, total: st.Size(), last: now, start: now}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/import", io.NopCloser(body))
	if err != nil {
		return &exitError{1, fmt.Errorf("--server %q: %w", base, err)}
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", admin.TarType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := streamClient.Do(req)
	if err != nil {
		return &exitError{1, fmt.Errorf("import %s through %s: %w; the server imports nothing of a cut upload", path, base, errors.Unwrap(err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &exitError{1, fmt.Errorf("import %s: %w", path, apiFailure(base, resp))}
	}
	var job admin.Job
	if err := json.NewDecoder(resp.Body).Decode(&job); err != nil {
		return &exitError{1, fmt.Errorf("import %s: server %s: %w", path, base, err)}
	}
	fmt.Fprintf(stdout, "import: %d packages (%s) into %v (job %s on the server at %s)\n", job.Packages, human(job.PackageSize), job.Channels, job.ID, base)
	return nil
}
