package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/shards"
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
}

func newShardTable(st shardState) *shardTable {
	t := &shardTable{state: st, bySHA: make(map[string]shardLoc, len(st.Names)+len(st.Old))}
	maps.Copy(t.bySHA, st.Old)
	for _, e := range st.Names {
		t.bySHA[e.SHA] = e.shardLoc
	}
	return t
}

// packs are the pack files t's shards are in.
func (t *shardTable) packs() map[string]bool {
	out := map[string]bool{}
	for _, l := range t.bySHA {
		out[l.Pack] = true
	}
	return out
}

// subdirShards is a subdir's shard table and the lock its builds take.
type subdirShards struct {
	mu    sync.Mutex // one build at a time; guards table
	table *shardTable
}

// shardTableOf returns sd's shard table, read from the metadata store on first
// use; nil when it has none.
func (s *Server) shardTableOf(sd *subdir) (*shardTable, error) {
	sd.shards.mu.Lock()
	defer sd.shards.mu.Unlock()
	return s.shardTableLocked(sd)
}

func (s *Server) shardTableLocked(sd *subdir) (*shardTable, error) {
	if sd.shards.table != nil {
		return sd.shards.table, nil
	}
	var st shardState
	ok, err := s.store.Meta.Get(stateKey("shards", sd.ch.cfg.Name, sd.name), &st)
	if err != nil || !ok {
		return nil, err
	}
	sd.shards.table = newShardTable(st)
	return sd.shards.table, nil
}

// buildShards makes the shards of sv (those not already kept) and returns its
// index. It reads sv's served file through a memory map: the document is not
// held on the heap, and the records are encoded one name at a time.
func (s *Server) buildShards(sd *subdir, sv *served) ([]byte, error) {
	sd.shards.mu.Lock()
	defer sd.shards.mu.Unlock()
	prev, err := s.shardTableLocked(sd)
	if err != nil {
		return nil, err
	}
	if prev == nil {
		prev = newShardTable(shardState{})
	}
	data, unmap, err := s.store.MapFile(sv.json.Name)
	if err != nil {
		return nil, err
	}
	defer unmap()
	groups, err := shards.Group(data)
	if err != nil {
		return nil, err
	}
	now := s.now()
	next := shardState{Names: make(map[string]shardEntry, len(groups)), Old: map[string]shardLoc{}}
	var todo []string // names whose shard must be encoded
	fps := make(map[string]string, len(groups))
	for name, recs := range groups {
		fp := shards.Fingerprint(recs)
		fps[name] = hex.EncodeToString(fp[:])
		if e, ok := prev.state.Names[name]; ok && e.FP == fps[name] {
			next.Names[name] = e
			continue
		}
		todo = append(todo, name)
	}
	slices.Sort(todo) // the pack's order, so that equal inputs give equal packs
	if len(todo) > 0 {
		pack := uniqueName("shards-"+shortHash(sd.ch.cfg.Name, sd.name), ".pack")
		var made []shardEntry
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
					made = append(made, shardEntry{FP: fps[name], SHA: sum, shardLoc: l})
					continue
				}
				if _, err := w.Write(b); err != nil {
					return err
				}
				made = append(made, shardEntry{FP: fps[name], SHA: sum, shardLoc: shardLoc{Pack: pack, Off: off, Size: int64(len(b))}})
				off += int64(len(b))
			}
			return nil
		})
		if err != nil {
			s.store.RemoveFile(pack)
			return nil, fmt.Errorf("write shards: %w", err)
		}
		for i, name := range todo {
			next.Names[name] = made[i]
		}
	}
	// What the last index named and this one does not stays served for
	// shardRetention from now; what was dropped earlier, until its time is up.
	named := make(map[string]bool, len(next.Names))
	for _, e := range next.Names {
		named[e.SHA] = true
	}
	for _, e := range prev.state.Names {
		if !named[e.SHA] {
			l := e.shardLoc
			l.Dropped = now
			next.Old[e.SHA] = l
		}
	}
	for sum, l := range prev.state.Old {
		if !named[sum] && now.Sub(l.Dropped) < shardRetention {
			next.Old[sum] = l
		}
	}
	if _, _, err := s.publishShards(sd, prev, next); err != nil {
		return nil, err
	}
	index := make(map[string][32]byte, len(next.Names))
	for name, e := range next.Names {
		var sum [32]byte
		hex.Decode(sum[:], []byte(e.SHA))
		index[name] = sum
	}
	if len(todo) > 0 {
		s.log.Info("sharded repodata built", "channel", sd.ch.cfg.Name, "subdir", sd.name,
			"names", len(next.Names), "encoded", len(todo), "kept_old", len(next.Old))
	}
	return shards.EncodeIndex(sd.name, sv.lastModified, index)
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
	sd.shards.mu.Lock()
	defer sd.shards.mu.Unlock()
	prev, err := s.shardTableLocked(sd)
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
// prev used that next does not. Under sd.shards.mu.
func (s *Server) publishShards(sd *subdir, prev *shardTable, next shardState) (packs int, bytes int64, err error) {
	table := newShardTable(next)
	if err := s.store.Meta.Put(stateKey("shards", sd.ch.cfg.Name, sd.name), next); err != nil {
		return 0, 0, err
	}
	sd.shards.table = table
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
// <subdir>/shards/<sha256>.msgpack.zst.
func (s *Server) serveShards(w http.ResponseWriter, r *http.Request, rt route) error {
	err := s.serveShardsOr404(w, r, rt)
	var he *httpError
	if errors.Is(err, errNotFound) || errors.Is(err, errBadPath) || (errors.As(err, &he) && he.status == http.StatusNotFound) {
		return errNoShards
	}
	return err
}

func (s *Server) serveShardsOr404(w http.ResponseWriter, r *http.Request, rt route) error {
	if rt.file == "repodata_shards.msgpack.zst" {
		sd, sv, done, err := s.servedSubdir(r.Context(), rt)
		if err != nil {
			return err
		}
		defer done()
		return s.serveVariant(w, r, sd, sv, "shards", variantTypes["shards"], false, false)
	}
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
	sd := rt.channel.subdir(rt.subdir)
	loc, err := s.findShard(r.Context(), sd, sum)
	if err != nil {
		return err
	}
	blob, err := s.store.OpenFile(loc.Pack)
	if err != nil {
		return err
	}
	defer blob.Close()
	ra, ok := blob.ReadSeeker.(io.ReaderAt)
	if !ok || loc.Off < 0 || loc.Size < 0 || loc.Off+loc.Size > blob.Size {
		return fmt.Errorf("shard %s: pack %s cannot hold it", sum, loc.Pack)
	}
	h := w.Header()
	h.Set("Content-Type", variantTypes["shards"])
	untrustedContent(h, variantTypes["shards"])
	h.Set("ETag", `"`+sum+`"`)
	// Named by its bytes: never changes. Request directives (rattler sends
	// Cache-Control: no-store) change nothing here.
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	setSource(w, blob.Source)
	http.ServeContent(w, r, "", zeroTime, io.NewSectionReader(ra, loc.Off, loc.Size))
	return nil
}

// findShard finds the shard sum of sd: kept already, or made with the index of
// sd's current generation (a client may have an index from another replica
// that is ahead, or from before a restart). Not found is errNotFound.
func (s *Server) findShard(ctx context.Context, sd *subdir, sum string) (shardLoc, error) {
	if t, err := s.shardTableOf(sd); err != nil {
		return shardLoc{}, err
	} else if t != nil {
		if l, ok := t.bySHA[sum]; ok {
			return l, nil
		}
	}
	sv, done, err := s.use(ctx, sd)
	if err != nil {
		return shardLoc{}, err
	}
	defer func() { done() }()
	if sv.notFound {
		return shardLoc{}, errNotFound
	}
	// Another replica may have cut a newer generation whose index the client
	// holds: catch up with it first (a no-op alone).
	if s.catchUp(ctx, sd, sv) {
		done()
		done = func() {}
		if sv, done, err = s.use(ctx, sd); err != nil {
			done = func() {}
			return shardLoc{}, err
		}
	}
	if _, err := s.variant(ctx, sd, sv, "shards"); err != nil {
		return shardLoc{}, err
	}
	t, err := s.shardTableOf(sd)
	if err != nil {
		return shardLoc{}, err
	}
	if t != nil {
		if l, ok := t.bySHA[sum]; ok {
			return l, nil
		}
	}
	return shardLoc{}, errNotFound
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
