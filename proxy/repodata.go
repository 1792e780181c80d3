package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/repodata"
	"github.com/condaproxy/condaproxy/upstream"
)

// How repodata moves through the proxy:
//
//   upstream repodata.json(.zst) --fetch--> raw file + upState (per upstream)
//   raw files of all upstreams --merge, policy.Cut, encode--> served JSON file + served
//   served JSON --compress on first ask--> .zst, .bz2, .gz, current_repodata.json
//
// A served is immutable once published; a revalidation that changes anything builds
// a new one and swaps the pointer. Only the build reads upstream bytes, so filtering
// runs once per upstream revision and policy, never per request.

// failureBackoff is the least time between two background revalidations of a subdir
// whose last one failed: an upstream outage is not hammered once per request.
const failureBackoff = 15 * time.Second

// buildTimeout bounds one repodata build, fetches included. It runs detached from
// the request that asked, so a client hanging up does not waste the download.
const buildTimeout = 10 * time.Minute

// upState is what the proxy knows of one upstream's repodata for one subdir.
type upState struct {
	URL          string    `json:"url"` // identity of the upstream (hashed), so a config change refetches
	Found        bool      `json:"found"`
	File         string    `json:"file,omitempty"` // the raw JSON, a named cache file
	SHA          string    `json:"sha,omitempty"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	Encoding     string    `json:"encoding,omitempty"` // "zst" or "": which form upstream served
	CheckedAt    time.Time `json:"checked_at"`

	// head is the document's head (info, removed, version) as the fetch that
	// validated it read it, detached from the document's bytes, so the build
	// that asked need not scan for it again.
	head *repodata.Doc
}

// servedState persists what a restart must not change: the answer's Last-Modified
// and the compressed forms already made.
type servedState struct {
	JSON         variantFile            `json:"json"`
	LastModified time.Time              `json:"last_modified"`
	Variants     map[string]variantFile `json:"variants,omitempty"`
}

type variantFile struct {
	Name string `json:"name"`
	SHA  string `json:"sha"`
	Size int64  `json:"size"`
}

// pkgRef is what serving and verifying one package needs. It is kept compact (no
// record bytes) because conda-forge's linux-64 has ~700k records.
type pkgRef struct {
	// digest is the sha256, or, for an old record without one, the md5 in its
	// first 16 bytes. One digest is enough to verify; keeping both would cost 16
	// bytes a record for nothing.
	digest         [32]byte
	size           int64
	off            int64 // where the record's JSON starts in the served file
	n              int32 // its length: copied into the package index when cached
	upstream       int16
	hasSHA, hasMD5 bool
}

func (p pkgRef) shaHex() string {
	if !p.hasSHA {
		return ""
	}
	return hex.EncodeToString(p.digest[:])
}

func (p pkgRef) md5Hex() string {
	if p.hasSHA || !p.hasMD5 {
		return ""
	}
	return hex.EncodeToString(p.digest[:16])
}

// served is one published answer for a subdir.
type served struct {
	checkedNS    atomic.Int64 // unix ns of the oldest successful validation among the upstreams
	inputs       string       // what it was cut from: upstream revisions and the policy
	notFound     bool         // every upstream answered 404
	json         variantFile
	lastModified time.Time
	// lastModifiedHTTP is lastModified formatted for the header, once.
	lastModifiedHTTP string
	packages         *nameIndex[pkgRef]
	hidden           *nameIndex[string] // filename -> the rule that hid it
	decider          policy.Decider     // for explaining a hidden record's detail
	// pkgBase[i] is the directory where upstream i keeps this subdir's packages
	// (nil for the imported source), checked by upstream.Source.PackageBase.
	pkgBase []*url.URL

	mu       sync.Mutex
	variants map[string]variantFile

	// search is the sorted filenames the admin API searches, made on first ask.
	search searchIndex

	// shardsFailedNS is when making this generation's shard index last failed
	// (unix ns): asked again within shardRetryAfter, the answer is 404 at
	// once, not another whole build (shards.go).
	shardsFailedNS atomic.Int64

	// gen counts readers and says retired/dead: see generation.go.
	gen atomic.Int64
	// orphanFiles, set only on a placeholder generation, are files of an answer
	// published before a restart, handed to the collector.
	orphanFiles []string
}

func (sv *served) checked() time.Time { return time.Unix(0, sv.checkedNS.Load()) }

// subdir is the live state of one channel subdir.
type subdir struct {
	ch   *channel
	name string
	cur  atomic.Pointer[served]

	refreshing atomic.Bool
	mu         sync.Mutex
	lastErr    error // of the latest revalidation; nil after a success
	failedAt   time.Time

	// stateMu orders the writes of the persisted state ("s/"): publish and
	// persist.
	stateMu sync.Mutex

	// shards is the subdir's sharded repodata (shards.go).
	shards subdirShards

	// gcMu guards retired: generations no longer published whose files wait
	// for their last reader.
	gcMu    sync.Mutex
	retired []*served
}

func (c *channel) subdir(name string) *subdir {
	c.mu.Lock()
	defer c.mu.Unlock()
	sd, ok := c.subdirs[name]
	if !ok {
		sd = &subdir{ch: c, name: name}
		c.subdirs[name] = sd
	}
	return sd
}

func stateKey(prefix, channel, subdir string, rest ...string) string {
	return prefix + "/" + channel + "|" + strings.Join(append([]string{subdir}, rest...), "|")
}

func shortHash(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:8])
}

// load returns the subdir's current answer, building it on first use, and starts a
// background revalidation when it is older than metadata_ttl.
func (s *Server) load(ctx context.Context, sd *subdir) (*served, error) {
	sv := sd.cur.Load()
	if sv == nil || (sv.notFound && s.now().Sub(sv.checked()) >= s.cfg.Cache.NegativeTTL.D()) {
		// Nothing to serve yet (or only a remembered 404 that has expired): the
		// client waits for the build. Concurrent callers share it.
		refresh := sv != nil
		v, err, _ := s.loads.Do(stateKey("load", sd.ch.cfg.Name, sd.name), func() (any, error) {
			if cur := sd.cur.Load(); cur != sv && cur != nil {
				return cur, nil // built while we queued
			}
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), buildTimeout)
			defer cancel()
			stop := context.AfterFunc(s.base, cancel)
			defer stop()
			return s.guardedBuild(bctx, sd, refresh)
		})
		if err != nil {
			return nil, err
		}
		sv = v.(*served)
		s.metrics.lookup("repodata", "miss").Inc()
		return sv, nil
	}
	if sv.notFound {
		s.metrics.lookup("repodata", "negative").Inc()
		return sv, nil
	}
	if s.now().Sub(sv.checked()) >= s.cfg.Cache.MetadataTTL.D() {
		s.metrics.lookup("repodata", "stale").Inc()
		s.revalidate(ctx, sd)
	} else {
		s.metrics.lookup("repodata", "hit").Inc()
	}
	return sv, nil
}

// guardedBuild is build under guard: a panic fails this build, and the last good
// answer stays published. It runs inside singleflight, whose callers would all
// re-panic otherwise.
func (s *Server) guardedBuild(ctx context.Context, sd *subdir, refresh bool) (sv *served, err error) {
	err = s.guard("build", func() (err error) { sv, err = s.build(ctx, sd, refresh); return err })
	if err != nil {
		return nil, err
	}
	return sv, nil
}

// revalidate starts one background refresh of sd, unless one is running or the
// last one failed less than failureBackoff ago.
func (s *Server) revalidate(ctx context.Context, sd *subdir) {
	sd.mu.Lock()
	recent := sd.lastErr != nil && s.now().Sub(sd.failedAt) < failureBackoff
	sd.mu.Unlock()
	if recent || !sd.refreshing.CompareAndSwap(false, true) {
		return
	}
	log := s.logger(ctx)
	started := s.background(func() {
		defer sd.refreshing.Store(false)
		bctx, cancel := context.WithTimeout(s.base, buildTimeout)
		defer cancel()
		_, err, _ := s.loads.Do(stateKey("load", sd.ch.cfg.Name, sd.name), func() (any, error) {
			return s.guardedBuild(bctx, sd, true)
		})
		if err != nil {
			log.Warn("repodata revalidation failed; serving the last good copy",
				"channel", sd.ch.cfg.Name, "subdir", sd.name, "err", err)
		}
	})
	if !started {
		sd.refreshing.Store(false)
	}
}

// staleAge is how long past its validation sv is, when the latest attempt to
// revalidate it failed; 0 otherwise.
func (s *Server) staleAge(sd *subdir, sv *served) time.Duration {
	sd.mu.Lock()
	failing := sd.lastErr != nil
	sd.mu.Unlock()
	age := s.now().Sub(sv.checked())
	if !failing || age < s.cfg.Cache.MetadataTTL.D() {
		return 0
	}
	return age
}

// upstreamState returns upstream i's state for sub, fetching when there is none or
// when refresh asks. On a failed fetch it returns the previous state (the last good
// copy) with the error.
func (s *Server) upstreamState(ctx context.Context, ch *channel, sub string, i int, refresh bool) (*upState, error) {
	key := stateKey("u", ch.cfg.Name, sub, strconv.Itoa(i))
	src := ch.sources[i]
	id := shortHash(src.Base.String())
	var prev upState
	found, err := s.store.Meta.Get(key, &prev)
	if err != nil {
		return nil, err
	}
	if found && prev.URL != id {
		found = false // the configured upstream changed: its old copy is not this one's
	}
	if found && !refresh {
		return &prev, nil
	}
	if found && refresh && !prev.Found && s.now().Sub(prev.CheckedAt) < s.cfg.Cache.NegativeTTL.D() {
		return &prev, nil // a 404 still remembered
	}
	var prevp *upState
	if found {
		prevp = &prev
	}
	// One fetch per upstream copy at a time: the subdir's own build and another
	// subdir's build (include_dependencies) may both want it.
	v, err, _ := s.loads.Do("fetch|"+key, func() (any, error) {
		// The state as it is now: a fetch that ran since this caller read it
		// recorded a newer one, whose file this one replaces.
		var now upState
		if ok, err := s.store.Meta.Get(key, &now); err == nil && ok && now.URL == id {
			prevp = &now
		}
		st, err := s.sharedFetch(ctx, ch, sub, i, prevp, key, id)
		if err != nil {
			return nil, err
		}
		if st == prevp {
			return st, nil // another replica revalidates: nothing new yet
		}
		st.URL = id
		if err := s.store.Meta.Put(key, st); err != nil {
			if prevp == nil || st.File != prevp.File {
				s.store.RemoveFile(st.File) // no state names it
			}
			return nil, err
		}
		// Recorded first, removed after: a reader of the old state that finds its
		// file gone reads the state again (readUpstream).
		if prevp != nil && prevp.File != "" && prevp.File != st.File {
			s.store.RemoveFile(prevp.File)
		}
		return st, nil
	})
	if err != nil {
		s.logger(ctx).Warn("upstream repodata fetch failed", "channel", ch.cfg.Name, "subdir", sub,
			"upstream", src.String(), "err", err)
		return prevp, err
	}
	st := v.(*upState)
	return st, nil
}

// fetchRepodata asks upstream i for sub's repodata: repodata.json.zst first (a
// tenth of the bytes), repodata.json when upstream has no .zst. The answer must
// parse and name the right subdir before it replaces anything.
func (s *Server) fetchRepodata(ctx context.Context, ch *channel, sub string, i int, prev *upState) (*upState, error) {
	src := ch.sources[i]
	forms := []string{"zst", ""}
	if prev != nil && prev.Found && prev.Encoding == "" {
		forms = []string{"", "zst"}
	}
	for _, enc := range forms {
		name := sub + "/repodata.json"
		if enc != "" {
			name += "." + enc
		}
		var cond upstream.Conditional
		if prev != nil && prev.Found && prev.Encoding == enc {
			cond = upstream.Conditional{ETag: prev.ETag, LastModified: prev.LastModified}
		}
		resp, err := s.up.Get(ctx, src, name, cond)
		if errors.Is(err, upstream.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if resp.Status == http.StatusNotModified {
			if prev == nil || cond == (upstream.Conditional{}) {
				return nil, unasked304(src, name)
			}
			st := *prev
			st.CheckedAt = s.now()
			return &st, nil
		}
		st, err := s.storeRepodata(ch, sub, i, enc, resp)
		var local *fs.PathError
		if errors.As(err, &local) {
			// The local disk refused (full, read-only): not the upstream's fault,
			// and not reported as one. The last good copy stays in service.
			return nil, fmt.Errorf("store repodata of %s/%s: %w", ch.cfg.Name, sub, err)
		}
		if err != nil {
			// Unusable bytes are an upstream failure (502), like a 5xx: the last
			// good copy stays in service.
			return nil, &upstream.Error{URL: src.String() + "/" + name, Err: err}
		}
		return st, nil
	}
	return &upState{Found: false, CheckedAt: s.now()}, nil
}

func (s *Server) storeRepodata(ch *channel, sub string, i int, enc string, resp *upstream.Response) (*upState, error) {
	defer resp.Body.Close()
	dec, err := repodata.DecompressLimit(resp.Body, enc, int64(s.cfg.Limits.MaxRepodata))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	// To disk first, then read back at its exact size: a growing buffer would
	// hold up to twice a 300 MB document while it doubles.
	prefix := "raw-" + shortHash(ch.cfg.Name, sub, strconv.Itoa(i))
	incoming := uniqueName(prefix+"-incoming", "")
	_, sha, err := s.store.WriteFile(incoming, func(w io.Writer) error { _, err := io.Copy(w, dec); return err })
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	head, err := s.validStored(incoming, sub)
	if err != nil {
		s.store.RemoveFile(incoming)
		return nil, err
	}
	name := uniqueName(prefix+"-"+sha[:16], ".json")
	if err := s.store.RenameFile(incoming, name); err != nil {
		return nil, err
	}
	return &upState{Found: true, File: name, SHA: sha, ETag: resp.ETag, LastModified: resp.LastModified,
		Encoding: enc, CheckedAt: s.now(), head: head}, nil
}

// validStored checks the stored file name as validRepodata does, through a
// memory map whose pages are given back as the scan passes them: a 300 MB
// document is never on the heap, nor resident whole. The head it returns
// aliases nothing.
func (s *Server) validStored(name, sub string) (*repodata.Doc, error) {
	// A read error under the map is a fault: a panic (recovered by the
	// caller's guard), not the death of the process.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	m, err := s.store.Map(name)
	if err != nil {
		return nil, fmt.Errorf("read stored repodata: %w", err)
	}
	defer m.Close()
	head, err := validRepodata(m.Bytes(), sub, m.Drop)
	if err != nil {
		return nil, err
	}
	return head.Detach(), nil
}

// validRepodata checks a whole upstream document before it replaces anything:
// valid JSON, every record well formed, and the subdir that was asked for.
// behind is the scan's ScanOptions.Behind.
func validRepodata(data []byte, sub string, behind func(int)) (*repodata.Doc, error) {
	d, err := repodata.ScanWith(data, repodata.ScanOptions{Behind: behind}, func(*repodata.Record) error { return nil })
	if err != nil {
		return nil, fmt.Errorf("upstream sent unusable repodata: %w", err)
	}
	if got := d.Subdir(); got != "" && got != sub {
		return nil, fmt.Errorf("upstream sent repodata for subdir %q where %q was asked", got, sub)
	}
	return d, nil
}

// Content types of the repodata forms.
var variantTypes = map[string]string{
	"json": "application/json", "current": "application/json", "gz": "application/json",
	"zst": "application/zstd", "bz2": "application/x-bzip2",
	"shards": "application/octet-stream",
}

// servedSubdir returns rt's subdir and its current answer, with a reader counted
// in until done is called; a subdir that no upstream has, or that the policy does
// not serve, is errNotFound.
func (s *Server) servedSubdir(ctx context.Context, rt route) (sd *subdir, sv *served, done func(), err error) {
	if err := s.checkSubdir(rt); err != nil {
		return nil, nil, nil, err
	}
	sd = rt.channel.subdir(rt.subdir)
	sv, done, err = s.use(ctx, sd)
	if err != nil {
		return nil, nil, nil, err
	}
	if sv.notFound {
		done()
		return nil, nil, nil, errNotFound
	}
	return sd, sv, done, nil
}

func (s *Server) serveRepodata(w http.ResponseWriter, r *http.Request, rt route) error {
	sd, sv, done, err := s.servedSubdir(r.Context(), rt)
	if err != nil {
		return err
	}
	defer done()
	variant := rt.variant
	if variant == "json" && acceptsGzip(r) {
		variant = "gz"
	}
	if variant == "json" {
		err := s.serveNamed(w, r, sd, sv, sv.json, variantTypes[variant], false, true)
		if errors.Is(err, cache.ErrNotFound) {
			// The published file went missing (a crash before its directory
			// reached the disk, a hand in the data directory): this answer
			// fails, the next request builds a new one.
			s.log.Error("a published repodata file is missing; rebuilding", "channel", sd.ch.cfg.Name, "subdir", sd.name, "file", sv.json.Name)
			s.replace(sd, nil)
		}
		return err
	}
	return s.serveVariant(w, r, sd, sv, variant, variantTypes[variant], variant == "gz", rt.variant == "json")
}

// serveNamed answers with a named file made from sv: a repodata form or a
// filtered metadata file.
func (s *Server) serveNamed(w http.ResponseWriter, r *http.Request, sd *subdir, sv *served, vf variantFile, ctype string, gz, vary bool) error {
	blob, err := s.store.OpenFile(vf.Name)
	if errors.Is(err, cache.ErrNotFound) {
		return fmt.Errorf("served file %s is missing: %w", vf.Name, err)
	}
	if err != nil {
		return err
	}
	defer blob.Close()
	// Canonical keys assigned directly, shared value slices (net/http only
	// reads them): Header.Set canonicalizes and allocates per call, a
	// measurable share of a hot 4 KiB answer.
	h := w.Header()
	h["Content-Type"] = []string{ctype}
	untrustedContent(h, ctype)
	h["Etag"] = []string{`"` + vf.SHA + `"`}
	h["Cache-Control"] = s.metadataCacheControl
	if gz {
		h["Content-Encoding"] = gzipEncoding
	}
	if vary {
		h["Vary"] = append(h["Vary"], "Accept-Encoding")
	}
	if age := s.staleAge(sd, sv); age > 0 {
		h.Set("X-Condaproxy-Stale", strconv.Itoa(int(age.Seconds())))
		s.metrics.StaleAnswers.WithLabelValues(sd.ch.cfg.Name).Inc()
	}
	setSource(w, blob.Source)
	if !serveWhole(w, r, blob.ReadSeeker, blob.Size, sv.lastModifiedHTTP) {
		http.ServeContent(w, r, "", sv.lastModified, blob.ReadSeeker)
	}
	return nil
}

var gzipEncoding = []string{"gzip"}

func acceptsGzip(r *http.Request) bool {
	rest := r.Header.Get("Accept-Encoding")
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, ",")
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") {
			return !strings.Contains(strings.ReplaceAll(params, " ", ""), "q=0") || strings.Contains(params, "q=0.")
		}
	}
	return false
}

// variant returns a derived form of sv's JSON, making it on first ask. Concurrent
// askers share one build.
func (s *Server) variant(ctx context.Context, sd *subdir, sv *served, name string) (variantFile, error) {
	sv.mu.Lock()
	vf, ok := sv.variants[name]
	sv.mu.Unlock()
	if ok {
		return vf, nil
	}
	// One build per generation and form: two generations never share a form's
	// file, so one's collection never removes the other's.
	v, err, _ := s.loads.Do(fmt.Sprintf("variant|%p|%s", sv, name), func() (any, error) {
		sv.mu.Lock()
		vf, ok := sv.variants[name]
		sv.mu.Unlock()
		if ok {
			return vf, nil
		}
		err := s.guard("variant", func() (err error) { vf, err = s.makeVariant(sd, sv, name); return err })
		if err != nil {
			return nil, err
		}
		var superseded []string
		sv.mu.Lock()
		if strings.HasPrefix(name, "run_exports-") {
			// One filtered run_exports.json a generation: the one for upstream's
			// current copy. Older ones would pile up while the repodata stays
			// the same.
			for k, old := range sv.variants {
				if strings.HasPrefix(k, "run_exports-") {
					delete(sv.variants, k)
					superseded = append(superseded, old.Name)
				}
			}
		}
		sv.variants[name] = vf
		sv.mu.Unlock()
		if err := s.persist(sd, sv); err != nil {
			return nil, err
		}
		if len(superseded) > 0 {
			s.retireFiles(sd, superseded...)
		}
		return vf, nil
	})
	if err != nil {
		return variantFile{}, err
	}
	return v.(variantFile), nil
}

// persist records sv's state (its files, Last-Modified) while sv is the
// published answer. Under sd.stateMu, which publish holds too, so an older
// generation never writes over a newer one's state.
func (s *Server) persist(sd *subdir, sv *served) error {
	sd.stateMu.Lock()
	defer sd.stateMu.Unlock()
	if sd.cur.Load() != sv {
		return nil
	}
	sv.mu.Lock()
	st := servedState{JSON: sv.json, LastModified: sv.lastModified, Variants: maps.Clone(sv.variants)}
	sv.mu.Unlock()
	return s.store.Meta.Put(stateKey("s", sd.ch.cfg.Name, sd.name), st)
}

// forgetVariant drops a form whose file has gone missing (a crash before the
// directory reached the disk, a hand cleaning the data directory): the next ask
// makes it again, instead of failing every request for it.
func (s *Server) forgetVariant(sd *subdir, sv *served, name string) {
	sv.mu.Lock()
	delete(sv.variants, name)
	sv.mu.Unlock()
	if err := s.persist(sd, sv); err != nil {
		s.log.Warn("forget a missing repodata form", "channel", sd.ch.cfg.Name, "subdir", sd.name, "form", name, "err", err)
	}
}

func (s *Server) makeVariant(sd *subdir, sv *served, name string) (variantFile, error) {
	file, write, closeSrc, err := s.variantMaker(sd, sv, name)
	if err != nil {
		return variantFile{}, err
	}
	defer closeSrc()
	size, sha, err := s.store.WriteFile(file, write)
	if err != nil {
		return variantFile{}, err
	}
	return variantFile{Name: file, SHA: sha, Size: size}, nil
}

// variantMaker returns the file name of sv's form name and a function that
// writes it; closeSrc releases what it reads.
func (s *Server) variantMaker(sd *subdir, sv *served, name string) (file string, write func(w io.Writer) error, closeSrc func(), err error) {
	src, err := s.store.OpenFile(sv.json.Name)
	if err != nil {
		return "", nil, nil, err
	}
	closeSrc = func() { src.Close() }
	// A name of its own, never another generation's (see variant).
	base := uniqueName(strings.TrimSuffix(sv.json.Name, ".json"), "")
	file = base + "." + name
	switch name {
	case "zst", "bz2":
		write = func(w io.Writer) error { return repodata.Compress(w, src, name) }
	case "gz":
		write = func(w io.Writer) error { return gzipTo(w, src) }
	case "shards":
		// The index; building it writes the shards it names first.
		file = base + ".shards.msgpack.zst"
		write = func(w io.Writer) error {
			index, err := s.buildShards(s.base, sd, sv)
			if err != nil {
				return err
			}
			_, err = w.Write(index)
			return err
		}
	case "current":
		file = base + ".current.json"
		write = func(w io.Writer) error {
			// Mapped, not read: the served document can be hundreds of MB.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			m, err := s.store.Map(sv.json.Name)
			if err != nil {
				return err
			}
			defer m.Close()
			return repodata.WriteCurrent(w, m.Bytes(), compareVersions)
		}
	default:
		sha, ok := strings.CutPrefix(name, "run_exports-")
		if !ok {
			src.Close()
			return "", nil, nil, fmt.Errorf("unknown repodata form %q", name)
		}
		// run_exports.json cut to the served records: hidden means hidden everywhere.
		file = base + ".runexports-" + sha[:16] + ".json"
		write = func(w io.Writer) error {
			blob, err := s.store.OpenBlob(sha)
			if err != nil {
				return err
			}
			defer blob.Close()
			data, err := io.ReadAll(blob)
			if err != nil {
				return err
			}
			return repodata.FilterPackages(w, data, sv.packages.has)
		}
	}
	return file, write, closeSrc, nil
}

// serveVariant answers with sv's form name, made and stored on first ask. When
// it cannot be stored (a full disk: the local file system refused the write), it
// is made for this client alone, streamed as it is encoded: what is already
// published keeps being served, in every form, whatever the disk.
func (s *Server) serveVariant(w http.ResponseWriter, r *http.Request, sd *subdir, sv *served, name, ctype string, gz, vary bool) error {
	vf, err := s.variant(r.Context(), sd, sv, name)
	if err == nil {
		err = s.serveNamed(w, r, sd, sv, vf, ctype, gz, vary)
		if !errors.Is(err, cache.ErrNotFound) {
			return err
		}
		// Its file went missing: make it again, once.
		s.forgetVariant(sd, sv, name)
		if vf, err = s.variant(r.Context(), sd, sv, name); err == nil {
			return s.serveNamed(w, r, sd, sv, vf, ctype, gz, vary)
		}
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || r.Context().Err() != nil {
		return err
	}
	s.logger(r.Context()).Warn("cannot store a repodata form; making it for this request alone",
		"channel", sd.ch.cfg.Name, "subdir", sd.name, "form", name, "err", err)
	if gz {
		// Plain JSON is as good an answer to a client that accepts gzip.
		return s.serveNamed(w, r, sd, sv, sv.json, ctype, false, vary)
	}
	// A few at a time: each compresses a whole document (current maps it).
	select {
	case s.direct <- struct{}{}:
		defer func() { <-s.direct }()
	default:
		w.Header().Set("Retry-After", "10")
		return &httpError{status: http.StatusServiceUnavailable, msg: "the proxy's disk is full; try again shortly"}
	}
	_, write, closeSrc, err := s.variantMaker(sd, sv, name)
	if err != nil {
		return err
	}
	defer closeSrc()
	h := w.Header()
	h.Set("Content-Type", ctype)
	untrustedContent(h, ctype)
	h.Set("Cache-Control", "no-store") // no validator: nothing to revalidate against
	if age := s.staleAge(sd, sv); age > 0 {
		h.Set("X-Condaproxy-Stale", strconv.Itoa(int(age.Seconds())))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	if err := write(w); err != nil {
		return err // headers are out: the connection is broken off, never a partial "whole"
	}
	return nil
}
