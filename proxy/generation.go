package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// Generations: each published answer of a subdir (a *served) owns named files
// (the filtered JSON and the forms made from it). A refresh publishes a new
// generation while requests may still be reading the old one, or making a
// compressed form of it; so the old one's files are removed only once it is
// retired (no longer published) and its last reader is done. No reader ever gets
// an error because a refresh happened.
//
// A generation's state is one atomic word: the number of readers in its low bits,
// and the retired and dead flags above them. acquire refuses a dead generation
// (its files may be gone): the reader then takes the newer one. Deciding "dead"
// and counting a reader in are the same compare-and-swap, so a reader can never
// count itself into a generation whose files are being removed.
const (
	genRetired = int64(1) << 61
	genDead    = int64(1) << 60
	genReaders = genDead - 1
)

// acquire counts a reader in; false if the generation is dead.
func (sv *served) acquire() bool {
	for {
		v := sv.gen.Load()
		if v&genDead != 0 {
			return false
		}
		if sv.gen.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release counts a reader out; the last reader of a retired generation collects it.
func (s *Server) release(sd *subdir, sv *served) {
	if v := sv.gen.Add(-1); v == genRetired {
		s.collect(sd)
	}
}

// replace publishes sv (nil: nothing, the next request builds) as sd's answer
// and retires the one it replaces.
func (s *Server) replace(sd *subdir, sv *served) {
	old := sd.cur.Swap(sv)
	if old == nil || old == sv {
		return
	}
	sd.gcMu.Lock()
	sd.retired = append(sd.retired, old)
	sd.gcMu.Unlock()
	if v := old.gen.Or(genRetired); v&genReaders == 0 {
		s.collect(sd)
	}
}

// retireFiles hands files that no generation in memory owns (those of an answer
// published before a restart) to the collector, which removes them once nothing
// refers to them.
func (s *Server) retireFiles(sd *subdir, names ...string) {
	orphan := &served{orphanFiles: names}
	orphan.gen.Store(genRetired)
	sd.gcMu.Lock()
	sd.retired = append(sd.retired, orphan)
	sd.gcMu.Unlock()
	s.collect(sd)
}

// collect removes the files of sd's retired generations that have no reader
// left, except files still named by a live generation or by the persisted state
// (an answer republished unchanged keeps its files and Last-Modified).
func (s *Server) collect(sd *subdir) {
	sd.gcMu.Lock()
	defer sd.gcMu.Unlock()
	var dead, live []*served
	for _, g := range sd.retired {
		if g.gen.CompareAndSwap(genRetired, genRetired|genDead) {
			dead = append(dead, g)
		} else {
			live = append(live, g)
		}
	}
	sd.retired = live
	if len(dead) == 0 {
		return
	}
	keep := map[string]bool{}
	if cur := sd.cur.Load(); cur != nil {
		for _, n := range cur.fileNames() {
			keep[n] = true
		}
	}
	for _, g := range live {
		for _, n := range g.fileNames() {
			keep[n] = true
		}
	}
	var st servedState
	if ok, err := s.store.Meta.Get(stateKey("s", sd.ch.cfg.Name, sd.name), &st); ok && err == nil {
		keep[st.JSON.Name] = true
		for _, v := range st.Variants {
			keep[v.Name] = true
		}
	}
	for _, g := range dead {
		for _, n := range g.fileNames() {
			if !keep[n] {
				if err := s.store.RemoveFile(n); err != nil {
					s.log.Warn("remove a retired repodata file", "file", n, "err", err)
				}
			}
		}
	}
}

// fileNames are the named files the generation owns.
func (sv *served) fileNames() []string {
	if sv.orphanFiles != nil {
		return sv.orphanFiles
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.json.Name == "" {
		return nil
	}
	out := []string{sv.json.Name}
	for _, v := range sv.variants {
		out = append(out, v.Name)
	}
	return out
}

// use returns sd's current answer with a reader counted in: its files stay until
// done is called.
func (s *Server) use(ctx context.Context, sd *subdir) (sv *served, done func(), err error) {
	for {
		sv, err := s.load(ctx, sd)
		if err != nil {
			return nil, nil, err
		}
		if sv.acquire() {
			return sv, func() { s.release(sd, sv) }, nil
		}
		// Retired and collected between load and acquire: the newer one is published.
	}
}

// uniqueName is a named file's name that no other write uses: concurrent fetches
// and builds never share a temp file, and a generation's files are never
// overwritten by a later one that happens to have the same bytes.
func uniqueName(prefix, suffix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:]) + suffix
}

// sweepOrphans removes named files that no persisted state refers to: what a
// process killed between writing a file and recording it left behind. It runs
// at start, before any request.
func (s *Server) sweepOrphans() error {
	if s.store == nil {
		return nil // a server made only to parse routes (fuzzing)
	}
	names, err := s.store.FileNames("")
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	err = s.store.Meta.Scan("s/", func(_ string, val []byte) error {
		var st servedState
		if json.Unmarshal(val, &st) == nil {
			keep[st.JSON.Name] = true
			for _, v := range st.Variants {
				keep[v.Name] = true
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = s.store.Meta.Scan("u/", func(_ string, val []byte) error {
		var st upState
		if json.Unmarshal(val, &st) == nil && st.File != "" {
			keep[st.File] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = s.store.Meta.Scan("shards/", func(_ string, val []byte) error {
		shardPacks(val, keep)
		return nil
	})
	if err != nil {
		return err
	}
	n := 0
	for _, name := range names {
		if keep[name] || !ownedPrefix(name) {
			continue
		}
		if err := s.store.RemoveFile(name); err != nil {
			return err
		}
		n++
	}
	if n > 0 {
		s.log.Info("removed repodata files no state refers to (left by an interrupted run)", "count", n)
	}
	return nil
}

// ownedPrefix: the named files the request path makes. Others (an import's
// staging, say) belong to their own owners.
func ownedPrefix(name string) bool {
	for _, p := range []string{"served-", "raw-", "import-", "shards-"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
