package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/repodata"
)

// Several replicas share work through s.coord (package coord: Redis, or this
// process alone): one upstream fetch per missing file (fill.Group.Blob, with
// s.coord.Locker), and purges that apply on every replica (Purge).

// purgeTopic carries purges between replicas.
const purgeTopic = "purge"

type purgeMsg struct {
	Channel  string `json:"channel"`
	Subdir   string `json:"subdir,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// Purge drops channel's cached repodata (filename "") or one cached file, here
// and, through the coordination bus, on every other replica. The bus delivers it
// to this replica too (so it is applied once, by listenPurges, the same way on
// every replica); with Redis down it applies here only, and says so in the log:
// the others keep theirs until their metadata_ttl (repodata) or until purged
// again (files).
func (s *Server) Purge(ctx context.Context, channel, subdir, filename string) error {
	m := purgeMsg{channel, subdir, filename}
	if err := s.validPurge(m); err != nil {
		return err
	}
	payload, _ := json.Marshal(m)
	if err := s.coord.Bus.Publish(ctx, purgeTopic, payload); err != nil {
		s.log.Warn("purge applied on this replica only: the others were not told", "channel", channel, "subdir", subdir, "file", filename, "err", err)
	}
	return nil
}

// validPurge checks a purge names a conda channel, a subdir it serves and a
// package file name: a peer's message is not trusted further than a client's.
func (s *Server) validPurge(m purgeMsg) error {
	ch, err := s.condaChannel(m.Channel)
	if err != nil {
		return err
	}
	if m.Subdir != "" && !ch.serves(m.Subdir) {
		return fmt.Errorf("subdir not served: %w", errNotFound)
	}
	if m.Filename != "" && (m.Subdir == "" || !repodata.ValidFilename(m.Filename)) {
		return fmt.Errorf("not a package file: %w", errNotFound)
	}
	return nil
}

func (s *Server) applyPurge(m purgeMsg) error {
	if m.Filename == "" {
		return s.PurgeRepodata(m.Channel, m.Subdir)
	}
	ch, err := s.condaChannel(m.Channel)
	if err != nil {
		return err
	}
	// The blob the served record names goes too, though this replica never
	// indexed it under that path (it may have it from the shared store), unless
	// another path still holds it.
	f := CachedFile{Subdir: m.Subdir, Filename: m.Filename}
	if sv := ch.subdir(m.Subdir).cur.Load(); sv != nil {
		if ref, ok := sv.packages.get(m.Filename); ok && ref.hasSHA {
			f.SHA256 = ref.shaHex()
		}
	}
	return s.UncacheFiles(m.Channel, []CachedFile{f})
}

// listenPurges applies the purges other replicas publish, until s stops. Its
// own are applied again (the bus may echo them): purging is idempotent.
func (s *Server) listenPurges() {
	err := s.coord.Bus.Subscribe(s.base, purgeTopic, func(payload []byte) {
		var m purgeMsg
		if json.Unmarshal(payload, &m) != nil || m.Channel == "" {
			s.log.Warn("ignored a malformed purge message from the coordination bus")
			return
		}
		if s.validPurge(m) != nil {
			return // a channel, subdir or file this replica does not serve
		}
		s.guard("purge", func() error {
			if err := s.applyPurge(m); err != nil && !IsNotFound(err) {
				s.log.Warn("purge from another replica failed here", "channel", m.Channel, "subdir", m.Subdir, "file", m.Filename, "err", err)
			}
			return nil
		})
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("cannot listen for purges from other replicas", "err", err)
	}
}

// Shared freshness. Each replica keeps its own copy of every upstream's
// repodata and cuts it itself, but upstream is asked once per subdir per
// metadata_ttl across all of them: the replica that claims the revalidation
// (coord.Claims) fetches, puts the raw document in the shared object store under
// its sha256, and stamps what it got (coord.Stamps); the others take the
// document from the store. Same document and same policy: the same answer on
// every replica. Without Redis every replica asks upstream itself, as one does.

// sharedState is the stamp of one upstream's repodata for one subdir.
type sharedState struct {
	URL          string    `json:"url"`
	Found        bool      `json:"found"`
	SHA          string    `json:"sha,omitempty"` // the raw document's blob
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	Encoding     string    `json:"encoding,omitempty"`
	CheckedAt    time.Time `json:"checked_at"`
}

// shared reports whether other replicas exist to share with (Redis is set).
func (s *Server) shared() bool { return s.coord.Health != nil }

func (s *Server) stamp(ctx context.Context, key string) (sharedState, bool) {
	v, ok, err := s.coord.Stamps.Get(ctx, "upstream|"+key)
	if err != nil || !ok {
		return sharedState{}, false
	}
	var sh sharedState
	if json.Unmarshal([]byte(v), &sh) != nil {
		return sharedState{}, false
	}
	return sh, true
}

// sharedFetch is fetchRepodata across replicas (see above). key is the state's
// key, id the upstream's identity.
func (s *Server) sharedFetch(ctx context.Context, ch *channel, sub string, i int, prev *upState, key, id string) (*upState, error) {
	if !s.shared() {
		return s.fetchRepodata(ctx, ch, sub, i, prev)
	}
	ttl := s.cfg.Cache.MetadataTTL.D()
	if sh, ok := s.stamp(ctx, key); ok && sh.URL == id && s.now().Sub(sh.CheckedAt) < stampTTL(s, sh) {
		st, err := s.adopt(ctx, sub, prev, sh)
		if err == nil {
			return st, nil
		}
		s.logger(ctx).Warn("cannot take the repodata another replica fetched; asking upstream", "channel", ch.cfg.Name, "subdir", sub, "err", err)
	} else if prev != nil {
		won, err := s.coord.Claims.Claim(ctx, "revalidate|"+key, ttl)
		if err == nil && !won {
			// Another replica revalidates this window: serve what this one has
			// until its stamp arrives.
			return prev, nil
		}
	}
	st, err := s.fetchRepodata(ctx, ch, sub, i, prev)
	if err != nil {
		return nil, err
	}
	st.URL = id
	s.share(ctx, key, st)
	return st, nil
}

// adopt makes sh, another replica's copy, this replica's state: the document
// comes from the shared store (pulled and verified by its sha256).
func (s *Server) adopt(ctx context.Context, sub string, prev *upState, sh sharedState) (*upState, error) {
	if !sh.Found {
		return &upState{URL: sh.URL, Found: false, CheckedAt: sh.CheckedAt}, nil
	}
	if prev != nil && prev.Found && prev.SHA == sh.SHA {
		st := *prev
		st.CheckedAt, st.ETag, st.LastModified, st.Encoding = sh.CheckedAt, sh.ETag, sh.LastModified, sh.Encoding
		return &st, nil
	}
	if !shaRE.MatchString(sh.SHA) {
		return nil, fmt.Errorf("stamp names no blob")
	}
	ok, err := s.store.Pull(ctx, sh.SHA)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("the shared store has no blob %s", sh.SHA)
	}
	blob, err := s.store.OpenBlob(sh.SHA)
	if err != nil {
		return nil, err
	}
	if blob.Size > int64(s.cfg.Limits.MaxRepodata) {
		blob.Close()
		return nil, fmt.Errorf("the shared document is larger than limits.max_repodata")
	}
	// Copied to a named file, then checked through a map: never on the heap.
	name := uniqueName("raw-"+sh.SHA[:16], ".json")
	_, sha, err := s.store.WriteFile(name, func(w io.Writer) error { _, err := io.Copy(w, blob); return err })
	blob.Close()
	if err != nil {
		return nil, err
	}
	if sha != sh.SHA {
		s.store.RemoveFile(name)
		return nil, fmt.Errorf("the shared document's sha256 is %s, not %s", sha, sh.SHA)
	}
	head, err := s.validStored(name, sub)
	if err != nil {
		s.store.RemoveFile(name)
		return nil, err
	}
	return &upState{URL: sh.URL, Found: true, File: name, SHA: sh.SHA, ETag: sh.ETag, LastModified: sh.LastModified,
		Encoding: sh.Encoding, CheckedAt: sh.CheckedAt, head: head}, nil
}

// share puts st's document in the shared store (once: a 304 changes nothing)
// and stamps it for the other replicas. Failures only cost them an upstream
// request of their own.
func (s *Server) share(ctx context.Context, key string, st *upState) {
	if st.Found && !s.store.Has(st.SHA) {
		// Streamed from the file: a 300 MB document is never on the heap.
		f, err := s.store.OpenFile(st.File)
		if err != nil {
			return
		}
		defer f.Close()
		t, err := s.store.NewTemp()
		if err != nil {
			return
		}
		if _, err := io.Copy(t, f); err != nil {
			t.Abort()
			return
		}
		if _, err := t.Commit(cache.Digest{Size: f.Size, SHA256: st.SHA}); err != nil {
			s.logger(ctx).Warn("cannot share fetched repodata with the other replicas", "err", err)
			return
		}
	}
	v, _ := json.Marshal(sharedState{URL: st.URL, Found: st.Found, SHA: st.SHA, ETag: st.ETag,
		LastModified: st.LastModified, Encoding: st.Encoding, CheckedAt: st.CheckedAt})
	if err := s.coord.Stamps.Stamp(ctx, "upstream|"+key, string(v)); err != nil {
		s.logger(ctx).Warn("cannot stamp fetched repodata for the other replicas", "err", err)
	}
}

// catchUp rebuilds sd's answer now when another replica stamped an upstream copy
// newer than the one it was cut from: a client whose repodata came from a
// fresher replica must not get a 404 for a new package here. It reports whether
// it rebuilt.
func (s *Server) catchUp(ctx context.Context, sd *subdir, sv *served) bool {
	if !s.shared() {
		return false
	}
	behind := false
	for i, src := range sd.ch.sources {
		key := stateKey("u", sd.ch.cfg.Name, sd.name, strconv.Itoa(i))
		sh, ok := s.stamp(ctx, key)
		if !ok || sh.URL != shortHash(src.Base.String()) || !sh.CheckedAt.After(sv.checked()) ||
			s.now().Sub(sh.CheckedAt) >= stampTTL(s, sh) {
			continue // another upstream's, or nothing newer and fresh than what sv was cut from
		}
		var st upState
		if found, err := s.store.Meta.Get(key, &st); err != nil || !found || st.SHA != sh.SHA || st.Found != sh.Found {
			behind = true
		}
	}
	if !behind {
		return false
	}
	// Detached: a client that hangs up must not fail the build others share.
	_, err, _ := s.loads.Do(stateKey("load", sd.ch.cfg.Name, sd.name), func() (any, error) {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), buildTimeout)
		defer cancel()
		stop := context.AfterFunc(s.base, cancel)
		defer stop()
		return s.guardedBuild(bctx, sd, true)
	})
	return err == nil && sd.cur.Load() != sv
}

// stampTTL is how long a stamp stands: metadata_ttl for a document, negative_ttl
// for an upstream 404, as for this replica's own.
func stampTTL(s *Server, sh sharedState) time.Duration {
	if !sh.Found {
		return s.cfg.Cache.NegativeTTL.D()
	}
	return s.cfg.Cache.MetadataTTL.D()
}

var shaRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
