package proxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/shards"
	"github.com/condaproxy/condaproxy/upstream"
)

// Sharded repodata (CEP-16), made from each generation's served repodata.json
// (package shards encodes it). The index is a form of the generation, like
// repodata.json.zst: made on first ask, named after it, collected with it. The
// shards outlive generations: a client holding an older index asks for the
// shards it names, for up to a week (rattler, conda and mamba cache an index
// for hours to a day), so they are kept apart from the generations:
//
//   - In packs, named files of many shards each: one build writes one pack with
//     one fsync, not one file (and two fsyncs) per name; 30,000 names is one
//     file.
//   - Indexed per subdir by shardState in the metadata store: the shards the
//     latest index names, by package name, and those no index names any more,
//     by sha256, with the time they were dropped. A dropped shard is served for
//     shardRetention; a pack goes when no kept shard is in it.
//   - Incremental: a name whose records did not change (shards.Fingerprint)
//     keeps its shard; only changed names are encoded again.
//
// Order on disk: the pack is written and synced, then the state naming it,
// then the index: no index ever names a shard that is not there.

// shardRetention is how long a shard stays served after the last index that
// named it was replaced (CEP-16 asks servers to keep them about a week).
const shardRetention = 7 * 24 * time.Hour

// shardState is what a subdir's shards are, persisted under stateKey("shards").
type shardState struct {
	// Gen is the generation (served.inputs) Names are the index of.
	Gen string `json:"gen,omitempty"`
	// Names are the shards of the latest index, by package name.
	Names map[string]shardEntry `json:"names"`
	// Old are shards no index names any more, by sha256 (hex).
	Old map[string]shardLoc `json:"old,omitempty"`
}

type shardEntry struct {
	FP  string `json:"fp"`  // shards.Fingerprint of the records, hex
	SHA string `json:"sha"` // of the shard's bytes, hex
	shardLoc
}

// shardLoc is where a shard's bytes are: a range of a pack.
type shardLoc struct {
	Pack    string    `json:"pack"`
	Off     int64     `json:"off"`
	Size    int64     `json:"size"`
	Dropped time.Time `json:"dropped,omitzero"`
}

// shardTable is a subdir's shard state in memory, for serving: every kept
// shard by sha256.
type shardTable struct {
	state shardState
	bySHA map[string]shardLoc
	named map[string]bool // the shards the latest index names
}

func newShardTable(st shardState) *shardTable {
	t := &shardTable{state: st, bySHA: make(map[string]shardLoc, len(st.Names)+len(st.Old)),
		named: make(map[string]bool, len(st.Names))}
	maps.Copy(t.bySHA, st.Old)
	for _, e := range st.Names {
		t.bySHA[e.SHA] = e.shardLoc
		t.named[e.SHA] = true
	}
	return t
}

// known reports whether l is a shard's place (the zero shardLoc is none).
func (l shardLoc) known() bool { return l.Pack != "" }

// packs are the pack files t's shards are in.
func (t *shardTable) packs() map[string]bool {
	out := map[string]bool{}
	for _, l := range t.bySHA {
		out[l.Pack] = true
	}
	return out
}

// subdirShards is a subdir's shard table and the locks around it.
type subdirShards struct {
	// buildMu orders builds and expiries: one at a time.
	buildMu sync.Mutex
	// table is what is served, read without a lock: a shard request never
	// waits for a build (which takes seconds on conda-forge's size).
	table  atomic.Pointer[shardTable]
	loadMu sync.Mutex // the first read from the metadata store
}

// shardTableOf returns sd's shard table, read from the metadata store on first
// use; nil when it has none.
func (s *Server) shardTableOf(sd *subdir) (*shardTable, error) {
	if t := sd.shards.table.Load(); t != nil {
		return t, nil
	}
	sd.shards.loadMu.Lock()
	defer sd.shards.loadMu.Unlock()
	if t := sd.shards.table.Load(); t != nil {
		return t, nil
	}
	var st shardState
	ok, err := s.store.Meta.Get(stateKey("shards", sd.ch.cfg.Name, sd.name), &st)
	if err != nil || !ok {
		return nil, err
	}
	t := newShardTable(st)
	if !sd.shards.table.CompareAndSwap(nil, t) {
		return sd.shards.table.Load(), nil // a build stored a newer one meanwhile
	}
	return t, nil
}

// errShardsTooLarge is a subdir whose shards clients would refuse (one name's
// records past what conda decompresses): it is served without shards.
var errShardsTooLarge = errors.New("a package name's records are larger than a client accepts in one shard")

// shardUploads bounds the shards put in the object store at once, and
// shardUploadTimeout each one: an object store that hangs does not hold a
// build (and every index request waiting for it).
const (
	shardUploads       = 8
	shardUploadTimeout = 30 * time.Second
)

// buildShards makes the shards of sv (those not already kept) and returns its
// index. It reads sv's served file through a memory map: the document is not
// held on the heap, and the records are encoded one name at a time. sv may be
// an older generation than the one published (a request that took it just
// before a refresh): its shards are kept, as dropped ones, but the current
// names stay the current generation's.
func (s *Server) buildShards(ctx context.Context, sd *subdir, sv *served) (_ []byte, err error) {
	sd.shards.buildMu.Lock()
	defer sd.shards.buildMu.Unlock()
	prev, err := s.shardTableOf(sd)
	if err != nil {
		return nil, err
	}
	if prev == nil {
		prev = newShardTable(shardState{})
	}
	m, err := s.store.Map(sv.json.Name)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	data := m.Bytes()
	// A read error of a mapped file is a fault, not an error: made a panic
	// here, which guard turns into a failed build, not a dead process.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	groups, err := shards.Group(data)
	if err != nil {
		return nil, err
	}
	now := s.now()
	current := sd.cur.Load() == sv
	named := make(map[string]shardEntry, len(groups)) // sv's index
	var todo []string                                 // names whose shard must be encoded
	fps := make(map[string]string, len(groups))
	for name, recs := range groups {
		var size int
		for _, r := range recs {
			size += len(r.Raw)
		}
		if size > shards.MaxShardSize {
			return nil, fmt.Errorf("%s: %w", name, errShardsTooLarge)
		}
		fp := shards.Fingerprint(recs)
		fps[name] = hex.EncodeToString(fp[:])
		if e, ok := prev.state.Names[name]; ok && e.FP == fps[name] {
			named[name] = e
			continue
		}
		todo = append(todo, name)
	}
	slices.Sort(todo) // the pack's order, so that equal inputs give equal packs
	if len(todo) > 0 {
		made, err := s.writeShards(ctx, sd, prev, groups, todo, fps)
		if err != nil {
			return nil, err
		}
		maps.Copy(named, made)
	}
	next := shardState{Gen: sv.inputs, Names: named, Old: map[string]shardLoc{}}
	if !current {
		// Not the published generation: what it names is kept, as dropped
		// now, beside the current names.
		next.Names, next.Gen = prev.state.Names, prev.state.Gen
	}
	inNext := make(map[string]bool, len(next.Names))
	for _, e := range next.Names {
		inNext[e.SHA] = true
	}
	drop := func(e shardEntry) {
		if !inNext[e.SHA] {
			l := e.shardLoc
			l.Dropped = now
			next.Old[e.SHA] = l
		}
	}
	for _, e := range prev.state.Names {
		drop(e)
	}
	if !current {
		for _, e := range named {
			drop(e)
		}
	}
	for sum, l := range prev.state.Old {
		if _, ok := next.Old[sum]; !ok && !inNext[sum] && now.Sub(l.Dropped) < shardRetention {
			next.Old[sum] = l
		}
	}
	if _, _, err := s.publishShards(sd, prev, next); err != nil {
		return nil, err
	}
	index := make(map[string][32]byte, len(named))
	for name, e := range named {
		var sum [32]byte
		hex.Decode(sum[:], []byte(e.SHA))
		index[name] = sum
	}
	if len(todo) > 0 {
		s.log.Info("sharded repodata built", "channel", sd.ch.cfg.Name, "subdir", sd.name,
			"names", len(named), "encoded", len(todo), "kept_old", len(next.Old))
	}
	return shards.EncodeIndex(sd.name, sv.lastModified, index)
}

// writeShards encodes the shards of todo into a new pack, synced, and (with an
// object store) puts each new one there too, for the replicas that never cut
// this generation; it returns their entries. A shard whose bytes are kept
// already is not written again.
func (s *Server) writeShards(ctx context.Context, sd *subdir, prev *shardTable, groups map[string][]shards.Record, todo []string, fps map[string]string) (map[string]shardEntry, error) {
	pack := uniqueName("shards-"+shortHash(sd.ch.cfg.Name, sd.name), ".pack")
	made := make(map[string]shardEntry, len(todo))
	uploads := make(chan []byte, shardUploads)
	var upErr error
	var upMu sync.Mutex
	var failed atomic.Bool
	var wg sync.WaitGroup
	if s.store.HasRemote() {
		for range shardUploads {
			wg.Go(func() {
				for b := range uploads {
					if failed.Load() {
						continue // the store is failing: the rest waits for the next build
					}
					uctx, cancel := context.WithTimeout(ctx, shardUploadTimeout)
					err := s.store.ShareBytes(uctx, b)
					cancel()
					if err != nil {
						failed.Store(true)
						upMu.Lock()
						upErr = cmp.Or(upErr, err)
						upMu.Unlock()
					}
				}
			})
		}
	}
	closed := false
	finish := func() {
		if !closed {
			closed = true
			close(uploads)
			wg.Wait()
		}
	}
	defer finish() // a panic in the closure (a fault of the mapped file) leaves no worker behind
	wrote := 0
	_, _, err := s.store.WriteFile(pack, func(w io.Writer) error {
		var off int64
		for _, name := range todo {
			b, err := shards.Encode(groups[name])
			if err != nil {
				return err
			}
			sum := sha256Hex(b)
			if l, ok := prev.bySHA[sum]; ok {
				// The same bytes are kept already (a name changed back).
				l.Dropped = time.Time{}
				made[name] = shardEntry{FP: fps[name], SHA: sum, shardLoc: l}
				continue
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
			if s.store.HasRemote() {
				uploads <- b
			}
			made[name] = shardEntry{FP: fps[name], SHA: sum, shardLoc: shardLoc{Pack: pack, Off: off, Size: int64(len(b))}}
			off += int64(len(b))
			wrote++
		}
		return nil
	})
	finish()
	if upErr != nil {
		// Served here all the same; another replica asked for one of them
		// cuts its own generation (shardsOfNow) and finds it there.
		s.log.Warn("cannot put shards in the object store; other replicas make their own", "channel", sd.ch.cfg.Name,
			"subdir", sd.name, "err", upErr)
	}
	if err != nil || wrote == 0 {
		s.store.RemoveFile(pack) // nothing, or nothing usable, in it
	}
	if err != nil {
		return nil, fmt.Errorf("write shards: %w", err)
	}
	return made, nil
}

// WarmShards makes channel/subdir's shard index now (sync pre-warms it), so
// that the first client does not wait for it. A subdir upstream lacks, or the
// channel does not serve, has none: nil.
func (s *Server) WarmShards(ctx context.Context, channel, subdir string) error {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return err
	}
	if !ch.serves(subdir) {
		return nil
	}
	sd := ch.subdir(subdir)
	sv, done, err := s.use(ctx, sd)
	if err != nil {
		return err
	}
	defer done()
	if sv.notFound {
		return nil
	}
	_, err = s.variant(ctx, sd, sv, "shards")
	return err
}

// CleanShards drops channel's shards that no index has named for
// shardRetention, and the packs left holding none; builds do it too, but a
// subdir that stopped changing is built no more. It reports the packs removed
// and their bytes.
func (s *Server) CleanShards(channel string) (packs int, bytes int64, err error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return 0, 0, err
	}
	var subs []string
	err = s.store.Meta.Scan(stateKey("shards", ch.cfg.Name, ""), func(key string, _ []byte) error {
		_, rest, _ := strings.Cut(key, "|")
		subs = append(subs, rest)
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	for _, sub := range subs {
		if !config.SubdirPattern.MatchString(sub) {
			continue // not a key this code wrote
		}
		sd := ch.subdir(sub)
		n, b, err := s.expireShards(sd)
		if err != nil {
			return packs, bytes, err
		}
		packs, bytes = packs+n, bytes+b
	}
	return packs, bytes, nil
}

// expireShards drops sd's shards past retention and their packs.
func (s *Server) expireShards(sd *subdir) (packs int, bytes int64, err error) {
	sd.shards.buildMu.Lock()
	defer sd.shards.buildMu.Unlock()
	prev, err := s.shardTableOf(sd)
	if err != nil || prev == nil {
		return 0, 0, err
	}
	next := shardState{Names: prev.state.Names, Old: map[string]shardLoc{}}
	for sum, l := range prev.state.Old {
		if s.now().Sub(l.Dropped) < shardRetention {
			next.Old[sum] = l
		}
	}
	if len(next.Old) == len(prev.state.Old) {
		return 0, 0, nil
	}
	return s.publishShards(sd, prev, next)
}

// publishShards makes next sd's shard state, persisted, and removes the packs
// prev used that next does not. Under sd.shards.buildMu.
func (s *Server) publishShards(sd *subdir, prev *shardTable, next shardState) (packs int, bytes int64, err error) {
	table := newShardTable(next)
	if err := s.store.Meta.Put(stateKey("shards", sd.ch.cfg.Name, sd.name), next); err != nil {
		return 0, 0, err
	}
	sd.shards.table.Store(table)
	keep := table.packs()
	for p := range prev.packs() {
		if keep[p] {
			continue
		}
		if b, err := s.store.OpenFile(p); err == nil {
			bytes += b.Size
			b.Close()
		}
		if err := s.store.RemoveFile(p); err != nil {
			s.log.Warn("remove a pack of expired shards", "file", p, "err", err)
			continue
		}
		packs++
	}
	return packs, bytes, nil
}

// errNoShards answers a subdir that has no sharded repodata: 404 and nothing
// else (rattler takes only 404 and 501 for "use repodata.json" and fails hard
// on any other status; conda remembers any 4xx for days), revalidated at once.
var errNoShards = &httpError{status: http.StatusNotFound, msg: "no sharded repodata here"}

// serveShards answers <subdir>/repodata_shards.msgpack.zst and
// <subdir>/shards/<sha256>.msgpack.zst. What is not there is errNoShards.
func (s *Server) serveShards(w http.ResponseWriter, r *http.Request, rt route) error {
	var err error
	if rt.file == "repodata_shards.msgpack.zst" {
		err = s.serveShardIndex(w, r, rt)
	} else {
		err = s.serveShard(w, r, rt)
	}
	var he *httpError
	if errors.Is(err, errNotFound) || errors.Is(err, errBadPath) || errors.Is(err, upstream.ErrNotFound) || errors.Is(err, errNoShards) ||
		(errors.As(err, &he) && he.status == http.StatusNotFound) {
		return errNoShards
	}
	return err
}

// serveShardIndex answers the index of rt's current generation. When the
// generation is served but its index cannot be made (a full disk, a name
// whose records no client would take in one shard), the answer is 404: the
// client falls back to repodata.json, which works, where a 5xx (or a 200 cut
// short) would fail its solve.
func (s *Server) serveShardIndex(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	sd, sv, done, err := s.servedSubdir(ctx, rt)
	if err != nil {
		return err // as repodata.json answers: a 502 is not remembered by conda
	}
	defer done()
	vf, err := s.shardIndex(ctx, sd, sv)
	if err == nil {
		err = s.serveNamed(w, r, sd, sv, vf, variantTypes["shards"], false, false)
		if errors.Is(err, cache.ErrNotFound) {
			s.forgetVariant(sd, sv, "shards") // made again on the next ask
		}
	}
	if err != nil && ctx.Err() == nil {
		s.logger(ctx).Warn("no sharded repodata for this subdir; clients read repodata.json", "channel", sd.ch.cfg.Name,
			"subdir", sd.name, "err", err)
		return errNoShards
	}
	return err
}

// serveShard answers one shard by its sha256. A shard the current index names
// is served at once. One an older index named, kept for a week, is served
// unless the filter hides one of its records now (a policy tightened since:
// hidden means hidden in every shard; a record upstream removed is no reason
// to fail the client that holds that index). One that is not here but in the
// object store (another replica's, of a generation this one never cut) is
// served only if every record in it is one this channel serves now: the object
// store is shared by every channel, and another channel's shard must not bring
// records this one does not serve.
func (s *Server) serveShard(w http.ResponseWriter, r *http.Request, rt route) error {
	sum, ok := strings.CutPrefix(rt.file, "shards/")
	if ok {
		sum, ok = strings.CutSuffix(sum, ".msgpack.zst")
	}
	if !ok || !shaRE.MatchString(sum) {
		return errNotFound
	}
	if err := s.checkSubdir(rt); err != nil {
		return err
	}
	ctx := r.Context()
	sd := rt.channel.subdir(rt.subdir)
	t, err := s.shardTableOf(sd)
	if err != nil {
		return err
	}
	if t == nil || !t.bySHA[sum].known() {
		// Not made here yet: the current generation's (another replica may be
		// ahead: catch up first), or the object store's.
		if t, err = s.shardsOfNow(ctx, sd); err != nil {
			return err
		}
	}
	var body io.ReadSeeker
	var source string
	if l := t.bySHA[sum]; l.known() {
		blob, err := s.store.OpenFile(l.Pack)
		if errors.Is(err, cache.ErrNotFound) {
			if now := sd.shards.table.Load(); now != t && now != nil && now.bySHA[sum].known() && now.bySHA[sum].Pack != l.Pack {
				// A build or expiry moved on since this request read the
				// table (and removed that pack): look in the new one.
				l = now.bySHA[sum]
				t = now
				blob, err = s.store.OpenFile(l.Pack)
			}
		}
		if errors.Is(err, cache.ErrNotFound) {
			s.lostPack(sd, t, l.Pack)
			return errNotFound
		}
		if err != nil {
			return err
		}
		defer blob.Close()
		ra, ok := blob.ReadSeeker.(io.ReaderAt)
		if !ok || l.Off < 0 || l.Size < 0 || l.Off+l.Size > blob.Size {
			return fmt.Errorf("shard %s: pack %s cannot hold it", sum, l.Pack)
		}
		body, source = io.NewSectionReader(ra, l.Off, l.Size), blob.Source
		// The current generation's own shards go out at once; any other
		// (an older index's, or the names of a generation since replaced) only
		// if the filter hides none of its records now.
		if cur := sd.cur.Load(); !t.named[sum] || cur == nil || cur.inputs != t.state.Gen {
			if err := s.servedNow(ctx, sd, io.NewSectionReader(ra, l.Off, l.Size), false); err != nil {
				return err
			}
		}
	} else {
		// Only what could be a shard: the object store holds packages too,
		// whose sha256s every repodata lists.
		size, ok, err := s.store.SharedSize(ctx, sum)
		if err != nil {
			return err
		}
		if !ok || size > shards.MaxShardSize {
			return errNotFound
		}
		if ok, err = s.store.Pull(ctx, sum); err != nil {
			return err
		}
		if !ok {
			return errNotFound
		}
		blob, err := s.store.OpenBlob(sum)
		if err != nil {
			return err
		}
		defer blob.Close()
		if blob.Size > shards.MaxShardSize {
			return errNotFound
		}
		if err := s.servedNow(ctx, sd, blob, true); err != nil {
			return err
		}
		if _, err := blob.Seek(0, io.SeekStart); err != nil {
			return err
		}
		body, source = blob, "shared"
	}
	h := w.Header()
	h.Set("Content-Type", variantTypes["shards"])
	untrustedContent(h, variantTypes["shards"])
	h.Set("ETag", `"`+sum+`"`)
	// Named by its bytes: never changes. Request directives (rattler sends
	// Cache-Control: no-store) change nothing here.
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	setSource(w, source)
	http.ServeContent(w, r, "", zeroTime, body)
	return nil
}

// shardRetryAfter is how long a generation whose index could not be made is
// answered 404 before it is tried again: a build costs seconds on a big
// subdir, and every client's solve asks.
const shardRetryAfter = time.Minute

// shardIndex is variant(sv, "shards"), remembering a failure for a while.
func (s *Server) shardIndex(ctx context.Context, sd *subdir, sv *served) (variantFile, error) {
	if at := sv.shardsFailedNS.Load(); at != 0 && s.now().Sub(time.Unix(0, at)) < shardRetryAfter {
		return variantFile{}, fmt.Errorf("making the shard index failed less than %v ago: %w", shardRetryAfter, errNoShards)
	}
	vf, err := s.variant(ctx, sd, sv, "shards")
	if err != nil && ctx.Err() == nil {
		sv.shardsFailedNS.Store(s.now().UnixNano())
	}
	return vf, err
}

// shardsOfNow makes sure sd's current generation (caught up with the other
// replicas) has its shards made, and returns the table.
func (s *Server) shardsOfNow(ctx context.Context, sd *subdir) (*shardTable, error) {
	sv, done, err := s.use(ctx, sd)
	if err != nil {
		return nil, err
	}
	if sv.notFound {
		done()
		return nil, errNotFound
	}
	if s.catchUp(ctx, sd, sv) {
		done()
		if sv, done, err = s.use(ctx, sd); err != nil {
			return nil, err
		}
	}
	defer done()
	if _, err := s.shardIndex(ctx, sd, sv); err != nil {
		return nil, err
	}
	t, err := s.shardTableOf(sd)
	if err == nil && t == nil {
		err = errNotFound
	}
	return t, err
}

// servedNow checks the records of the shard in r against sd's current
// generation: none is hidden by the filter, and, when all is set, every one is
// served; errNotFound if not.
func (s *Server) servedNow(ctx context.Context, sd *subdir, r io.Reader, all bool) error {
	b, err := io.ReadAll(io.LimitReader(r, shards.MaxShardSize+1))
	if err != nil {
		return err
	}
	sh, err := shards.DecodeShard(b)
	if err != nil {
		return errNotFound // not a shard at all
	}
	sv, done, err := s.use(ctx, sd)
	if err != nil {
		return err
	}
	defer done()
	for _, recs := range []map[string]map[string]any{sh.Packages, sh.PackagesConda} {
		for fn, rec := range recs {
			ref, served := sv.packages.get(fn)
			hidden := sv.hidden.has(fn)
			if hidden || (all && !served) {
				return errNotFound
			}
			if all {
				// The same file as this channel serves, not a namesake:
				// another channel's record under the same filename.
				if d, ok := rec["sha256"].([]byte); !ok || !ref.hasSHA || !bytes.Equal(d, ref.digest[:]) {
					return errNotFound
				}
			}
		}
	}
	return nil
}

// lostPack forgets sd's shards when a pack they are in is gone (a hand in the
// data directory): the next ask of the index makes them all again, instead of
// every shard of that pack failing for good.
func (s *Server) lostPack(sd *subdir, seen *shardTable, pack string) {
	sd.shards.buildMu.Lock()
	defer sd.shards.buildMu.Unlock()
	if now := sd.shards.table.Load(); now != seen || s.store.HasFile(pack) {
		return // a build or expiry replaced what the request saw: nothing is lost
	}
	s.log.Error("a pack of shards is missing; making the subdir's shards again", "channel", sd.ch.cfg.Name,
		"subdir", sd.name, "file", pack)
	if err := s.store.Meta.Delete(stateKey("shards", sd.ch.cfg.Name, sd.name)); err != nil {
		s.log.Warn("forget the shards of a missing pack", "err", err)
	}
	sd.shards.table.Store(newShardTable(shardState{}))
	if sv := sd.cur.Load(); sv != nil {
		s.forgetVariant(sd, sv, "shards")
	}
}

// shardPacks lists the packs sd's persisted shard states keep, for the sweep of
// orphaned files at start.
func shardPacks(val []byte, keep map[string]bool) {
	var st shardState
	if json.Unmarshal(val, &st) != nil {
		return
	}
	for p := range newShardTable(st).packs() {
		keep[p] = true
	}
}

// sha256Hex is the lower-case hex sha256 of b.
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
