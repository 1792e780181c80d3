package mirror

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/repodata"
)

// The export format: a plain tar whose first entry is manifest.json, then for each
// channel and subdir <channel>/<subdir>/repodata.json and repodata.json.zst (holding
// exactly the exported packages' records) and the package files. Untarred, each
// <channel> directory is a conda channel: a file:// channel for conda, or an
// upstream for another condaproxy.

// ManifestName is the tar's first entry.
const ManifestName = "manifest.json"

// Manifest lists every file of an export with its size and sha256.
type Manifest struct {
	Format  string         `json:"format"` // "condaproxy-export"
	Version int            `json:"version"`
	Created time.Time      `json:"created"`
	Source  string         `json:"source"` // the configuration it was made from
	Delta   bool           `json:"delta"`  // only what earlier exports had not written
	Files   []ManifestFile `json:"files"`
}

// ManifestFile is one file of the tar.
type ManifestFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

const manifestFormat = "condaproxy-export"

// ExportOptions configure an export.
type ExportOptions struct {
	Channels []string // the channels to export
	Delta    bool     // only packages no earlier export wrote
	Source   string
	// TempDir holds the repodata documents while the manifest is made (small:
	// the records, not the packages). Default os.TempDir().
	TempDir string
}

// ExportReport is what an export wrote.
type ExportReport struct {
	Packages int
	Bytes    int64
}

type exportPart struct {
	channel, subdir string
	json, zst       *os.File // temp files
	jsonSum, zstSum ManifestFile
	files           []proxy.ExportFile
}

// Export streams the cached, filter-passing packages of the channels, with their
// repodata, as a tar to w. Packages are read from the cache as they are written:
// memory and temp space stay at the size of the repodata, whatever the export's.
func Export(ctx context.Context, srv *proxy.Server, store *cache.Store, w io.Writer, o ExportOptions) (*ExportReport, error) {
	var parts []*exportPart
	defer func() {
		for _, p := range parts {
			for _, f := range []*os.File{p.json, p.zst} {
				if f != nil {
					f.Close()
					os.Remove(f.Name())
				}
			}
		}
	}()
	m := Manifest{Format: manifestFormat, Version: 1, Created: time.Now().UTC(), Source: o.Source, Delta: o.Delta}
	for _, ch := range o.Channels {
		subdirs, err := srv.CachedSubdirs(ch)
		if err != nil {
			return nil, err
		}
		for _, sub := range subdirs {
			p := &exportPart{channel: ch, subdir: sub}
			parts = append(parts, p)
			if p.json, err = os.CreateTemp(o.TempDir, "export-*.json"); err != nil {
				return nil, err
			}
			var include func(string) bool
			if o.Delta {
				include = func(fn string) bool { return !srv.Exported(ch, sub, fn) }
			}
			h := sha256.New()
			cw := &counting{w: io.MultiWriter(p.json, h)}
			if p.files, err = srv.ExportSubdir(ctx, ch, sub, include, cw); err != nil {
				return nil, fmt.Errorf("export %s/%s: %w", ch, sub, err)
			}
			dir := path.Join(ch, sub)
			p.jsonSum = ManifestFile{Path: dir + "/repodata.json", Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}
			if p.zst, err = os.CreateTemp(o.TempDir, "export-*.zst"); err != nil {
				return nil, err
			}
			p.json.Seek(0, io.SeekStart)
			h.Reset()
			zcw := &counting{w: io.MultiWriter(p.zst, h)}
			if err := repodata.Compress(zcw, p.json, "zst"); err != nil {
				return nil, err
			}
			p.zstSum = ManifestFile{Path: dir + "/repodata.json.zst", Size: zcw.n, SHA256: hex.EncodeToString(h.Sum(nil))}
			m.Files = append(m.Files, p.jsonSum, p.zstSum)
			for _, f := range p.files {
				m.Files = append(m.Files, ManifestFile{Path: dir + "/" + f.Filename, Size: f.Size, SHA256: f.SHA256})
			}
		}
	}
	// <channel>/channeldata.json lists the subdirs, so the untarred tree used as an
	// upstream tells a sync (or conda) which subdirs there are.
	channeldata := map[string][]byte{}
	for _, ch := range o.Channels {
		var subs []string
		for _, p := range parts {
			if p.channel == ch {
				subs = append(subs, p.subdir)
			}
		}
		sort.Strings(subs)
		b, _ := json.MarshalIndent(map[string]any{"channeldata_version": 1, "packages": map[string]any{}, "subdirs": subs}, "", " ")
		channeldata[ch] = b
		sum := sha256.Sum256(b)
		m.Files = append(m.Files, ManifestFile{Path: ch + "/channeldata.json", Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
	}
	tw := tar.NewWriter(w)
	mb, _ := json.MarshalIndent(m, "", " ")
	if err := writeEntry(tw, ManifestName, int64(len(mb)), bytes.NewReader(mb)); err != nil {
		return nil, err
	}
	for _, ch := range o.Channels {
		b := channeldata[ch]
		if err := writeEntry(tw, ch+"/channeldata.json", int64(len(b)), bytes.NewReader(b)); err != nil {
			return nil, err
		}
	}
	rep := &ExportReport{}
	for _, p := range parts {
		for _, f := range []struct {
			file *os.File
			sum  ManifestFile
		}{{p.json, p.jsonSum}, {p.zst, p.zstSum}} {
			f.file.Seek(0, io.SeekStart)
			if err := writeEntry(tw, f.sum.Path, f.sum.Size, f.file); err != nil {
				return nil, err
			}
		}
		for _, f := range p.files {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			blob, err := store.OpenBlob(f.SHA256)
			if err != nil {
				return nil, fmt.Errorf("export %s/%s/%s: %w", p.channel, p.subdir, f.Filename, err)
			}
			err = writeEntry(tw, path.Join(p.channel, p.subdir, f.Filename), blob.Size, blob)
			blob.Close()
			if err != nil {
				return nil, err
			}
			rep.Packages++
			rep.Bytes += blob.Size
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	// Only a complete tar counts as exported, for the next --delta.
	for _, p := range parts {
		for _, f := range p.files {
			if err := srv.MarkExported(p.channel, p.subdir, f.Filename); err != nil {
				return nil, err
			}
		}
	}
	return rep, nil
}

func writeEntry(tw *tar.Writer, name string, size int64, r io.Reader) error {
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: time.Now().UTC(), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, r)
	if err == nil && n != size {
		err = fmt.Errorf("%s: %d bytes, want %d", name, n, size)
	}
	return err
}

type counting struct {
	w io.Writer
	n int64
}

func (c *counting) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ImportReport is what an import brought.
type ImportReport struct {
	Channels []string
	Packages int
	Bytes    int64
}

// ErrRefused is an import refused as a whole; the cache is as it was.
var ErrRefused = errors.New("import refused; nothing was imported")

// Import reads an export tar from r. Every file is checked against the manifest
// (size and sha256) and every package against its subdir's repodata before any of
// it becomes visible; a truncated or tampered tar is refused whole, naming the first
// bad file, and leaves the cache as it was. known says whether a channel is in the
// configuration (an import only fills configured channels).
func Import(ctx context.Context, srv *proxy.Server, store *cache.Store, r io.Reader, known func(channel string) bool) (*ImportReport, error) {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
	}
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil {
		return nil, refuse("not a condaproxy export: %v", err)
	}
	if hdr.Name != ManifestName || hdr.Size > 256<<20 {
		return nil, refuse("not a condaproxy export: the first file is %q, not %s", hdr.Name, ManifestName)
	}
	var m Manifest
	if err := json.NewDecoder(io.LimitReader(tr, hdr.Size)).Decode(&m); err != nil || m.Format != manifestFormat {
		return nil, refuse("%s is not a condaproxy export manifest", ManifestName)
	}
	if m.Version > 1 {
		return nil, refuse("export format version %d is newer than this condaproxy reads (1)", m.Version)
	}
	want := map[string]ManifestFile{}
	for _, f := range m.Files {
		if !cleanTarPath(f.Path) {
			return nil, refuse("manifest names a path outside the tree: %q", f.Path)
		}
		want[f.Path] = f
	}
	type subdirKey struct{ channel, subdir string }
	docs := map[subdirKey][]byte{}
	pkgs := map[subdirKey][]proxy.ImportedPackage{}
	var temps []*cache.Temp
	defer func() {
		for _, t := range temps {
			t.Abort() // no-op for the committed ones
		}
	}()
	seen := map[string]bool{}
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, refuse("the tar is damaged after %d files: %v", len(seen), err)
		}
		mf, ok := want[hdr.Name]
		if !ok || hdr.Typeflag != tar.TypeReg || seen[hdr.Name] {
			return nil, refuse("%s: not in the manifest (or not a plain file, or twice)", hdr.Name)
		}
		seen[hdr.Name] = true
		dir, base := path.Split(hdr.Name)
		if base == "channeldata.json" {
			// The channel's list of subdirs, for clients and syncs of the untarred
			// tree; the import itself needs nothing from it.
			if _, err := readVerified(tr, mf); err != nil {
				return nil, refuse("%s: %v", hdr.Name, err)
			}
			continue
		}
		// <channel>/<subdir>/<file>; a channel name may hold '/' (pkgs/main).
		dir = strings.TrimSuffix(dir, "/")
		i := strings.LastIndex(dir, "/")
		chName, sub := dir[:i], dir[i+1:]
		key := subdirKey{chName, sub}
		if !known(chName) {
			return nil, refuse("%s: channel %q is not in the configuration; add it (a channel with no upstreams serves what imports bring)", hdr.Name, chName)
		}
		switch base {
		case "repodata.json", "repodata.json.zst":
			data, err := readVerified(tr, mf)
			if err != nil {
				return nil, refuse("%s: %v", hdr.Name, err)
			}
			if base == "repodata.json" {
				if _, err := repodata.Scan(data, func(*repodata.Record) error { return nil }); err != nil {
					return nil, refuse("%s: %v", hdr.Name, err)
				}
				docs[key] = data
			}
		default:
			t, err := store.NewTemp()
			if err != nil {
				return nil, err
			}
			temps = append(temps, t)
			if _, err := io.Copy(t, tr); err != nil {
				return nil, refuse("%s: truncated: %v", hdr.Name, err)
			}
			d := cache.Digest{Size: mf.Size, SHA256: mf.SHA256}
			if _, err := t.Verify(d); err != nil {
				return nil, refuse("%s: %v", hdr.Name, err)
			}
			pkgs[key] = append(pkgs[key], proxy.ImportedPackage{Filename: base, Temp: t, Digest: d})
		}
	}
	var missing []string
	for p := range want {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, refuse("truncated: %s is in the manifest but not in the tar (%d files missing)", missing[0], len(missing))
	}
	// Every package must be a record of its subdir's repodata, with the same size
	// and sha256, and every record must have its package.
	rep := &ImportReport{}
	var keys []subdirKey
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].channel+"/"+keys[i].subdir < keys[j].channel+"/"+keys[j].subdir })
	for _, k := range keys {
		recs := map[string]*repodata.Record{}
		repodata.Scan(docs[k], func(r *repodata.Record) error {
			cp := *r
			recs[strings.Clone(r.Filename)] = &cp
			return nil
		})
		have := map[string]bool{}
		for _, p := range pkgs[k] {
			r, ok := recs[p.Filename]
			if !ok {
				return nil, refuse("%s/%s/%s: no record in its repodata.json", k.channel, k.subdir, p.Filename)
			}
			if (r.SHA256 != "" && !strings.EqualFold(r.SHA256, p.Digest.SHA256)) || (r.Size >= 0 && r.Size != p.Digest.Size) {
				return nil, refuse("%s/%s/%s: its repodata record says sha256 %s size %d, the file is %s size %d",
					k.channel, k.subdir, p.Filename, r.SHA256, r.Size, p.Digest.SHA256, p.Digest.Size)
			}
			if r.SHA256 == "" {
				// An old record with md5 only: the manifest's sha256 proves the tar
				// was not changed in transit, the md5 that the file is the record's.
				if r.MD5 == "" {
					return nil, refuse("%s/%s/%s: its repodata record has no checksum", k.channel, k.subdir, p.Filename)
				}
				if _, err := p.Temp.Verify(cache.Digest{Size: -1, MD5: r.MD5}); err != nil {
					return nil, refuse("%s/%s/%s: %v (the repodata record's md5)", k.channel, k.subdir, p.Filename, err)
				}
			}
			have[p.Filename] = true
		}
		for fn := range recs {
			if !have[fn] {
				return nil, refuse("%s/%s/repodata.json lists %s, which the tar does not hold", k.channel, k.subdir, fn)
			}
		}
	}
	for k := range pkgs {
		if docs[k] == nil {
			return nil, refuse("%s/%s: packages without a repodata.json", k.channel, k.subdir)
		}
	}
	// Verified whole: make it visible, subdir by subdir.
	chans := map[string]bool{}
	for _, k := range keys {
		if err := srv.CommitImport(k.channel, k.subdir, docs[k], pkgs[k]); err != nil {
			return nil, fmt.Errorf("import %s/%s: %w", k.channel, k.subdir, err)
		}
		for _, p := range pkgs[k] {
			rep.Packages++
			rep.Bytes += p.Digest.Size
		}
		chans[k.channel] = true
	}
	for c := range chans {
		rep.Channels = append(rep.Channels, c)
	}
	sort.Strings(rep.Channels)
	return rep, nil
}

// cleanTarPath accepts "<channel>/<subdir>/<file>" paths only: relative, no dot
// segments, no empty segments.
func cleanTarPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || path.Clean(p) != p {
		return false
	}
	parts := strings.Split(p, "/")
	if len(parts) < 3 && !(len(parts) == 2 && parts[1] == "channeldata.json") {
		return false
	}
	for _, s := range parts {
		if s == "" || s == "." || s == ".." {
			return false
		}
	}
	return true
}

func readVerified(r io.Reader, mf ManifestFile) ([]byte, error) {
	if mf.Size > 4<<30 {
		return nil, fmt.Errorf("too large")
	}
	data := make([]byte, mf.Size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("truncated: %v", err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, mf.SHA256) {
		return nil, fmt.Errorf("sha256 %s, the manifest says %s", got, mf.SHA256)
	}
	return data, nil
}
