package proxy

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/cache"
	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/fill"
	"github.com/condaproxy/condaproxy/upstream"
)

// Mutable files are those with no checksum in any repodata: installers of a
// kind: files channel ("Miniconda3-latest-Linux-x86_64.sh" changes under one name)
// and channel metadata (channeldata.json, notices.json, run_exports.json). They are
// cached like repodata: revalidated after metadata_ttl, served stale while upstream
// fails, 404s remembered for negative_ttl. Their bytes are checked against upstream's
// Content-Length and stored as blobs by the sha256 computed on the way in.

type fileEntry struct {
	SHA256       string    `json:"sha256,omitempty"`
	Size         int64     `json:"size"`
	NotFound     bool      `json:"not_found,omitempty"`
	Upstream     int       `json:"upstream"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	CheckedAt    time.Time `json:"checked_at"`
}

func (s *Server) serveMutable(w http.ResponseWriter, r *http.Request, ch *channel, rel string) error {
	key := stateKey("f", ch.cfg.Name, rel)
	var e fileEntry
	found, err := s.store.Meta.Get(key, &e)
	if err != nil {
		return err
	}
	age := s.now().Sub(e.CheckedAt)
	if s.negative.has(key, s.now()) {
		s.metrics.lookup("file", "negative").Inc()
		return errNotFound
	}
	if found && !e.NotFound {
		if _, err := s.store.Pull(r.Context(), e.SHA256); err != nil {
			return err
		}
		blob, err := s.store.OpenBlob(e.SHA256)
		if err == nil {
			defer blob.Close()
			result := "hit"
			if age >= s.cfg.Cache.MetadataTTL.D() {
				result = "stale"
				prev := e
				// Serve what we have now; the next client gets the new one.
				s.fills.Start(r.Context(), key, func(ctx context.Context, f *fill.Fill) (string, error) {
					return s.fetchMutable(ctx, f, ch, rel, key, &prev)
				})
			}
			s.metrics.lookup("file", result).Inc()
			s.mutableHeaders(rel, e)(w.Header())
			setSource(w, blob.Source)
			var lm time.Time
			if t, err := http.ParseTime(e.LastModified); err == nil {
				lm = t
			}
			http.ServeContent(w, r, "", lm, blob.ReadSeeker)
			return nil
		}
	}
	s.metrics.lookup("file", "miss").Inc()
	f := s.fills.Start(r.Context(), key, func(ctx context.Context, f *fill.Fill) (string, error) {
		return s.fetchMutable(ctx, f, ch, rel, key, nil)
	})
	err = s.fills.Serve(w, r, f, func(w http.ResponseWriter, sha, lastModified string, streaming bool) {
		// From the fill itself: the stored entry may still describe older bytes.
		s.mutableHeaders(rel, fileEntry{SHA256: sha, LastModified: lastModified})(w.Header())
		fillSource(w, streaming)
	})
	if errors.Is(err, upstream.ErrNotFound) {
		return errNotFound
	}
	return err
}

// mutableSHA returns the sha256 of rel's cached copy, fetching it and waiting when
// none is cached; a stale copy is returned at once and revalidated behind.
func (s *Server) mutableSHA(ctx context.Context, ch *channel, rel string) (string, error) {
	return s.mutableSHAFrom(ctx, ch, rel, -1, false)
}

// mutableSHAFrom is mutableSHA of the copy from source up (-1: the first upstream
// that has rel). With wait, a stale copy is revalidated before it is returned
// (an upstream failure returns the cached copy still).
func (s *Server) mutableSHAFrom(ctx context.Context, ch *channel, rel string, up int, wait bool) (string, error) {
	key := mutableKey(ch, rel, up)
	var e fileEntry
	found, err := s.store.Meta.Get(key, &e)
	if err != nil {
		return "", err
	}
	age := s.now().Sub(e.CheckedAt)
	if s.negative.has(key, s.now()) {
		return "", errNotFound
	}
	if found && !e.NotFound {
		if _, err := s.store.Pull(ctx, e.SHA256); err != nil {
			return "", err
		}
	}
	if found && !e.NotFound && s.store.Has(e.SHA256) {
		if age >= s.cfg.Cache.MetadataTTL.D() {
			prev := e
			if wait {
				sha, err := s.refreshMutable(ctx, ch, rel, up, &prev)
				if errors.Is(err, upstream.ErrNotFound) {
					return "", errNotFound
				}
				return sha, err
			}
			s.fills.Start(ctx, key, func(ctx context.Context, f *fill.Fill) (string, error) {
				return s.fetchMutableFrom(ctx, f, ch, rel, key, &prev, up)
			})
		}
		return e.SHA256, nil
	}
	sha, err := s.refreshMutable(ctx, ch, rel, up, nil)
	if errors.Is(err, upstream.ErrNotFound) {
		return "", errNotFound
	}
	return sha, err
}

// serveRunExports answers <subdir>/run_exports.json cut to the served records.
func (s *Server) serveRunExports(w http.ResponseWriter, r *http.Request, rt route) error {
	sd, sv, done, err := s.servedSubdir(r.Context(), rt)
	if err != nil {
		return err
	}
	defer done()
	sha, err := s.mutableSHA(r.Context(), rt.channel, rt.subdir+"/run_exports.json")
	if err != nil {
		return err
	}
	return s.serveVariant(w, r, sd, sv, "run_exports-"+sha, "application/json", false, false)
}

func (s *Server) mutableHeaders(rel string, e fileEntry) func(h http.Header) {
	return func(h http.Header) {
		ct := mime.TypeByExtension(path.Ext(rel))
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.Set("Content-Type", ct)
		untrustedContent(h, ct)
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(s.cfg.Cache.MetadataTTL.D().Seconds())))
		if e.SHA256 != "" {
			h.Set("ETag", `"`+e.SHA256+`"`)
		}
		if e.LastModified != "" {
			h.Set("Last-Modified", e.LastModified)
		}
	}
}

// fetchMutable asks the upstreams in order for rel (conditionally when prev is
// known) and records the outcome. It returns the sha256 of the blob now current.
func (s *Server) fetchMutable(ctx context.Context, f *fill.Fill, ch *channel, rel, key string, prev *fileEntry) (string, error) {
	return s.fetchMutableFrom(ctx, f, ch, rel, key, prev, -1)
}

// fetchMutableFrom is fetchMutable asking upstream only alone (-1: each in order).
func (s *Server) fetchMutableFrom(ctx context.Context, f *fill.Fill, ch *channel, rel, key string, prev *fileEntry, only int) (string, error) {
	log := s.logger(ctx)
	var firstErr error
	for i, src := range ch.sources {
		if only >= 0 && i != only {
			continue
		}
		var cond upstream.Conditional
		if prev != nil && prev.Upstream == i && s.store.Has(prev.SHA256) {
			cond = upstream.Conditional{ETag: prev.ETag, LastModified: prev.LastModified}
		}
		resp, err := s.up.Get(ctx, src, rel, cond)
		if errors.Is(err, upstream.ErrNotFound) {
			continue
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		defer resp.Body.Close() // the loop ends with this answer
		if resp.Status == http.StatusNotModified {
			if prev == nil || cond == (upstream.Conditional{}) {
				// A 304 to a request that named no validator: there is nothing it
				// could mean "not modified" against.
				return "", unasked304(src, rel)
			}
			e := *prev
			e.CheckedAt = s.now()
			return e.SHA256, s.store.Meta.Put(key, e)
		}
		// Metadata is read whole to be filtered: bound it. An installer is only
		// streamed, and can be no larger than the cache.
		limit := int64(s.cfg.Limits.MaxMetadata)
		if ch.cfg.Kind == config.KindFiles {
			limit = int64(s.cfg.Cache.MaxSize)
		}
		sha, err := s.fills.Download(ctx, f, s.download(resp, cache.Digest{Size: -1}, ch, limit))
		if err != nil {
			log.Warn("file fill failed; nothing cached", "channel", ch.cfg.Name, "path", rel, "upstream", src.String(), "err", err)
			return "", err
		}
		e := fileEntry{SHA256: sha, Size: f.Size(), Upstream: i, ETag: resp.ETag, LastModified: resp.LastModified, CheckedAt: s.now()}
		return sha, s.store.Meta.Put(key, e)
	}
	if firstErr != nil {
		// Upstream is failing: keep serving what we had, and say so in the log.
		if prev != nil {
			log.Warn("file revalidation failed; serving the cached copy", "channel", ch.cfg.Name, "path", rel, "err", firstErr)
			return prev.SHA256, nil
		}
		return "", firstErr
	}
	// Remembered in memory only, and a bounded number of them: every path a
	// client makes up below a files channel is a 404 upstream, and must not grow
	// the store. A copy cached before upstream removed it goes with it.
	s.negative.add(key, s.now().Add(s.cfg.Cache.NegativeTTL.D()))
	if prev != nil {
		if err := s.store.Meta.Delete(key); err != nil {
			return "", err
		}
	}
	return "", upstream.ErrNotFound
}

// unasked304 is an upstream that answered 304 to a request without validators.
func unasked304(src upstream.Source, rel string) error {
	return &upstream.Error{URL: src.String() + "/" + rel, Status: http.StatusNotModified,
		Err: errors.New("304 Not Modified to a request without validators")}
}

// untrustedContent marks an answer whose bytes an upstream chose: a browser
// must never run them as a page of the proxy's own origin (where the admin
// API's same-origin writes would accept them). The sandbox gives any document an
// opaque origin; nosniff stops a type guess; a type a browser renders as a page
// or image with script is downloaded, not shown.
func untrustedContent(h http.Header, ctype string) {
	h["Content-Security-Policy"] = sandboxCSP
	h["X-Content-Type-Options"] = noSniff
	mt, _, _ := strings.Cut(ctype, ";")
	switch strings.TrimSpace(strings.ToLower(mt)) {
	case "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml", "text/javascript", "application/javascript":
		h.Set("Content-Disposition", "attachment")
	}
}

// Shared header values (see serveNamed).
var (
	sandboxCSP = []string{"sandbox; default-src 'none'"}
	noSniff    = []string{"nosniff"}
)

// negativeCache remembers upstream 404s of mutable files until they expire, in
// memory and bounded: past maxNegative entries, expired ones go, then any.
type negativeCache struct {
	mu sync.Mutex
	m  map[string]time.Time
}

const maxNegative = 10000

func (n *negativeCache) has(key string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	until, ok := n.m[key]
	if ok && !now.Before(until) {
		delete(n.m, key)
		return false
	}
	return ok
}

func (n *negativeCache) add(key string, until time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[string]time.Time{}
	}
	if len(n.m) >= maxNegative {
		now := time.Now()
		for k, u := range n.m {
			if u.Before(now) || len(n.m) >= maxNegative {
				delete(n.m, k)
			}
		}
	}
	n.m[key] = until
}
