package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/repodata"
)

// Imports and exports: a channel tree moved by tar to a site with no network.
// What an import brings is one more source of each channel, after its configured
// upstreams, stored like an upstream's repodata but never refetched: it is served
// as long as the data directory keeps it, with no upstream reachable at all.

func importKey(ch *channel, sub string) string { return stateKey("u", ch.cfg.Name, sub, "import") }

// importState is the imported source of sub, or nil.
func (s *Server) importState(ch *channel, sub string) (*upState, error) {
	var st upState
	ok, err := s.store.Meta.Get(importKey(ch, sub), &st)
	if err != nil || !ok {
		return nil, err
	}
	return &st, nil
}

// ExportFile is one package an export writes.
type ExportFile struct {
	Filename string
	SHA256   string
	Size     int64
}

// ExportSubdir writes to w the repodata.json of channel/subdir holding exactly the
// records it serves, has cached, and include accepts, and returns those files.
// It reads the stored answer only: no upstream is asked unless nothing is stored.
func (s *Server) ExportSubdir(ctx context.Context, channel, subdir string, include func(fn string) bool, w io.Writer) ([]ExportFile, error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return nil, err
	}
	sd := ch.subdir(subdir)
	sv, err := s.load(ctx, sd)
	if err != nil {
		return nil, err
	}
	var data []byte
	if !sv.notFound {
		if data, err = s.store.ReadFile(sv.json.Name); err != nil {
			return nil, err
		}
	} else {
		data = []byte(`{}`)
	}
	head, err := repodata.Scan(data, nil)
	if err != nil {
		return nil, err
	}
	if head.Subdir() == "" {
		head.Info = append(head.Info, repodata.Member{Key: "subdir", Raw: []byte(fmt.Sprintf("%q", subdir))})
	}
	var files []ExportFile
	enc := repodata.NewEncoder(w, &repodata.Doc{Info: head.Info, Version: head.Version})
	for _, conda := range []bool{false, true} {
		enc.Section(conda)
		_, err := repodata.ScanSection(data, conda, func(r *repodata.Record) error {
			ref, ok := sv.packages[r.Filename]
			if !ok || (include != nil && !include(r.Filename)) {
				return nil
			}
			sha := ref.shaHex()
			if sha == "" {
				if e, ok := s.pkgEntry(ch, subdir, r.Filename); ok {
					sha = e.SHA256
				}
			}
			if sha == "" || !s.store.Has(sha) {
				return nil
			}
			enc.Record(r)
			files = append(files, ExportFile{Filename: strings.Clone(r.Filename), SHA256: sha, Size: ref.size})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return files, enc.Close()
}

// CachedSubdirs lists the subdirs of channel with cached packages, and noarch.
func (s *Server) CachedSubdirs(channel string) ([]string, error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{"noarch": true}
	out := []string{"noarch"}
	prefix := "p/" + ch.cfg.Name + "|"
	err = s.store.Meta.Scan(prefix, func(key string, _ []byte) error {
		sub, _, _ := strings.Cut(strings.TrimPrefix(key, prefix), "|")
		if !seen[sub] {
			seen[sub] = true
			out = append(out, sub)
		}
		return nil
	})
	return out, err
}

// ImportedPackage is a verified package of an import, not yet visible.
type ImportedPackage struct {
	Filename string
	Temp     *cache.Temp // holds the bytes, verified against the manifest
	Digest   cache.Digest
}

// CommitImport makes one imported subdir visible: its packages become blobs with
// index entries, then its records join the channel's imported source (the union
// with what earlier imports brought, so deltas imported in order rebuild the whole).
// doc is the subdir's repodata.json from the tar, already checked by the caller.
func (s *Server) CommitImport(channel, subdir string, doc []byte, pkgs []ImportedPackage) error {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return err
	}
	records := map[string][]byte{}
	md5s := map[string]string{}
	if _, err := repodata.Scan(doc, func(r *repodata.Record) error {
		records[r.Filename] = bytes.Clone(r.Raw)
		md5s[r.Filename] = strings.ToLower(r.MD5)
		return nil
	}); err != nil {
		return err
	}
	for _, p := range pkgs {
		sha, err := p.Temp.Commit(p.Digest)
		if err != nil {
			return fmt.Errorf("%s/%s/%s: %w", channel, subdir, p.Filename, err)
		}
		e := pkgEntry{SHA256: sha, MD5: md5s[p.Filename], Size: p.Digest.Size, Upstream: len(ch.sources),
			Record: records[p.Filename], CachedAt: s.now()}
		if err := s.store.Meta.Put(stateKey("p", ch.cfg.Name, subdir, p.Filename), e); err != nil {
			return err
		}
	}
	// The union with the previous import, this import's records winning.
	merged := doc
	if prev, err := s.importState(ch, subdir); err == nil && prev != nil {
		if old, err := s.store.ReadFile(prev.File); err == nil {
			if merged, err = unionDocs(doc, old); err != nil {
				return err
			}
		}
	}
	prefix := "import-" + shortHash(ch.cfg.Name, subdir)
	_, sha, err := s.store.WriteFile(prefix+"-incoming", func(w io.Writer) error { _, err := w.Write(merged); return err })
	if err != nil {
		return err
	}
	name := prefix + "-" + sha[:16] + ".json"
	if err := s.store.RenameFile(prefix+"-incoming", name); err != nil {
		return err
	}
	prev, _ := s.importState(ch, subdir)
	st := upState{URL: "import", Found: true, File: name, SHA: sha, CheckedAt: s.now()}
	if err := s.store.Meta.Put(importKey(ch, subdir), st); err != nil {
		return err
	}
	if prev != nil && prev.File != name {
		s.store.RemoveFile(prev.File)
	}
	// The next request rebuilds the answer with the new source.
	ch.subdir(subdir).cur.Store(nil)
	return nil
}

// unionDocs is the repodata holding a's records and those of b that a lacks.
func unionDocs(a, b []byte) ([]byte, error) {
	head, err := repodata.Scan(a, nil)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := repodata.NewEncoder(&buf, head)
	seen := map[string]bool{}
	for _, conda := range []bool{false, true} {
		enc.Section(conda)
		for _, d := range [][]byte{a, b} {
			if _, err := repodata.ScanSection(d, conda, func(r *repodata.Record) error {
				if !seen[r.Filename] {
					seen[strings.Clone(r.Filename)] = true
					enc.Record(r)
				}
				return nil
			}); err != nil {
				return nil, err
			}
		}
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// exportState marks what earlier exports wrote, for --delta.
type exportState struct {
	At time.Time `json:"at"`
}

// Exported reports whether channel/subdir/filename went out in an earlier export.
func (s *Server) Exported(channel, subdir, filename string) bool {
	var st exportState
	ok, _ := s.store.Meta.Get(stateKey("x", channel, subdir, filename), &st)
	return ok
}

// MarkExported records that an export wrote channel/subdir/filename.
func (s *Server) MarkExported(channel, subdir, filename string) error {
	return s.store.Meta.Put(stateKey("x", channel, subdir, filename), exportState{At: s.now().UTC()})
}
