package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/admin"
)

// Maintenance commands through a running server (issue 13): clean, export and
// import go through its admin API instead of refusing.

// rmManifest is a tar's manifest as comparable lines: path and sha256 of every
// package and repodata.json (what the export's content is), sorted.
func rmManifest(t *testing.T, p string) []string {
	t.Helper()
	x := mxReadTar(t, p)
	var out []string
	for _, f := range x.manifest.Files {
		if mxIsPackage(f.Path) || strings.HasSuffix(f.Path, "/repodata.json") {
			out = append(out, f.Path+" "+f.SHA256)
		}
	}
	slices.Sort(out)
	return out
}

func rmDirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestRemoteCleanThroughServer(t *testing.T) {
	ch, up, data, _ := mxSynced(t)
	blobs := mxBlobs(t, data)
	cfg := mxConfig(t, data, mxChan{name: "zlib", urls: []string{up.url()},
		extra: "    blacklist: [zlib]\n    whitelist: [\"zlib[build=h1de35cc_3]\"]\n"})
	srv := mxServe(t, cfg)
	var gone []mxFile
	var total int64
	for _, f := range ch.files {
		if f.Subdir != "osx-64" {
			gone = append(gone, f)
			total += f.Size
		}
	}
	out := mxMustRun(t, "clean", "-c", cfg, "--dry-run")
	if !strings.Contains(out, "through the server at "+srv.base) {
		t.Errorf("clean --dry-run did not go through the server:\n%s", out)
	}
	for _, f := range gone {
		if want := fmt.Sprintf("would remove zlib/%s (%s), hidden by", f.path(), human(f.Size)); !strings.Contains(out, want) {
			t.Errorf("clean --dry-run: stdout lacks %q:\n%s", want, out)
		}
	}
	if want := fmt.Sprintf("clean: would remove %d files (%s)", len(gone), human(total)); !strings.Contains(out, want) {
		t.Errorf("clean --dry-run: stdout lacks %q:\n%s", want, out)
	}
	if got := mxBlobs(t, data); !slices.Equal(got, blobs) {
		t.Errorf("clean --dry-run through the server changed blobs")
	}

	out = mxMustRun(t, "clean", "-c", cfg, "--server", srv.base)
	if want := fmt.Sprintf("clean: removed %d files (%s)", len(gone), human(total)); !strings.Contains(out, want) {
		t.Errorf("clean: stdout lacks %q:\n%s", want, out)
	}
	for _, f := range ch.files {
		has := mxHasBlob(t, data, f.SHA256)
		if f.Subdir == "osx-64" && !has || f.Subdir != "osx-64" && has {
			t.Errorf("after clean through the server, blob of %s present: %v", f.path(), has)
		}
	}
	// The server keeps serving what passes, from the cache.
	before := up.pkgTotal()
	for _, f := range ch.files {
		if f.Subdir != "osx-64" {
			continue
		}
		if code, body := mxGet(t, srv.base+"/zlib/"+f.path()); code != 200 || mxSHA(body) != f.SHA256 {
			t.Errorf("GET /zlib/%s after clean: %d", f.path(), code)
		}
	}
	if n := up.pkgTotal() - before; n != 0 {
		t.Errorf("the server fetched %d packages upstream after clean", n)
	}
	var jobs []admin.Job
	if err := apiGet(srv.base, "/api/v1/jobs", nil, "", &jobs); err != nil || len(jobs) < 2 || jobs[0].Kind != "clean" || jobs[0].State != "done" {
		t.Errorf("GET /api/v1/jobs: %+v, %v; want the clean jobs done", jobs, err)
	} else if code, page := mxGet(t, srv.base+"/ui/jobs/"+jobs[0].ID); code != 200 || !strings.Contains(string(page), "Clean") ||
		!strings.Contains(string(page), "hidden by") {
		t.Errorf("the clean job's page: %d\n%.2000s", code, page)
	}
}

func TestRemoteExportThroughServer(t *testing.T) {
	late := "win-32/zlib-1.2.11-h62dcd97_3.conda"
	ch, _, _, cfg := mxSynced(t, late)
	dir := t.TempDir()
	local := filepath.Join(dir, "local.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", local)
	srv := mxServe(t, cfg)

	remote := filepath.Join(dir, "remote.tar")
	out := mxMustRun(t, "export", "-c", cfg, "-o", remote)
	if !strings.Contains(out, "through the server at "+srv.base) || !strings.Contains(out, fmt.Sprintf("export: %d packages (%s)", len(ch.files), human(ch.bytes()))) {
		t.Errorf("export through the server: %s", out)
	}
	if a, b := rmManifest(t, local), rmManifest(t, remote); !slices.Equal(a, b) {
		t.Errorf("export through the server holds\n%v\nthe local export\n%v", b, a)
	}
	if got := rmDirEntries(t, dir); !slices.Equal(got, []string{"local.tar", "remote.tar"}) {
		t.Errorf("beside the tars: %v", got)
	}

	// One more package upstream: a sync through the server caches it, a delta
	// through the server holds it alone, and the next delta nothing.
	mxAddBack(t, ch, late)
	mxMustRun(t, "sync", "-c", cfg)
	// A delta read whole by a client that never says it has it: the ledger
	// stays where it was.
	resp, err := http.Post(srv.base+"/api/v1/export", "application/json", strings.NewReader(`{"delta": true}`))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err != nil || n == 0 || !strings.HasPrefix(resp.Trailer.Get(admin.ExportStatusTrailer), "ok 1 ") {
		t.Errorf("a delta read raw: %d bytes, %v, trailer %v", n, err, resp.Trailer)
	}
	resp.Body.Close()
	delta := filepath.Join(dir, "delta.tar")
	if out := mxMustRun(t, "export", "-c", cfg, "-o", delta, "--delta", "--server", srv.base); !strings.Contains(out, "delta export: 1 packages") {
		t.Errorf("export --delta through the server: %s", out)
	}
	if got := mxReadTar(t, delta).packages(); !slices.Equal(got, []string{"zlib/" + late}) {
		t.Errorf("the delta holds %v, want only %s", got, late)
	}
	delta2 := filepath.Join(dir, "delta2.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", delta2, "--delta")
	if got := mxReadTar(t, delta2).packages(); len(got) != 0 {
		t.Errorf("a delta right after a delta through the server holds %v", got)
	}
	// An unknown channel: a usage error before anything is asked.
	if code, _, stderr := mxRun(t, "export", "-c", cfg, "-o", filepath.Join(dir, "x.tar"), "--channel", "nope"); code != 2 {
		t.Errorf("export --channel nope: exit %d (%s), want 2", code, stderr)
	}
}

// A server whose export breaks off: the client writes nothing to -o, and says
// which server failed. The fake plays a server that drops the connection
// midway (as admin does), and one that ends its answer without the ok trailer.
func TestRemoteExportCutLeavesNoFile(t *testing.T) {
	_, _, _, cfg := mxSynced(t)
	dir := t.TempDir()
	whole := filepath.Join(dir, "whole.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", whole)
	raw, err := os.ReadFile(whole)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter)
	}{
		{"connection dropped", func(w http.ResponseWriter) {
			w.Write(raw[:len(raw)/2])
			panic(http.ErrAbortHandler)
		}},
		{"cut tar, no trailer", func(w http.ResponseWriter) { w.Write(raw[:len(raw)/2]) }},
		{"whole tar, no ok trailer", func(w http.ResponseWriter) { w.Write(raw) }},
		{"cut tar with an ok trailer", func(w http.ResponseWriter) {
			w.Write(raw[:len(raw)-1024-512])
			w.Header().Set(admin.ExportStatusTrailer, "ok 1 1")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", admin.TarType)
				w.Header().Set("Trailer", admin.ExportStatusTrailer)
				w.Header().Set(admin.ExportIDHeader, "x")
				w.WriteHeader(200)
				tc.serve(w)
			}))
			defer fake.Close()
			out := filepath.Join(t.TempDir(), "cut.tar")
			code, _, stderr := mxRun(t, "export", "-c", cfg, "-o", out, "--server", fake.URL)
			if code != 1 || !strings.Contains(stderr, fake.URL) {
				t.Errorf("exit %d, stderr %q; want 1 naming the server", code, stderr)
			}
			if got := rmDirEntries(t, filepath.Dir(out)); len(got) != 0 {
				t.Errorf("the failed export left %v", got)
			}
		})
	}
}

func TestRemoteImportThroughServer(t *testing.T) {
	ch, _, _, cfg := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", tarPath)
	x := mxReadTar(t, tarPath)

	data2 := filepath.Join(t.TempDir(), "data")
	cfg2 := mxConfig(t, data2, mxChan{name: "zlib"}) // no upstreams: only what imports bring
	srv := mxServe(t, cfg2)
	blobs := mxBlobs(t, data2)

	// Tampered and truncated tars are refused whole; the cache is unchanged.
	var victim string
	for _, name := range x.names {
		if mxIsPackage(name) {
			victim = name
		}
	}
	off, size := x.offset[victim], int64(len(x.data[victim]))
	tampered := bytes.Clone(x.raw)
	tampered[off+size/2] ^= 1
	for name, b := range map[string][]byte{"tampered": tampered, "truncated": x.raw[:off+size/2]} {
		p := filepath.Join(t.TempDir(), name+".tar")
		os.WriteFile(p, b, 0o644)
		code, stdout, stderr := mxRun(t, "import", "-c", cfg2, p)
		if code != 1 || !strings.Contains(stderr, srv.base) || !strings.Contains(stderr, "refused") {
			t.Errorf("import of a %s tar through the server: exit %d, stderr %q (stdout %q); want 1, refused, naming the server", name, code, stderr, stdout)
		}
		if got := mxBlobs(t, data2); !slices.Equal(got, blobs) {
			t.Errorf("the refused %s import left blobs %v", name, got)
		}
		if got := mxTmpFiles(t, data2); len(got) != 0 {
			t.Errorf("the refused %s import left tmp/%v", name, got)
		}
		if code, _ := mxGet(t, srv.base+"/zlib/"+ch.files[0].path()); code == 200 {
			t.Errorf("after the refused %s import, a package is served", name)
		}
	}

	out := mxMustRun(t, "import", "-c", cfg2, tarPath)
	if want := fmt.Sprintf("import: %d packages (%s) into [zlib]", len(ch.files), human(ch.bytes())); !strings.Contains(out, want) || !strings.Contains(out, srv.base) {
		t.Errorf("import through the server: stdout lacks %q:\n%s", want, out)
	}
	mxCheckServes(t, srv.base, "zlib", ch.files) // at once, no restart
}

// A client that goes away mid-upload leaves the cache as it was; so does an
// upload refused for its size, or without the admin token when one is set.
func TestRemoteImportCutUploadAndToken(t *testing.T) {
	ch, _, _, cfg := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", tarPath)
	raw, _ := os.ReadFile(tarPath)

	data2 := filepath.Join(t.TempDir(), "data")
	cfg2 := mxConfig(t, data2, mxChan{name: "zlib"})
	cfgNoToken := cfg2
	b, _ := os.ReadFile(cfg2)
	cfg2 = filepath.Join(t.TempDir(), "with-token.yaml")
	os.WriteFile(cfg2, append(b, "auth:\n  admin_token: s3cret-admin\n"...), 0o644)
	srv := mxServe(t, cfg2)
	blobs := mxBlobs(t, data2)

	// Half the tar, then the connection closes.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /api/v1/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-admin\r\nContent-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n", len(raw))
	conn.Write(raw[:len(raw)*2/3])
	time.Sleep(200 * time.Millisecond)
	conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var jobs []admin.Job
		if err := apiGet(srv.base, "/api/v1/jobs", nil, "s3cret-admin", &jobs); err != nil {
			t.Fatal(err)
		}
		if len(jobs) == 1 && jobs[0].Kind == "import" && jobs[0].State == "failed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed import job after the cut upload: %+v", jobs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := mxBlobs(t, data2); !slices.Equal(got, blobs) {
		t.Errorf("the cut upload left blobs %v", got)
	}
	if got := mxTmpFiles(t, data2); len(got) != 0 {
		t.Errorf("the cut upload left tmp/%v", got)
	}

	// No token: 401, from the API and through the CLI.
	resp, err := http.Post(srv.base+"/api/v1/import", admin.TarType, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /api/v1/import without the admin token: %d, want 401", resp.StatusCode)
	}
	for _, args := range [][]string{
		{"import", "-c", cfgNoToken, tarPath, "--server", srv.base},
		{"clean", "-c", cfgNoToken, "--server", srv.base},
		{"export", "-c", cfgNoToken, "-o", filepath.Join(t.TempDir(), "x.tar"), "--server", srv.base},
	} {
		if code, _, stderr := mxRun(t, args...); code != 1 || !strings.Contains(stderr, "401") {
			t.Errorf("%v without the admin token: exit %d, stderr %q; want 1 and 401", args[0], code, stderr)
		}
	}
	// Not a tar's Content-Type: 415.
	req, _ := http.NewRequest(http.MethodPost, srv.base+"/api/v1/import", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer s3cret-admin")
	req.Header.Set("Content-Type", "text/plain")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("an import as text/plain: %v %v, want 415", resp, err)
	}
	if got := mxBlobs(t, data2); !slices.Equal(got, blobs) {
		t.Errorf("the refused uploads left blobs %v", got)
	}
	// With the token, the upload goes in whole.
	mxMustRun(t, "import", "-c", cfg2, tarPath)
	mxCheckServes(t, srv.base, "zlib", ch.files)
	var jobs []admin.Job
	apiGet(srv.base, "/api/v1/jobs", nil, "", &jobs)
	if len(jobs) == 0 || jobs[0].Kind != "import" || jobs[0].State != "done" || jobs[0].Packages != len(ch.files) {
		b, _ := json.Marshal(jobs)
		t.Errorf("jobs after the import: %s", b)
	}
}

// An upload that stalls fails after limits.upstream_idle_timeout, and leaves
// nothing: a slow client cannot hold its channels.
func TestRemoteImportStalledUpload(t *testing.T) {
	_, _, _, cfg := mxSynced(t)
	tarPath := filepath.Join(t.TempDir(), "zlib.tar")
	mxMustRun(t, "export", "-c", cfg, "-o", tarPath)
	raw, _ := os.ReadFile(tarPath)
	data2 := filepath.Join(t.TempDir(), "data")
	cfg2 := mxConfig(t, data2, mxChan{name: "zlib"})
	b, _ := os.ReadFile(cfg2)
	os.WriteFile(cfg2, append(b, "limits:\n  upstream_idle_timeout: 1s\n"...), 0o644)
	srv := mxServe(t, cfg2)
	blobs := mxBlobs(t, data2)

	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/import HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n",
		strings.TrimPrefix(srv.base, "http://"), len(raw))
	conn.Write(raw[:len(raw)/2])
	start := time.Now()
	// The server answers (or drops the connection) once the upload stalled.
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	reply, _ := io.ReadAll(conn)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the stalled upload held on %v", took)
	}
	if len(reply) > 0 && !strings.Contains(string(reply), " 400 ") {
		t.Errorf("the stalled upload's answer: %.300s", reply)
	}
	var jobs []admin.Job
	if err := apiGet(srv.base, "/api/v1/jobs", nil, "", &jobs); err != nil || len(jobs) != 1 || jobs[0].State != "failed" {
		t.Errorf("jobs after the stalled upload: %+v %v", jobs, err)
	}
	if got := mxBlobs(t, data2); !slices.Equal(got, blobs) {
		t.Errorf("the stalled upload left blobs %v", got)
	}
	if got := mxTmpFiles(t, data2); len(got) != 0 {
		t.Errorf("the stalled upload left tmp/%v", got)
	}
}
