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
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/condaproxy/condaproxy/blobstore"
	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/proxy"
	"github.com/condaproxy/condaproxy/repodata"
	"github.com/condaproxy/condaproxy/shards"
)

// The export format: a plain tar whose first entry is manifest.json, then for each
// channel and subdir <channel>/<subdir>/repodata.json and repodata.json.zst (holding
// exactly the exported packages' records), its sharded repodata (CEP-16:
// repodata_shards.msgpack.zst and shards/<sha256>.msgpack.zst, made from that
// repodata.json, so that a site serving the untarred tree with a plain web server
// serves shards too) and the package files. Untarred, each
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

// manifestVersion is the export format written, and the newest one read.
// Version 2 added sharded repodata (<subdir>/repodata_shards.msgpack.zst and
// shards/): an importer of version 1 refuses those entries, so it is told the
// tar is newer than it reads rather than that a shard is an unknown channel.
const manifestVersion = 2

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
	// The sharded repodata: the index in memory, the shards one after the
	// other in a temp file (shardAt says where each is).
	index    []byte
	indexSum ManifestFile
	shards   *os.File
	shardAt  []shardSpan
}

type shardSpan struct {
	sum       ManifestFile
	off, size int64
}

// Export streams the cached, filter-passing packages of the channels, with their
// repodata, as a tar to w. Packages are read from the cache as they are written:
// memory and temp space stay at the size of the repodata, whatever the export's.
// src lists and records what is exported; blobs holds the packages' bytes.
func Export(ctx context.Context, src ExportSource, blobs BlobOpener, w io.Writer, o ExportOptions) (*ExportReport, error) {
	var parts []*exportPart
	defer func() {
		for _, p := range parts {
			for _, f := range []*os.File{p.json, p.zst, p.shards} {
				if f != nil {
					f.Close()
					os.Remove(f.Name())
				}
			}
		}
	}()
	m := Manifest{Format: manifestFormat, Version: manifestVersion, Created: time.Now().UTC(), Source: o.Source, Delta: o.Delta}
	for _, ch := range o.Channels {
		subdirs, err := src.CachedSubdirs(ch)
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
				include = func(fn string) bool { return !src.Exported(ch, sub, fn) }
			}
			h := sha256.New()
			cw := &counting{w: io.MultiWriter(p.json, h)}
			if p.files, err = src.ExportSubdir(ctx, ch, sub, include, cw); err != nil {
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
			if err := exportShards(p, dir, m.Created, o.TempDir); err != nil {
				return nil, fmt.Errorf("export %s/%s: sharded repodata: %w", ch, sub, err)
			}
			m.Files = append(m.Files, p.indexSum)
			for _, s := range p.shardAt {
				m.Files = append(m.Files, s.sum)
			}
			for _, f := range p.files {
				m.Files = append(m.Files, ManifestFile{Path: dir + "/" + f.Filename, Size: f.Size, SHA256: f.SHA256})
			}
		}
	}
	// <channel>/channeldata.json: upstream's, cut to exactly what the export
	// holds (the names with an exported record, the exported subdirs), so the
	// untarred tree used as an upstream tells a sync (or conda) which subdirs
	// there are, and lists nothing the filter hid.
	channeldata := map[string][]byte{}
	for _, ch := range o.Channels {
		files := map[string][]string{}
		for _, p := range parts {
			if p.channel == ch {
				fns := make([]string, 0, len(p.files))
				for _, f := range p.files {
					fns = append(fns, f.Filename)
				}
				files[p.subdir] = fns
			}
		}
		b, err := src.ExportChannelData(ctx, ch, files)
		if err != nil {
			return nil, fmt.Errorf("export %s/channeldata.json: %w", ch, err)
		}
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
		// Each shard before the index that names it, as a server writes them.
		for _, s := range p.shardAt {
			if err := writeEntry(tw, s.sum.Path, s.size, io.NewSectionReader(p.shards, s.off, s.size)); err != nil {
				return nil, err
			}
		}
		if err := writeEntry(tw, p.indexSum.Path, p.indexSum.Size, bytes.NewReader(p.index)); err != nil {
			return nil, err
		}
		for _, f := range p.files {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			blob, err := blobs.OpenBlob(f.SHA256)
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
			if err := src.MarkExported(p.channel, p.subdir, f.Filename); err != nil {
				return nil, err
			}
		}
	}
	return rep, nil
}

// exportShards makes p's sharded repodata from its repodata.json (the records
// exported, nothing else): shards to a temp file, the index in memory.
func exportShards(p *exportPart, dir string, created time.Time, tempDir string) error {
	doc, err := os.ReadFile(p.json.Name())
	if err != nil {
		return err
	}
	if p.shards, err = os.CreateTemp(tempDir, "export-*.shards"); err != nil {
		return err
	}
	var off int64
	p.index, err = shards.Build(doc, p.subdir, created, func(sum string, b []byte) error {
		if _, err := p.shards.Write(b); err != nil {
			return err
		}
		p.shardAt = append(p.shardAt, shardSpan{sum: ManifestFile{Path: dir + "/shards/" + sum + ".msgpack.zst",
			Size: int64(len(b)), SHA256: sum}, off: off, size: int64(len(b))})
		off += int64(len(b))
		return nil
	})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(p.index)
	p.indexSum = ManifestFile{Path: dir + "/repodata_shards.msgpack.zst", Size: int64(len(p.index)), SHA256: hex.EncodeToString(sum[:])}
	return nil
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

// ImportOptions configure an import.
type ImportOptions struct {
	// Known says whether a channel is in the configuration: an import only fills
	// configured channels (nil: none).
	Known func(channel string) bool
	// MaxRepodata bounds each repodata.json and repodata.json.zst entry
	// (limits.max_repodata): a subdir's repodata is read whole to be checked.
	// Default config.DefaultMaxRepodata.
	MaxRepodata int64
	// MaxMetadata bounds each channeldata.json entry (limits.max_metadata).
	// Default config.DefaultMaxMetadata.
	MaxMetadata int64

	// fault is handed to CommitImport: tests stop the commit between its steps.
	fault func(step string) error
	// maxFiles replaces maxManifestFiles: tests pass the bound at a small scale.
	maxFiles int
}

// maxManifest bounds manifest.json: Export writes under 200 bytes a file, so
// room for a million files and more.
const maxManifest = 256 << 20

// maxManifestFiles bounds the files a manifest may list, and with it the
// memory an import holds for them: 56 bytes a file beside its path, about 130
// MB at the bound for real paths. maxManifest alone does not bound it: in the
// same bytes, a manifest of tiny entries lists millions more. A million
// packages is terabytes in one tar at the sizes conda packages have; a site
// that moves that much moves it in several tars (a channel each, or --delta
// increments), as it must past about 1.4 million files anyway, all that
// maxManifest holds of the entries Export writes.
const maxManifestFiles = 1_000_000

// ErrRefused is an import refused as a whole; the cache is as it was.
var ErrRefused = errors.New("import refused; nothing was imported")

type subdirKey struct{ channel, subdir string }

func (k subdirKey) String() string { return k.channel + "/" + k.subdir }

// Import reads an export tar from r. It stages, verifies, then commits: every
// entry is checked against the manifest (size and sha256) as it is streamed to a
// closed file in the store's tmp/; then every package against its subdir's
// repodata, one subdir's repodata in memory at a time; only then does the whole
// import become visible, in one commit (dst.CommitImport). A truncated
// or tampered tar is refused whole, naming the first bad entry, and leaves the
// cache as it was; so does a crash at any point. Memory stays bounded whatever
// the tar claims (packages go to disk, never to memory; repodata is bounded by
// MaxRepodata, the manifest by maxManifestFiles), and so do open files (one
// entry's at a time). A failure of the data directory (a full disk) or of the
// tar's own file is returned as itself, not as ErrRefused: the tar may be fine.
func Import(ctx context.Context, dst ImportTarget, stage Stager, r io.Reader, o ImportOptions) (*ImportReport, error) {
	if o.MaxRepodata <= 0 {
		o.MaxRepodata = config.DefaultMaxRepodata
	}
	if o.MaxMetadata <= 0 {
		o.MaxMetadata = config.DefaultMaxMetadata
	}
	if o.Known == nil {
		o.Known = func(string) bool { return false }
	}
	st := &importStage{temps: stage, opts: o,
		docs: map[subdirKey]*cache.Staged{}, pkgs: map[subdirKey][]proxy.ImportedPackage{}}
	// Whatever did not become part of the store goes: a refused import leaves
	// nothing in tmp/. Placed blobs are no longer staged and are left alone.
	defer st.discard()
	if err := st.read(ctx, r); err != nil {
		return nil, err
	}
	keys, err := st.verify(ctx)
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// Verified whole: make it visible, all of it at once.
	commit := proxy.ImportCommit{Fault: o.fault}
	rep := &ImportReport{}
	chans := map[string]bool{}
	for _, k := range keys {
		commit.Subdirs = append(commit.Subdirs, proxy.ImportedSubdir{Channel: k.channel, Subdir: k.subdir,
			Repodata: st.docs[k], Packages: st.pkgs[k]})
		for _, p := range st.pkgs[k] {
			rep.Packages++
			rep.Bytes += p.Blob.Size()
		}
		chans[k.channel] = true
	}
	if err := dst.CommitImport(commit); err != nil {
		if errors.Is(err, proxy.ErrImportRefused) {
			return nil, fmt.Errorf("%w: %v", ErrRefused, err)
		}
		return nil, fmt.Errorf("commit: %w", err)
	}
	for c := range chans {
		rep.Channels = append(rep.Channels, c)
	}
	sort.Strings(rep.Channels)
	return rep, nil
}

// importStage is what an import has read so far: the verified entries, each in
// a closed file in the store's tmp/.
type importStage struct {
	temps Stager
	opts  ImportOptions
	docs  map[subdirKey]*cache.Staged // repodata.json
	pkgs  map[subdirKey][]proxy.ImportedPackage
	copy  []byte
}

// buf is the one copy buffer of every entry: io.Copy would allocate one per
// entry, and a tar holds thousands.
func (st *importStage) buf() []byte {
	if st.copy == nil {
		st.copy = make([]byte, 64<<10)
	}
	return st.copy
}

func (st *importStage) discard() {
	for _, d := range st.docs {
		d.Discard()
	}
	for _, ps := range st.pkgs {
		for _, p := range ps {
			p.Blob.Discard()
		}
	}
}

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// read stages every entry of the tar, checking each against the manifest.
func (st *importStage) read(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil {
		if rerr := sourceError(err); rerr != nil {
			return fmt.Errorf("reading the tar: %w", rerr)
		}
		return refuse("not a condaproxy export: %v", err)
	}
	if hdr.Name != ManifestName {
		return refuse("not a condaproxy export: the first file is %q, not %s", hdr.Name, ManifestName)
	}
	if err := plainFile(hdr); err != nil {
		return err
	}
	if hdr.Size > maxManifest {
		return refuse("%s: %d bytes, more than a manifest can be (%d)", ManifestName, hdr.Size, maxManifest)
	}
	maxFiles := st.opts.maxFiles
	if maxFiles <= 0 {
		maxFiles = maxManifestFiles
	}
	want, err := readManifest(io.LimitReader(tr, hdr.Size), maxFiles)
	if err != nil {
		return err
	}
	last := ManifestName
	for read := 0; ; read++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if rerr := sourceError(err); rerr != nil {
				return fmt.Errorf("reading the tar after %s: %w", last, rerr)
			}
			return refuse("the tar is damaged after %s (%d files read): %v", last, read, err)
		}
		last = hdr.Name
		if err := st.entry(tr, hdr, want); err != nil {
			return err
		}
	}
	if first, n := want.missing(); n > 0 {
		return refuse("truncated: %s is in the manifest but not in the tar (%d files missing)", first, n)
	}
	return nil
}

// entryKinds names what a tar entry is when it is not a plain file.
var entryKinds = map[byte]string{
	tar.TypeLink: "a hard link", tar.TypeSymlink: "a symbolic link", tar.TypeChar: "a character device",
	tar.TypeBlock: "a block device", tar.TypeDir: "a directory", tar.TypeFifo: "a named pipe",
	tar.TypeCont: "a contiguous file", tar.TypeXGlobalHeader: "a global header", tar.TypeGNUSparse: "a sparse file",
}

// plainFile refuses an entry that is not a plain file, naming it and what it is:
// a link or a device in the tree would point the served channel, or whoever
// untars it, elsewhere.
func plainFile(hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeReg {
		// A PAX sparse file is a plain file whose holes read as zeros: a few
		// bytes of tar could fill the disk. An export never writes one.
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "GNU.sparse.") {
				return refuse("%s: a sparse file, not a plain file", hdr.Name)
			}
		}
		return nil
	}
	kind := entryKinds[hdr.Typeflag]
	if kind == "" {
		kind = fmt.Sprintf("an entry of type %q", hdr.Typeflag)
	}
	if hdr.Linkname != "" {
		kind += fmt.Sprintf(" to %q", hdr.Linkname)
	}
	return refuse("%s: %s, not a plain file", hdr.Name, kind)
}

// entry stages one entry after the manifest.
func (st *importStage) entry(tr *tar.Reader, hdr *tar.Header, want *manifestIndex) error {
	name := hdr.Name
	if !cleanTarPath(name) {
		return refuse("%s: a path outside the tree", name)
	}
	if err := plainFile(hdr); err != nil {
		return err
	}
	at, ok := want.find(name)
	if !ok {
		return refuse("%s: not in the manifest", name)
	}
	if want.files[at].seen {
		return refuse("%s: twice in the tar", name)
	}
	want.files[at].seen = true
	mf := want.file(at)
	if hdr.Size != mf.Size {
		return refuse("%s: the tar holds %d bytes, the manifest says %d", name, hdr.Size, mf.Size)
	}
	dir, base := path.Split(name)
	if base == "channeldata.json" {
		// The channel's list of subdirs, for clients and syncs of the untarred
		// tree; the import itself needs nothing from it: checked, not kept.
		if mf.Size > st.opts.MaxMetadata {
			return refuse("%s: %d bytes, past limits.max_metadata (%d)", name, mf.Size, st.opts.MaxMetadata)
		}
		return st.hashOnly(tr, mf)
	}
	// <channel>/<subdir>/<file>; a channel name may hold '/' (pkgs/main).
	dir = strings.TrimSuffix(dir, "/")
	// <channel>/<subdir>/shards/<sha256>.msgpack.zst: no subdir is called
	// "shards", so this is never a channel's subdir.
	isShard := false
	if d, ok := strings.CutSuffix(dir, "/shards"); ok {
		dir, isShard = d, true
	}
	if !strings.Contains(dir, "/") {
		return refuse("%s: not below <channel>/<subdir>/", name)
	}
	i := strings.LastIndex(dir, "/")
	key := subdirKey{dir[:i], dir[i+1:]}
	if !st.opts.Known(key.channel) {
		return refuse("%s: channel %q is not in the configuration; add it (a channel with no upstreams serves what imports bring)", name, key.channel)
	}
	switch {
	case isShard:
		// The import side makes its own shards from repodata.json (as every
		// replica does); these serve the untarred tree. Checked, not kept.
		sum, ok := strings.CutSuffix(base, ".msgpack.zst")
		if !ok || !blobstore.ValidName(sum) || sum != mf.SHA256 {
			return refuse("%s: a shard is named <sha256 of its bytes>.msgpack.zst", name)
		}
		if mf.Size > shards.MaxShardSize {
			return refuse("%s: %d bytes, past the %d a shard may have", name, mf.Size, shards.MaxShardSize)
		}
		return st.hashOnly(tr, mf)
	case base == "repodata_shards.msgpack.zst":
		if mf.Size > shards.MaxIndexSize {
			return refuse("%s: %d bytes, past the %d a shard index may have", name, mf.Size, shards.MaxIndexSize)
		}
		return st.hashOnly(tr, mf)
	case base == "repodata.json":
		if mf.Size > st.opts.MaxRepodata {
			return refuse("%s: %d bytes, past limits.max_repodata (%d)", name, mf.Size, st.opts.MaxRepodata)
		}
		doc, err := st.stage(tr, name, mf)
		if err != nil {
			return err
		}
		st.docs[key] = doc
	case base == "repodata.json.zst":
		// Served forms are made from repodata.json; this one is only checked.
		if mf.Size > st.opts.MaxRepodata {
			return refuse("%s: %d bytes, past limits.max_repodata (%d)", name, mf.Size, st.opts.MaxRepodata)
		}
		return st.hashOnly(tr, mf)
	default:
		if !repodata.ValidFilename(base) {
			return refuse("%s: neither a package (.conda, .tar.bz2) nor repodata", name)
		}
		blob, err := st.stage(tr, name, mf)
		if err != nil {
			return err
		}
		st.pkgs[key] = append(st.pkgs[key], proxy.ImportedPackage{Filename: base, Blob: blob})
	}
	return nil
}

// stage streams an entry to a temp file of the store while hashing it, checks it
// against the manifest, and closes the file.
func (st *importStage) stage(tr io.Reader, name string, mf ManifestFile) (*cache.Staged, error) {
	t, err := st.temps.NewTemp()
	if err != nil {
		return nil, localError(name, err)
	}
	w := &tempWriter{t: t}
	if _, err := io.CopyBuffer(w, tr, st.buf()); err != nil {
		t.Abort()
		if w.err != nil {
			// The data directory failed, not the tar: the same tar imports
			// once there is room, or the disk is mended.
			return nil, localError(name, w.err)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, refuse("%s: truncated after %d of %d bytes", name, t.Written(), mf.Size)
		}
		if rerr := sourceError(err); rerr != nil {
			return nil, fmt.Errorf("reading %s from the tar: %w", name, rerr)
		}
		return nil, refuse("%s: %v", name, err)
	}
	blob, err := t.Seal(cache.Digest{Size: mf.Size, SHA256: mf.SHA256})
	if err != nil {
		var mm *cache.MismatchError
		if errors.As(err, &mm) {
			return nil, refuse("%s: does not match the manifest: %v", name, err)
		}
		// Seal fails otherwise in its fsync or close: the data directory's.
		return nil, localError(name, err)
	}
	return blob, nil
}

// tempWriter keeps the error of the temp file's writes apart from the tar's
// reads, which io.Copy returns alike.
type tempWriter struct {
	t   *cache.Temp
	err error
}

func (w *tempWriter) Write(p []byte) (int, error) {
	n, err := w.t.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// localError is a failure of the data directory while an entry is staged: not
// a refusal (the tar may be fine), but the error itself, which names the file
// and the cause. Out of room, it is cache.ErrNoSpace too, as the commit's own
// check of free space is.
func localError(name string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("staging %s in the data directory: %w (%w)", name, err, cache.ErrNoSpace)
	}
	return fmt.Errorf("staging %s in the data directory: %w", name, err)
}

// sourceError is err when it is the operating system failing to read the tar
// (a bad sector, a dropped network mount): the tar may be whole, and saying it
// is damaged would send its maker looking for a fault that is not there. Nil
// for what the tar's own bytes cause.
func sourceError(err error) error {
	var pe *fs.PathError
	var errno syscall.Errno
	if errors.As(err, &pe) || errors.As(err, &errno) {
		return err
	}
	return nil
}

// hashOnly reads an entry that is checked but not kept.
func (st *importStage) hashOnly(tr io.Reader, mf ManifestFile) error {
	h := sha256.New()
	n, err := io.CopyBuffer(h, tr, st.buf())
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return refuse("%s: truncated after %d of %d bytes", mf.Path, n, mf.Size)
		}
		if rerr := sourceError(err); rerr != nil {
			return fmt.Errorf("reading %s from the tar: %w", mf.Path, rerr)
		}
		return refuse("%s: %v", mf.Path, err)
	}
	if n != mf.Size {
		return refuse("%s: %d bytes, the manifest says %d", mf.Path, n, mf.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, mf.SHA256) {
		return refuse("%s: sha256 %s, the manifest says %s", mf.Path, got, mf.SHA256)
	}
	return nil
}

// verify checks every package against its subdir's repodata, one subdir at a
// time, and returns the subdirs in order. Every package must be a record of its
// subdir's repodata, with the same size and checksum, and every record must
// have its package.
func (st *importStage) verify(ctx context.Context) ([]subdirKey, error) {
	for k := range st.pkgs {
		if st.docs[k] == nil {
			return nil, refuse("%s: packages without a repodata.json", k)
		}
	}
	var keys []subdirKey
	for k := range st.docs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := st.verifySubdir(k); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

func (st *importStage) verifySubdir(k subdirKey) error {
	docName := k.String() + "/repodata.json"
	data, err := st.docs[k].ReadAll()
	if err != nil {
		return err
	}
	type rec struct {
		sha256, md5 string
		size        int64
	}
	recs := map[string]rec{}
	if _, err := repodata.Scan(data, func(r *repodata.Record) error {
		recs[strings.Clone(r.Filename)] = rec{strings.Clone(r.SHA256), strings.Clone(r.MD5), r.Size}
		return nil
	}); err != nil {
		return refuse("%s: %v", docName, err)
	}
	data = nil // the records are all that is needed from here
	have := make(map[string]bool, len(st.pkgs[k]))
	for _, p := range st.pkgs[k] {
		name := k.String() + "/" + p.Filename
		r, ok := recs[p.Filename]
		if !ok {
			return refuse("%s: no record in its repodata.json", name)
		}
		sha, size := p.Blob.SHA256(), p.Blob.Size()
		if (r.sha256 != "" && !strings.EqualFold(r.sha256, sha)) || (r.size >= 0 && r.size != size) {
			return refuse("%s: its repodata record says sha256 %s size %d, the file is %s size %d", name, r.sha256, r.size, sha, size)
		}
		if r.sha256 == "" {
			// An old record with md5 only: the manifest's sha256 proves the tar
			// was not changed in transit, the md5 that the file is the record's.
			if r.md5 == "" {
				return refuse("%s: its repodata record has no checksum", name)
			}
			if !strings.EqualFold(r.md5, p.Blob.MD5()) {
				return refuse("%s: md5 %s, the repodata record's md5 is %s", name, p.Blob.MD5(), r.md5)
			}
		}
		have[p.Filename] = true
	}
	for fn := range recs {
		if !have[fn] {
			return refuse("%s lists %s, which the tar does not hold", docName, fn)
		}
	}
	return nil
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
