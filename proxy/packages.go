package proxy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/fill"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/repodata"
	"github.com/condaproxy/condaproxy/upstream"
)

var zeroTime time.Time

// pkgEntry is the package index: what is cached under a channel path. It outlives
// upstream's record, so a package removed upstream stays served once cached.
type pkgEntry struct {
	SHA256   string          `json:"sha256"`
	MD5      string          `json:"md5,omitempty"`
	Size     int64           `json:"size"`
	Upstream int             `json:"upstream"`
	Record   json.RawMessage `json:"record,omitempty"`
	CachedAt time.Time       `json:"cached_at"`
}

func (s *Server) pkgEntry(ch *channel, sub, fn string) (pkgEntry, bool) {
	var e pkgEntry
	ok, err := s.store.Meta.Get(stateKey("p", ch.cfg.Name, sub, fn), &e)
	return e, ok && err == nil
}

// packageHeaders are the headers of a verified package: its sha256 is its ETag and
// it never changes.
func packageHeaders(sha string) func(h http.Header) {
	return func(h http.Header) {
		h.Set("Content-Type", "application/octet-stream")
		untrustedContent(h, "application/octet-stream")
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
		if sha != "" {
			h.Set("ETag", `"`+sha+`"`)
		}
	}
}

func (s *Server) servePackage(w http.ResponseWriter, r *http.Request, rt route) error {
	if err := s.checkSubdir(rt); err != nil {
		return err
	}
	sd := rt.channel.subdir(rt.subdir)
	sv, done, loadErr := s.use(r.Context(), sd)
	if loadErr == nil {
		defer done()
		listed := sv.packages.has(rt.file)
		hidden := sv.hidden.has(rt.file)
		if !listed && !hidden && s.catchUp(r.Context(), sd, sv) {
			// Another replica has newer repodata (its client may have it): take
			// the answer cut from it.
			if sv2, done2, err := s.use(r.Context(), sd); err == nil {
				defer done2()
				sv = sv2
			}
		}
		if ref, ok := sv.packages.get(rt.file); ok {
			return s.serveRecord(w, r, rt, sv, ref)
		}
		if rule, ok := sv.hidden.get(rt.file); ok {
			return &hiddenError{rule: rule}
		}
	}
	// Not in the served repodata (upstream removed it), or no repodata at all
	// (upstream down, nothing stored): a cached copy is still served, if the
	// filter allows its record today.
	if e, ok := s.pkgEntry(rt.channel, rt.subdir, rt.file); ok {
		var decider policy.Decider
		if sv != nil {
			decider = sv.decider
		}
		if rule := s.decideCached(rt, e, decider); rule != "" {
			return &hiddenError{rule: rule}
		}
		if _, err := s.store.Pull(r.Context(), e.SHA256); err != nil {
			return err
		}
		if blob, err := s.store.OpenBlob(e.SHA256); err == nil {
			defer blob.Close()
			s.metrics.lookup("package", "hit").Inc()
			return s.serveBlob(w, r, blob, e.SHA256)
		}
	}
	if loadErr != nil {
		return loadErr
	}
	return errNotFound
}

// decideCached asks the filter about a cached package whose record upstream no
// longer lists, from the record kept in the package index. With no decider (no
// repodata could be loaded) one is prepared from no other records: every rule but
// the dependency closure still applies.
func (s *Server) decideCached(rt route, e pkgEntry, d policy.Decider) string {
	r := entryRecord(rt.file, e)
	if r == nil {
		return ""
	}
	if d == nil {
		var perr error
		d, perr = rt.channel.policy.Prepare(rt.subdir, func(func(string, *repodata.Record)) error { return nil })
		if perr != nil {
			return ""
		}
	}
	rule, _ := d.Decide(r)
	return rule
}

// entryRecord is the repodata record kept in a package index entry, read back
// as a Record (nil when the entry kept none, or it does not parse).
func entryRecord(filename string, e pkgEntry) *repodata.Record {
	if len(e.Record) == 0 {
		return nil
	}
	section := "packages"
	if strings.HasSuffix(filename, ".conda") {
		section = "packages.conda"
	}
	key, _ := json.Marshal(filename)
	doc, err := repodata.Parse([]byte(`{"` + section + `":{` + string(key) + `:` + string(e.Record) + `}}`))
	if err != nil || len(doc.Records) != 1 {
		return nil
	}
	r := doc.Records[0]
	r.Upstream = e.Upstream
	return r
}

func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, blob *cache.Blob, sha string) error {
	packageHeaders(sha)(w.Header())
	setSource(w, blob.Source)
	if !serveWhole(w, r, blob.ReadSeeker, blob.Size, "") {
		http.ServeContent(w, r, "", zeroTime, blob.ReadSeeker)
	}
	return nil
}

func (s *Server) serveRecord(w http.ResponseWriter, r *http.Request, rt route, sv *served, ref pkgRef) error {
	refSHA, refMD5 := ref.shaHex(), ref.md5Hex()
	sha := refSHA
	if sha == "" {
		// An old record with md5 only: the index knows the sha256 once cached.
		if e, ok := s.pkgEntry(rt.channel, rt.subdir, rt.file); ok && e.MD5 == refMD5 && e.Size == ref.size {
			sha = e.SHA256
		}
	}
	if sha != "" {
		// Local only: a blob another replica put in the shared store comes in
		// through the fill (it takes the file's lock, pulls it, indexes it here).
		if blob, err := s.store.OpenBlob(sha); err == nil {
			defer blob.Close()
			s.metrics.lookup("package", "hit").Inc()
			s.indexHit(rt, sv, ref, sha)
			return s.serveBlob(w, r, blob, sha)
		}
	}
	s.metrics.lookup("package", "miss").Inc()
	if r.Method == http.MethodHead && ref.size >= 0 {
		// The record says all a HEAD needs; no download for it.
		packageHeaders(refSHA)(w.Header())
		w.Header().Set("Content-Length", strconv.FormatInt(ref.size, 10))
		w.Header().Set("Accept-Ranges", "bytes")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	if !ref.hasSHA && !ref.hasMD5 {
		// Nothing to verify against: refuse rather than cache unverifiable bytes.
		s.logger(r.Context()).Warn("record has no sha256 or md5; not fetched", "channel", rt.channel.cfg.Name,
			"subdir", rt.subdir, "file", rt.file)
		return &httpError{status: http.StatusBadGateway, msg: "the repodata record has no checksum to verify the file against"}
	}
	f := s.startPackageFill(r.Context(), rt.channel, rt.subdir, rt.file, sv, ref)
	return s.fills.Serve(w, r, f, func(w http.ResponseWriter, sha, _ string, streaming bool) {
		packageHeaders(cmp.Or(refSHA, sha))(w.Header())
		fillSource(w, streaming)
	})
}

// fillSource marks an answer from a fill: the bytes come from upstream, as they
// arrive when streaming.
func fillSource(w http.ResponseWriter, streaming bool) {
	if streaming {
		w.Header().Set("X-Condaproxy-Cache", "miss")
	}
	setSource(w, "upstream")
}

// startPackageFill starts (or joins) the one fill of channel/subdir/fn, verified
// against ref, the record sv serves. Its index entry is written once the blob is in
// place, also when the blob was already there under another path.
func (s *Server) startPackageFill(ctx context.Context, ch *channel, subdir, fn string, sv *served, ref pkgRef) *fill.Fill {
	refSHA, refMD5 := ref.shaHex(), ref.md5Hex()
	// One fill per content address: the same file asked for under two channels
	// (or two names) is one fetch. A record with md5 only is keyed by its path.
	key := stateKey("fill", ch.cfg.Name, subdir, fn)
	if refSHA != "" {
		key = "fill/sha|" + refSHA
	}
	want := cache.Digest{Size: ref.size, SHA256: refSHA, MD5: refMD5}
	log := s.logger(ctx)
	// Read now, while the caller holds sv: the fill may end after sv is retired.
	recordJSON := s.recordBytes(sv, ref)
	index := func(sha string) error {
		e := pkgEntry{SHA256: sha, MD5: refMD5, Size: ref.size, Upstream: int(ref.upstream),
			Record: recordJSON, CachedAt: s.now()}
		_, err := s.putIndex(stateKey("p", ch.cfg.Name, subdir, fn), e)
		return err
	}
	lockKey := refSHA
	if lockKey == "" {
		lockKey = ch.cfg.Name + "/" + subdir + "/" + fn
	}
	// Here already, or in the store the replicas share: no upstream request. Else
	// one fetch per file across replicas, under its lock (fill.Group.Blob).
	f := s.fills.Start(ctx, key, s.fills.Blob(refSHA, lockKey, func(ctx context.Context, f *fill.Fill) (string, error) {
		if ref.size < 0 {
			// Every conda record states its size; without one an upstream could
			// send bytes without end before the digest is ever checked.
			return "", &httpError{status: http.StatusBadGateway, msg: "the repodata record has no size to bound the download by"}
		}
		if limit := int64(s.cfg.Cache.MaxSize); limit > 0 && ref.size > limit {
			// It could never stay cached, and a hostile record could otherwise
			// park any size past the cap while it is served.
			return "", &httpError{status: http.StatusBadGateway, msg: "the package is larger than this proxy's whole cache (cache.max_size); nothing was fetched"}
		}
		if int(ref.upstream) >= len(ch.sources) {
			// An imported record whose file left the cache: no upstream to ask.
			return "", fmt.Errorf("%s/%s/%s came by import and is no longer cached; import it again: %w",
				ch.cfg.Name, subdir, fn, upstream.ErrNotFound)
		}
		src := ch.sources[ref.upstream]
		u, err := upstream.Join(sv.pkgBase[ref.upstream], fn)
		if err != nil {
			return "", err
		}
		resp, err := s.up.GetURL(ctx, src, u, upstream.Conditional{})
		if err != nil {
			log.Warn("package fetch failed", "channel", ch.cfg.Name, "subdir", subdir, "file", fn,
				"upstream", src.String(), "err", err)
			return "", err
		}
		defer resp.Body.Close()
		if resp.Status != http.StatusOK {
			return "", unasked304(src, fn)
		}
		sha, err := s.fills.Download(ctx, f, s.download(resp, want, ch, 0))
		if err != nil {
			log.Error("package fill failed; nothing cached", "channel", ch.cfg.Name, "subdir", subdir,
				"file", fn, "upstream", src.String(), "err", err)
			return "", err
		}
		log.Info("package cached", "channel", ch.cfg.Name, "subdir", subdir, "file", fn, "size", ref.size)
		return f.Committed(sha)
	}))
	// Every caller's path is indexed once the blob is in place, the fill's
	// starter's and every joiner's alike.
	if err := f.AfterCommit(index); err != nil {
		log.Warn("cannot index a cached package", "channel", ch.cfg.Name, "subdir", subdir, "file", fn, "err", err)
	}
	return f
}

// recordBytes copies one record's JSON out of the served file, for the package index.
func (s *Server) recordBytes(sv *served, ref pkgRef) []byte {
	if ref.n <= 0 {
		return nil
	}
	blob, err := s.store.OpenFile(sv.json.Name)
	if err != nil {
		return nil
	}
	defer blob.Close()
	buf := make([]byte, ref.n)
	if _, err := blob.Seek(ref.off, io.SeekStart); err != nil {
		return nil
	}
	if _, err := io.ReadFull(blob, buf); err != nil {
		return nil
	}
	return buf
}

// sourceSetter is implemented by the response writer wrapper that counts bytes by
// their source for metrics.
type sourceSetter interface{ setSource(string) }

// download is resp as a fill.Download checked against want, its mismatches
// counted against ch; limit as fill.Download.Limit.
func (s *Server) download(resp *upstream.Response, want cache.Digest, ch *channel, limit int64) fill.Download {
	return fill.Download{Body: resp.Body, Size: resp.Size, LastModified: resp.LastModified, Want: want, Limit: limit,
		OnMismatch: func() { s.metrics.ChecksumFailures.WithLabelValues(ch.cfg.Name).Inc() }}
}

func setSource(w http.ResponseWriter, src string) {
	if s, ok := w.(sourceSetter); ok {
		s.setSource(src)
	}
}

// indexHit makes sure a path served from a blob another path brought in is
// indexed under its own name too: then a purge, a clean or an eviction of the
// other path knows the bytes are still held here. Checked once per path and
// process (a hot hit pays a map lookup).
func (s *Server) indexHit(rt route, sv *served, ref pkgRef, sha string) {
	key := stateKey("p", rt.channel.cfg.Name, rt.subdir, rt.file)
	if _, ok := s.indexed.Load(key); ok {
		return
	}
	var e pkgEntry
	if ok, err := s.store.Meta.Get(key, &e); err == nil && (!ok || e.SHA256 != sha) {
		e = pkgEntry{SHA256: sha, MD5: ref.md5Hex(), Size: ref.size, Upstream: int(ref.upstream),
			Record: s.recordBytes(sv, ref), CachedAt: s.now()}
		// Not remembered while deferred: the entry may yet be taken back, and
		// the next hit looks again.
		if deferred, err := s.putIndex(key, e); err != nil || deferred {
			return
		}
	}
	s.indexed.Store(key, struct{}{})
}
