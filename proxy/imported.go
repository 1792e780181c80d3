package proxy

import (
	"context"
	"errors"
	"fmt"
	"github.com/condaproxy/condaproxy/config"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
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
	sv, release, err := s.use(ctx, sd)
	if err != nil {
		return nil, err
	}
	defer release()
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
			ref, ok := sv.packages.get(r.Filename)
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

// ImportedSubdir is one verified subdir of an import, not yet visible.
type ImportedSubdir struct {
	Channel, Subdir string
	// Repodata is the subdir's repodata.json from the tar, verified against the
	// manifest and checked against the packages by the caller.
	Repodata *cache.Staged
	Packages []ImportedPackage
}

// ImportedPackage is a verified package of an import, not yet visible.
type ImportedPackage struct {
	Filename string
	Blob     *cache.Staged // the bytes, verified against the manifest and the record
}

// ErrImportRefused marks a CommitImport error that is the tar's fault (its
// content breaks a rule), not the machine's: nothing was imported.
var ErrImportRefused = errors.New("import refused")

// ImportCommit is a verified import, to become visible as a whole.
type ImportCommit struct {
	Subdirs []ImportedSubdir
	// Fault, when set, is called between the steps of the commit ("subdir
	// <channel>/<subdir>" after each subdir's repodata file is written, "blobs"
	// once the packages are in place, "committed" after the metadata batch) and
	// an error it returns stops the commit there, as a crash or a failing disk
	// would. For tests.
	Fault func(step string) error
}

// importMu serialises commits of imports: each one cleans what a crashed
// earlier one left, which must not be what a concurrent one is writing.
var importMu sync.Mutex

// CommitImport makes verified subdirs visible, all at once. For each subdir the
// union of its records with what earlier imports brought (so deltas imported in
// order rebuild the whole, this import's records winning) is written to a new
// named file; the packages are renamed into the blob store; then the index
// entries of every package and the import state of every subdir go to the
// metadata store in one batch, the single point at which the import becomes
// visible. A crash or an error before that batch leaves the previous imports
// served and no index entry of this one (placed blobs are unreferenced, new
// files unnamed by any state, both cleaned up); after it, all of it is served.
// Memory: one subdir's repodata (and its previous import) at a time, plus the
// batch, which holds every imported package's index entry.
func (s *Server) CommitImport(c ImportCommit) (err error) {
	importMu.Lock()
	defer importMu.Unlock()
	// Its blobs are placed and its index entries written under refs: a clean of
	// another channel does not purge a blob this import places between the two.
	s.refs.RLock()
	defer s.refs.RUnlock()
	fault := c.Fault
	if fault == nil {
		fault = func(string) error { return nil }
	}
	type written struct {
		ch   *channel
		sub  string
		prev *upState
		name string
	}
	var done []written
	committed := false
	defer func() {
		if committed {
			return
		}
		// Files no state names.
		for _, w := range done {
			s.store.RemoveFile(w.name)
		}
	}()
	var newBytes int64
	for _, sd := range c.Subdirs {
		ch, err := s.condaChannel(sd.Channel)
		if err != nil {
			return err
		}
		// Only what the channel serves: another name would be kept and never
		// served (and a '|' would run into the index's own separator).
		if !config.SubdirPattern.MatchString(sd.Subdir) || !ch.serves(sd.Subdir) {
			return fmt.Errorf("%s/%s: not a subdir the channel serves: %w", sd.Channel, sd.Subdir, ErrImportRefused)
		}
		for _, p := range sd.Packages {
			if !s.store.Has(p.Blob.SHA256()) {
				newBytes += p.Blob.Size()
			}
		}
	}
	if _, _, limit := s.store.Usage(); limit > 0 && newBytes > limit {
		// It would evict itself as it commits: on an air-gapped site what is
		// evicted cannot be fetched again.
		return fmt.Errorf("the import brings %d bytes of packages, more than cache.max_size (%d): raise it, or import fewer channels at a time: %w", newBytes, limit, ErrImportRefused)
	}
	// The packages are staged on this disk already (renaming them takes no
	// room): what the commit adds is each subdir's merged repodata and the
	// metadata batch.
	var docBytes int64
	for _, sd := range c.Subdirs {
		docBytes += 2 * sd.Repodata.Size()
	}
	if err := s.store.CheckFree(docBytes); err != nil {
		return err
	}
	batch := s.store.Meta.NewBatch()
	defer batch.Close()
	var blobs []*cache.Staged
	seen := map[[2]string]bool{}
	for _, sd := range c.Subdirs {
		ch, err := s.condaChannel(sd.Channel)
		if err != nil {
			return err
		}
		if seen[[2]string{sd.Channel, sd.Subdir}] {
			return fmt.Errorf("%s/%s: twice in one import", sd.Channel, sd.Subdir)
		}
		seen[[2]string{sd.Channel, sd.Subdir}] = true
		prev, err := s.importState(ch, sd.Subdir)
		if err != nil {
			return err
		}
		name, err := s.stageImportedSubdir(ch, sd, prev, batch)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", sd.Channel, sd.Subdir, err)
		}
		done = append(done, written{ch, sd.Subdir, prev, name})
		for _, p := range sd.Packages {
			blobs = append(blobs, p.Blob)
		}
		if err := fault("subdir " + sd.Channel + "/" + sd.Subdir); err != nil {
			return err
		}
	}
	if err := s.store.SyncFiles(); err != nil {
		return err
	}
	if err := s.store.Place(batch, blobs); err != nil {
		return err
	}
	if err := fault("blobs"); err != nil {
		return err
	}
	if err := batch.Commit(); err != nil {
		// Maybe on disk, maybe not: keep the files either state may name.
		committed = true
		return err
	}
	committed = true
	if err := fault("committed"); err != nil {
		return err
	}
	// What the new states superseded; then the answers cut from them.
	touched := map[*channel]map[string]bool{}
	for _, w := range done {
		if w.prev != nil {
			s.store.RemoveFile(w.prev.File)
		}
		if touched[w.ch] == nil {
			touched[w.ch] = map[string]bool{}
		}
		touched[w.ch][w.sub] = true
	}
	for ch, subs := range touched {
		s.resetAnswers(ch, subs)
	}
	return nil
}

// stageImportedSubdir writes the union of sd's repodata with the previous import
// prev to a new named file, and adds to b the index entries of sd's packages and
// the subdir's new import state. It returns the file's name.
func (s *Server) stageImportedSubdir(ch *channel, sd ImportedSubdir, prev *upState, b *cache.Batch) (string, error) {
	prefix := "import-" + shortHash(ch.cfg.Name, sd.Subdir) + "-"
	// Files a crashed earlier commit wrote but never recorded.
	if names, err := s.store.FileNames(prefix); err == nil {
		for _, n := range names {
			if prev == nil || n != prev.File {
				s.store.RemoveFile(n)
			}
		}
	}
	doc, err := sd.Repodata.ReadAll()
	if err != nil {
		return "", err
	}
	blobs := make(map[string]*cache.Staged, len(sd.Packages))
	for _, p := range sd.Packages {
		blobs[p.Filename] = p.Blob
	}
	now := s.now()
	seen := map[string]bool{}
	if _, err := repodata.Scan(doc, func(r *repodata.Record) error {
		// A filename listed twice: the check would see one record and the
		// answer serve the other. Refused.
		if seen[r.Filename] {
			return fmt.Errorf("%s is listed twice in the repodata: %w", r.Filename, ErrImportRefused)
		}
		seen[strings.Clone(r.Filename)] = true
		blob, ok := blobs[r.Filename]
		if !ok {
			return nil // the caller checked every record has its package
		}
		// The record's md5, when it has one, must be the file's: an md5-only
		// record elsewhere is matched to this blob by it.
		if r.MD5 != "" && !strings.EqualFold(r.MD5, blob.MD5()) {
			return fmt.Errorf("%s: the record's md5 %s is not the file's (%s): %w", r.Filename, r.MD5, blob.MD5(), ErrImportRefused)
		}
		e := pkgEntry{SHA256: blob.SHA256(), MD5: blob.MD5(), Size: blob.Size(), Upstream: len(ch.sources),
			Record: r.Raw, CachedAt: now}
		return b.Put(stateKey("p", ch.cfg.Name, sd.Subdir, r.Filename), e)
	}); err != nil {
		return "", err
	}
	var old []byte
	if prev != nil {
		// A previous import whose file is gone contributes nothing; one that
		// does not parse stops the import (unionDocs says where).
		if old, err = s.store.ReadFile(prev.File); errors.Is(err, cache.ErrNotFound) {
			old = nil
		} else if err != nil {
			return "", err
		}
	}
	// A name no earlier import used, even for the same bytes: the file a current
	// state names is never overwritten, only dropped once a new state is durable.
	name := uniqueName(strings.TrimSuffix(prefix, "-"), ".json")
	_, sha, err := s.store.WriteFile(name, func(w io.Writer) error {
		if old == nil {
			_, err := w.Write(doc)
			return err
		}
		return unionDocs(w, doc, old)
	})
	if err != nil {
		return "", err
	}
	st := upState{URL: "import", Found: true, File: name, SHA: sha, CheckedAt: now}
	return name, b.Put(importKey(ch, sd.Subdir), st)
}

// resetAnswers drops the current answer of every subdir cut from one of subs,
// so the next request builds it with the new imported source.
func (s *Server) resetAnswers(c *channel, subs map[string]bool) {
	var reset []*subdir
	c.mu.Lock()
	for name, sd := range c.subdirs {
		// With no platforms a closure runs over every subdir the channel has,
		// which now includes subs.
		inputs := c.policy.Inputs(name, func() []string { return slices.Collect(maps.Keys(subs)) })
		if len(inputs) == 0 {
			inputs = []string{name}
		}
		for _, in := range inputs {
			if subs[in] {
				reset = append(reset, sd)
				break
			}
		}
	}
	c.mu.Unlock()
	for _, sd := range reset {
		s.replace(sd, nil)
	}
}

// unionDocs writes to w the repodata holding a's records and those of b that a
// lacks.
func unionDocs(w io.Writer, a, b []byte) error {
	head, err := repodata.Scan(a, nil)
	if err != nil {
		return err
	}
	enc := repodata.NewEncoder(w, head)
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
				return err
			}
		}
	}
	return enc.Close()
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
