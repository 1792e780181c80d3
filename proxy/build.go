package proxy

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/condaproxy/condaproxy/cache"
	"io"
	"maps"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/repodata"
	"github.com/condaproxy/condaproxy/upstream"
)

// upDoc is one upstream's stored repodata for one subdir, mapped for a build.
type upDoc struct {
	up   int           // the upstream's index (the imported source is the last)
	m    *cache.Mapped // the raw JSON; every record string of a scan aliases it
	head *repodata.Doc // info, removed, version, extra keys; aliases nothing
}

// scan visits d's records (of one section when conda is not nil), giving back
// the mapped pages behind the scan as it goes.
func (d *upDoc) scan(conda *bool, visit func(r *repodata.Record) error) error {
	o := repodata.ScanOptions{Behind: d.m.Drop}
	if conda != nil {
		o.Section = repodata.SectionOf(*conda)
	}
	_, err := repodata.ScanWith(d.m.Bytes(), o, visit)
	return err
}

// closeDocs unmaps every doc of a build. Nothing a build publishes aliases
// them: what outlives a scan is cloned (filenames, policy names) or detached
// (heads).
func closeDocs(docs map[string][]*upDoc) {
	for _, ds := range docs {
		closeDocList(ds)
	}
}

func closeDocList(ds []*upDoc) {
	for _, d := range ds {
		if d != nil {
			d.m.Close()
		}
	}
}

// build makes and publishes sd's answer. With refresh, every upstream is
// revalidated (conditional requests); without, stored upstream copies are used as
// they are and only missing ones are fetched (start-up after a restart, or a
// filter that changed: the new rules apply without refetching).
//
// It streams: records are scanned from the stored upstream bytes, decided by the
// channel's policy one at a time and written straight to the served file, so the
// peak memory is the upstream bytes plus a compact index of the served files.
func (s *Server) build(ctx context.Context, sd *subdir, refresh bool) (*served, error) {
	// The upstream documents are memory maps: a read error under one (a bad
	// sector) is a fault, which kills the process unless it panics, and a
	// panic fails this build only (guard), keeping the last good answer.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	ch := sd.ch
	// With no platforms the closure runs over the subdirs the channel has: the
	// list is read (revalidated when stale) only when the policy asks for it.
	var subdirsErr error
	inputs := ch.policy.Inputs(sd.name, func() []string {
		var subs []string
		subs, subdirsErr = s.channelSubdirs(ctx, ch, true)
		return subs
	})
	if subdirsErr != nil {
		return nil, fmt.Errorf("the subdirs of channel %s (the dependency closure runs over them): %w", ch.cfg.Name, subdirsErr)
	}
	if len(inputs) == 0 {
		inputs = []string{sd.name}
	}
	states := map[string][]*upState{}
	var firstErr error
	var checkedAt time.Time
	anyState := false
	// Filtering runs once per upstream revision and policy: the key of what an
	// answer was cut from, so a revalidation that changed nothing (304s) only moves
	// the validation time of the current answer.
	inputsKey := ch.policy.Fingerprint()
	// Sources are the configured upstreams, in order, then what `condaproxy
	// import` brought (a channel of an air-gapped site may have no upstream).
	nsrc := len(ch.sources) + 1
	for _, sub := range inputs {
		// The subdir itself is in the key: a subdir added to (or gone from) the
		// closure's inputs rebuilds the answer even before it has any state.
		inputsKey += "|" + sub + ":"
		states[sub] = make([]*upState, nsrc)
		for i := 0; i < nsrc; i++ {
			var st *upState
			var err error
			if i == len(ch.sources) {
				st, err = s.importState(ch, sub)
			} else {
				st, err = s.upstreamState(ctx, ch, sub, i, refresh && sub == sd.name)
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if st == nil {
				continue
			}
			if sub == sd.name {
				anyState = true
			}
			// An import is never revalidated: only upstreams age the answer.
			if sub == sd.name && i < len(ch.sources) {
				if checkedAt.IsZero() || st.CheckedAt.Before(checkedAt) {
					checkedAt = st.CheckedAt
				}
			}
			states[sub][i] = st
			inputsKey += "|" + st.SHA
		}
	}
	sd.mu.Lock()
	sd.lastErr = firstErr
	if firstErr != nil {
		sd.failedAt = s.now()
	}
	sd.mu.Unlock()
	if !anyState && firstErr != nil {
		return nil, firstErr
	}
	// No state and no error: a channel with no upstream and nothing imported yet.
	// It serves an empty noarch and 404s, like a channel upstream lacks.
	if checkedAt.IsZero() {
		checkedAt = s.now()
	}
	if cur := sd.cur.Load(); cur != nil && cur.inputs == inputsKey && !timeDependent(ch.policy) {
		cur.checkedNS.Store(checkedAt.UnixNano())
		return cur, nil
	}
	docs := map[string][]*upDoc{}
	defer closeDocs(docs)
	for sub, sts := range states {
		docs[sub] = make([]*upDoc, len(sts))
		for i, st := range sts {
			if st == nil || !st.Found {
				continue
			}
			d, err := s.readUpstream(ctx, ch, sub, i, st)
			if err != nil {
				return nil, err
			}
			if d != nil {
				d.up = i
			}
			docs[sub][i] = d
		}
	}
	release, err := s.admitBuild(ctx, docs)
	if err != nil {
		return nil, err
	}
	release = sync.OnceFunc(release) // let go early below, or at any return
	defer release()
	own := docs[sd.name]
	head := mergeHeads(own)
	if head == nil {
		if sd.name != "noarch" {
			sv := &served{notFound: true}
			sv.checkedNS.Store(checkedAt.UnixNano())
			s.replace(sd, sv)
			return sv, nil
		}
		// Conda clients refuse a channel without noarch: serve an empty one.
		head = repodata.Empty("noarch")
	}
	var extras []*repodata.Record
	if s.cfg.Cache.KeepRemoved {
		extras = s.removedButCached(ch, sd.name, own)
	}
	multi := several(own) || len(extras) > 0
	decider, err := ch.policy.Prepare(sd.name, func(visit func(string, *repodata.Record)) error {
		for _, sub := range inputs {
			err := scanMerged(docs[sub], nil, several(docs[sub]), func(r *repodata.Record, _ int) { visit(sub, r) })
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	pkgBase := make([]*url.URL, nsrc)
	for i := range pkgBase {
		if i < len(ch.sources) {
			pkgBase[i] = s.packageBase(ch.sources[i], sd.name, own[i])
		}
	}
	pkgs := &nameIndex[pkgRef]{}
	hidden := &nameIndex[string]{}
	tmpName := uniqueName("served-"+shortHash(ch.cfg.Name, sd.name)+"-tmp", ".json")
	size, sha, err := s.store.WriteFile(tmpName, func(w io.Writer) error {
		enc := repodata.NewEncoder(w, head)
		record := func(r *repodata.Record, up int) {
			if rule, _ := decider.Decide(r); rule != "" {
				hidden.add(r.Filename, rule)
				return
			}
			enc.Section(r.Conda)
			off := enc.Record(r)
			pkgs.add(r.Filename, newPkgRef(r, up, off))
		}
		if one := single(own); one != nil && len(extras) == 0 && !one.head.CondaFirst {
			// One document with its sections in the order they are written:
			// one scan, not one per section (each pass over a 300 MB document
			// is a second of CPU).
			if err := one.scan(nil, func(r *repodata.Record) error { record(r, one.up); return nil }); err != nil {
				return err
			}
			return enc.Close()
		}
		for _, conda := range []bool{false, true} {
			enc.Section(conda)
			err := scanMergedSection(own, extras, multi, &conda, func(r *repodata.Record, up int) {
				if r.Conda == conda {
					record(r, up)
				}
			})
			if err != nil {
				return err
			}
		}
		return enc.Close()
	})
	if err != nil {
		return nil, err
	}
	// The documents are done with: their mappings and the big-build slot go
	// now, not after publish, which may compress the answer into its forms
	// (prewarmForms) for seconds without needing either.
	closeDocs(docs)
	release()
	pkgs.seal()
	hidden.seal()
	sv := &served{packages: pkgs, hidden: hidden, decider: decider, pkgBase: pkgBase, inputs: inputsKey}
	sv.checkedNS.Store(checkedAt.UnixNano())
	return s.publish(sd, tmpName, size, sha, sv)
}

// bigBuildBytes is the upstream input from which a build counts as big (see
// Server.bigBuild). Smaller builds (most subdirs, every noarch of a small
// channel) never wait behind a big one.
var bigBuildBytes = 32 << 20

// admitBuild waits, when docs are big, until no other big build runs. Waiting
// costs no memory: the documents are only mapped, not read, until admitted.
func (s *Server) admitBuild(ctx context.Context, docs map[string][]*upDoc) (release func(), err error) {
	var n int
	for _, ds := range docs {
		for _, d := range ds {
			if d != nil {
				n += len(d.m.Bytes())
			}
		}
	}
	if n < bigBuildBytes {
		return func() {}, nil
	}
	select {
	case s.bigBuild <- struct{}{}:
		return func() { <-s.bigBuild }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// single returns the one document of docs, or nil when there are none or
// several.
func single(docs []*upDoc) *upDoc {
	var one *upDoc
	for _, d := range docs {
		if d != nil {
			if one != nil {
				return nil
			}
			one = d
		}
	}
	return one
}

// several reports whether more than one source has the subdir: only then can a
// filename repeat, and the union needs a set of the names seen.
func several(docs []*upDoc) bool {
	n := 0
	for _, d := range docs {
		if d != nil {
			n++
		}
	}
	return n > 1
}

// timeDependent reports whether p's cut changes with the clock alone (min_age).
func timeDependent(p policy.Policy) bool {
	t, ok := p.(interface{ TimeDependent() bool })
	return ok && t.TimeDependent()
}

// scanMerged visits the union of one subdir's upstream docs, then extras: where
// several hold a filename, the first wins. up is the upstream index of the record.
// dedupe can be false when a filename cannot repeat (one upstream, no extras).
func scanMerged(docs []*upDoc, extras []*repodata.Record, dedupe bool, visit func(r *repodata.Record, up int)) error {
	return scanMergedSection(docs, extras, dedupe, nil, visit)
}

// scanMergedSection is scanMerged over one section when conda is not nil.
func scanMergedSection(docs []*upDoc, extras []*repodata.Record, dedupe bool, conda *bool, visit func(r *repodata.Record, up int)) error {
	var seen map[string]bool
	if dedupe {
		seen = map[string]bool{}
	}
	for i, d := range docs {
		if d == nil {
			continue
		}
		each := func(r *repodata.Record) error {
			if dedupe {
				if seen[r.Filename] {
					return nil
				}
				seen[strings.Clone(r.Filename)] = true
			}
			visit(r, i)
			return nil
		}
		if err := d.scan(conda, each); err != nil {
			return err
		}
	}
	for _, r := range extras {
		if !seen[r.Filename] {
			visit(r, r.Upstream)
		}
	}
	return nil
}

func newPkgRef(r *repodata.Record, up int, off int64) pkgRef {
	p := pkgRef{size: r.Size, upstream: int16(up), off: off, n: int32(len(r.Raw))}
	if len(r.SHA256) == 64 {
		if _, err := hex.Decode(p.digest[:], []byte(r.SHA256)); err == nil {
			p.hasSHA = true
			return p
		}
	}
	if len(r.MD5) == 32 {
		if _, err := hex.Decode(p.digest[:16], []byte(r.MD5)); err == nil {
			p.hasMD5 = true
		}
	}
	return p
}

// mergeHeads is the head of the union: the first upstream's info and extra keys,
// every upstream's removed list, the highest repodata_version. nil: no upstream
// has the subdir.
func mergeHeads(docs []*upDoc) *repodata.Doc {
	var out *repodata.Doc
	removed := map[string]bool{}
	for _, d := range docs {
		if d == nil {
			continue
		}
		if out == nil {
			out = &repodata.Doc{Info: d.head.Info, Version: d.head.Version, Extra: d.head.Extra}
		}
		out.Version = max(out.Version, d.head.Version)
		for _, fn := range d.head.Removed {
			if !removed[fn] {
				removed[fn] = true
				out.Removed = append(out.Removed, fn)
			}
		}
	}
	return out
}

// readUpstream reads the stored upstream document st names. Another subdir's
// copy (include_dependencies reads them all) may be replaced by that subdir's own
// refresh meanwhile, which removes the old file once the new state is recorded:
// then the state is read again and names the new file.
func (s *Server) readUpstream(ctx context.Context, ch *channel, sub string, i int, st *upState) (*upDoc, error) {
	for attempt := 0; ; attempt++ {
		d, err := readStored(s.store, st)
		if !errors.Is(err, cache.ErrNotFound) || attempt == 4 {
			return d, err
		}
		if attempt == 3 {
			// Still missing: not a refresh in between, the file is gone (a crash
			// before the directory reached the disk). Forget the state that names
			// it, so that it is fetched again, unconditionally (an import's is
			// simply gone until imported again).
			s.logger(ctx).Error("stored repodata is missing; fetching it again", "channel", ch.cfg.Name, "subdir", sub, "file", st.File)
			key := stateKey("u", ch.cfg.Name, sub, strconv.Itoa(i))
			if i == len(ch.sources) {
				key = importKey(ch, sub)
			}
			if err := s.store.Meta.Delete(key); err != nil {
				return nil, err
			}
		}
		if i < len(ch.sources) {
			st, err = s.upstreamState(ctx, ch, sub, i, false)
		} else {
			st, err = s.importState(ch, sub)
		}
		if err != nil {
			return nil, err
		}
		if st == nil || !st.Found {
			return nil, nil // none now: the build goes on without it
		}
	}
}

func readStored(store *cache.Store, st *upState) (*upDoc, error) {
	m, err := store.Map(st.File)
	if err != nil {
		return nil, fmt.Errorf("read stored repodata %s: %w", st.File, err)
	}
	head := st.head
	if head == nil {
		h, err := repodata.ScanWith(m.Bytes(), repodata.ScanOptions{Behind: m.Drop}, nil)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("stored repodata %s: %w", st.File, err)
		}
		head = h.Detach()
	}
	return &upDoc{m: m, head: head}, nil
}

// packageBase returns where upstream src keeps subdir's packages: the CEP-15
// base_url of its repodata d when it names a place the upstream may fetch from
// (its own host, or a host the config lists), else <upstream>/<subdir>/. A
// hostile repodata cannot send the proxy to file:///etc or to any host it names.
func (s *Server) packageBase(src upstream.Source, subdir string, d *upDoc) *url.URL {
	var baseURL string
	if d != nil {
		baseURL = d.head.BaseURL
	}
	u, err := src.PackageBase(subdir, baseURL)
	if err == nil {
		return u
	}
	if baseURL != "" {
		s.log.Warn("repodata base_url refused; packages are fetched below the upstream", "upstream", src.String(), "subdir", subdir, "err", err)
		if u, err = src.PackageBase(subdir, ""); err == nil {
			return u
		}
	}
	return nil
}

// removedButCached returns the records upstream no longer lists whose package is
// cached (cache.keep_removed): an environment pinned to them keeps solving.
func (s *Server) removedButCached(ch *channel, sub string, docs []*upDoc) []*repodata.Record {
	listed := map[string]bool{}
	for _, d := range docs {
		if d != nil {
			d.scan(nil, func(r *repodata.Record) error {
				listed[strings.Clone(r.Filename)] = true
				return nil
			})
		}
	}
	var out []*repodata.Record
	prefix := stateKey("p", ch.cfg.Name, sub) + "|"
	s.store.Meta.Scan(prefix, func(key string, val []byte) error {
		fn := strings.TrimPrefix(key, prefix)
		if listed[fn] {
			return nil
		}
		var e pkgEntry
		if err := json.Unmarshal(val, &e); err != nil || !s.store.Has(e.SHA256) {
			return nil
		}
		if r := entryRecord(fn, e); r != nil {
			out = append(out, r)
		}
		return nil
	})
	return out
}

// prewarmForms makes, for the new answer sv whose JSON is json, the forms
// clients asked of the answer it replaces (conda and mamba ask for .zst
// first): made here, by the refresh nobody waits for, and not on the first ask
// after the swap, where every client of that form would wait for a 300 MB
// compression. Only .zst, .gz (conda's plain requests accept gzip) and
// current_repodata are: shards (their own incremental build), run_exports
// (tied to an upstream copy) and .bz2 wait for their first ask. A form that
// cannot be made now (a full disk) is made on ask, as before.
func (s *Server) prewarmForms(sd *subdir, sv *served, json variantFile) map[string]variantFile {
	old := sd.cur.Load()
	if old == nil || old.notFound {
		return nil
	}
	old.mu.Lock()
	var names []string
	for name := range old.variants {
		// .bz2 is left to its first ask: only old conda asks for it, and
		// inherited from generation to generation it would cost every refresh
		// a slow compression for good once anyone asked.
		if name == "zst" || name == "gz" || name == "current" {
			names = append(names, name)
		}
	}
	old.mu.Unlock()
	if len(names) == 0 {
		return nil
	}
	sv.json = json
	out := map[string]variantFile{}
	for _, name := range names {
		vf, err := s.makeVariant(sd, sv, name)
		if err != nil {
			s.log.Warn("cannot make a repodata form ahead of the swap; it is made on first ask", "channel", sd.ch.cfg.Name, "subdir", sd.name, "form", name, "err", err)
			continue
		}
		out[name] = vf
	}
	return out
}

// publish gives the served JSON written to tmpName its final name and makes sv
// the published generation. The one it replaces keeps its files until its last
// reader is done (generation.go).
func (s *Server) publish(sd *subdir, tmpName string, size int64, sha string, sv *served) (*served, error) {
	ch := sd.ch
	key := stateKey("s", ch.cfg.Name, sd.name)
	sd.stateMu.Lock()
	defer sd.stateMu.Unlock()
	var prev servedState
	hadPrev, _ := s.store.Meta.Get(key, &prev)
	st := servedState{LastModified: s.now().UTC().Truncate(time.Second)}
	if hadPrev && prev.JSON.SHA == sha && s.store.HasFile(prev.JSON.Name) {
		// Same answer as before (a 304, a restart): keep its files, its
		// Last-Modified and the compressed forms already made.
		st = prev
		s.store.RemoveFile(tmpName)
	} else {
		// A name of its own, never reused: a retired generation's files are
		// removed by name, and must not be a newer one's.
		st.JSON = variantFile{Name: uniqueName("served-"+shortHash(ch.cfg.Name, sd.name)+"-"+sha[:16], ".json"), SHA: sha, Size: size}
		if err := s.store.RenameFile(tmpName, st.JSON.Name); err != nil {
			s.store.RemoveFile(tmpName)
			return nil, err
		}
		st.Variants = s.prewarmForms(sd, sv, st.JSON)
	}
	if err := s.store.Meta.Put(key, st); err != nil {
		if st.JSON.Name != prev.JSON.Name {
			s.store.RemoveFile(st.JSON.Name) // no state names it
			for _, v := range st.Variants {
				s.store.RemoveFile(v.Name)
			}
		}
		return nil, err
	}
	sv.json, sv.lastModified, sv.variants = st.JSON, st.LastModified, maps.Clone(st.Variants)
	sv.lastModifiedHTTP = httpTime(sv.lastModified)
	if sv.variants == nil {
		sv.variants = map[string]variantFile{}
	}
	old := sd.cur.Load()
	s.replace(sd, sv)
	if hadPrev && prev.JSON.Name != st.JSON.Name && (old == nil || old.json.Name != prev.JSON.Name) {
		// The previous answer's files, published before a restart: no generation
		// in memory owns them.
		names := []string{prev.JSON.Name}
		for _, v := range prev.Variants {
			names = append(names, v.Name)
		}
		s.retireFiles(sd, names...)
	}
	return sv, nil
}
