package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/config"
)

// Read-only views of the running server for the admin API, and its two writes
// (purges). Nothing here runs on the request path: the views read what the
// request path already keeps (the published answers, the subdir states, the
// package index) and never count as cache lookups in the metrics.

// ErrNoSubdir is a subdir the channel does not serve: its filter leaves the
// platform out, or no upstream has it.
var ErrNoSubdir = errors.New("the channel serves no such subdir")

// ChannelStatus is one configured channel as the admin API shows it.
type ChannelStatus struct {
	Name      string
	Kind      string
	Upstreams []string // redacted: no token, no password
	Platforms []string
	// LastRefresh is the latest validation of any of its subdirs' repodata against
	// upstream (zero: never).
	LastRefresh time.Time
	// UpstreamOK is false while the latest revalidation of a subdir failed.
	UpstreamOK bool
}

// ChannelNames lists the configured channels in configuration order.
func (s *Server) ChannelNames() []string {
	out := make([]string, 0, len(s.cfg.Channels))
	for _, c := range s.cfg.Channels {
		out = append(out, c.Name)
	}
	return out
}

// ChannelStatus reports channel's configuration (secrets redacted) and health.
func (s *Server) ChannelStatus(name string) (ChannelStatus, error) {
	ch := s.channels[name]
	if ch == nil {
		return ChannelStatus{}, fmt.Errorf("%w %q", ErrUnknownChannel, name)
	}
	st := ChannelStatus{Name: ch.cfg.Name, Kind: ch.cfg.Kind, UpstreamOK: true,
		Upstreams: make([]string, 0, len(ch.sources)), Platforms: slices.Clone(ch.cfg.Platforms)}
	if st.Platforms == nil {
		st.Platforms = []string{}
	}
	for _, src := range ch.sources {
		st.Upstreams = append(st.Upstreams, src.String()) // RedactURL
	}
	ch.mu.Lock()
	subdirs := make([]*subdir, 0, len(ch.subdirs))
	for _, sd := range ch.subdirs {
		subdirs = append(subdirs, sd)
	}
	ch.mu.Unlock()
	for _, sd := range subdirs {
		if sv := sd.cur.Load(); sv != nil && sv.checkedNS.Load() > 0 {
			st.LastRefresh = later(st.LastRefresh, sv.checked())
		}
		sd.mu.Lock()
		if sd.lastErr != nil {
			st.UpstreamOK = false
		}
		sd.mu.Unlock()
	}
	// After a restart nothing is loaded yet: the stored upstream states say when
	// upstream was last asked. A handful of small keys per channel.
	s.store.Meta.Scan("u/"+ch.cfg.Name+"|", func(_ string, val []byte) error {
		var u struct {
			CheckedAt time.Time `json:"checked_at"`
		}
		if json.Unmarshal(val, &u) == nil {
			st.LastRefresh = later(st.LastRefresh, u.CheckedAt)
		}
		return nil
	})
	return st, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// CachedUsage counts the files channel has in the cache and their bytes: the
// package index of a conda channel, the stored files of a files channel. It scans
// the index (a few hundred ms for 300,000 entries): callers cache the answer.
func (s *Server) CachedUsage(channel string) (files int, bytes int64, err error) {
	ch := s.channels[channel]
	if ch == nil {
		return 0, 0, fmt.Errorf("%w %q", ErrUnknownChannel, channel)
	}
	prefix := "p/" + ch.cfg.Name + "|"
	if ch.cfg.Kind == config.KindFiles {
		prefix = "f/" + ch.cfg.Name + "|"
	}
	err = s.store.Meta.Scan(prefix, func(_ string, val []byte) error {
		sha, size, ok := shaAndSize(val)
		if ok && s.store.Has(sha) {
			files++
			bytes += size
		}
		return nil
	})
	return files, bytes, err
}

// shaAndSize reads "sha256" and "size" of a package or file index entry. Both
// come first in the JSON (encoding/json keeps the field order), before the
// record's own bytes: the fast path reads them without decoding the record.
func shaAndSize(val []byte) (string, int64, bool) {
	const head = `{"sha256":"`
	if len(val) > len(head)+64 && string(val[:len(head)]) == head && val[len(head)+64] == '"' {
		sha := string(val[len(head) : len(head)+64])
		rest := val[len(head)+65:]
		if i := strings.Index(string(rest), `"size":`); i >= 0 {
			num := rest[i+len(`"size":`):]
			j := 0
			for j < len(num) && num[j] >= '0' && num[j] <= '9' {
				j++
			}
			if n, err := strconv.ParseInt(string(num[:j]), 10, 64); err == nil {
				return sha, n, true
			}
		}
	}
	var e struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	}
	if json.Unmarshal(val, &e) != nil || e.SHA256 == "" {
		return "", 0, false
	}
	return e.SHA256, e.Size, true
}

// PackageRecord is one record of a package search.
type PackageRecord struct {
	Filename, Name, Version, Build string
	Size                           int64 // -1 for a hidden record (its size is not kept)
	Served, Cached                 bool
	Reason                         string // the rule that hides it
}

// PackageSearch is one page of a search and the count of all matches.
type PackageSearch struct {
	Total   int
	Records []PackageRecord
}

// searchIndex is a published answer's filenames, served and hidden, sorted. Made
// once per answer on the first search, never on the request path.
type searchIndex struct {
	once  sync.Once
	names []string
}

func (sv *served) searchNames() []string {
	sv.search.once.Do(func() {
		names := make([]string, 0, sv.packages.size()+sv.hidden.size())
		sv.packages.each(func(fn string, _ pkgRef) bool {
			names = append(names, fn)
			return true
		})
		sv.hidden.each(func(fn string, _ string) bool {
			if !sv.packages.has(fn) {
				names = append(names, fn)
			}
			return true
		})
		slices.Sort(names)
		sv.search.names = names
	})
	return sv.search.names
}

// adminView returns sd's current answer for the admin API: the published one as
// it is (a search neither revalidates nor counts as a cache lookup), or a build
// when there is none yet.
func (s *Server) adminView(ctx context.Context, ch *channel, sub string) (*subdir, *served, error) {
	if !ch.serves(sub) {
		return nil, nil, fmt.Errorf("%w: %s/%s (not in the channel's platforms)", ErrNoSubdir, ch.cfg.Name, sub)
	}
	sd := ch.subdir(sub)
	sv := sd.cur.Load()
	if sv == nil || sv.notFound {
		var err error
		if sv, err = s.load(ctx, sd); err != nil {
			return nil, nil, err
		}
	}
	if sv == nil || sv.notFound { // nil: no source has any state (no upstream, nothing imported)
		return nil, nil, fmt.Errorf("%w: %s/%s (no upstream has it)", ErrNoSubdir, ch.cfg.Name, sub)
	}
	return sd, sv, nil
}

// SearchPackages searches channel/subdir's records, served and hidden, whose
// filename contains q (every record when q is ""), in filename order, and returns
// the page [offset, offset+limit) with the count of all matches. A linear scan of
// the sorted names: a few milliseconds for 300,000 records. Only the page's records
// are looked up in the cache. servedOnly leaves the hidden records out, of the
// page and of the count.
func (s *Server) SearchPackages(ctx context.Context, channel, subdir, q string, servedOnly bool, offset, limit int) (PackageSearch, error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return PackageSearch{}, err
	}
	_, sv, err := s.adminView(ctx, ch, subdir)
	if err != nil {
		return PackageSearch{}, err
	}
	names := sv.searchNames()
	offset, limit = max(offset, 0), max(limit, 0)
	var page []string
	total := 0
	if !servedOnly && q == "" {
		total = len(names)
		if offset < total {
			page = names[offset:min(offset+limit, total)]
		}
	} else {
		// Conda filenames are lower case; a query typed in capitals still finds them.
		lq := strings.ToLower(q)
		for _, fn := range names {
			if (servedOnly && !sv.packages.has(fn)) || (q != "" && !strings.Contains(fn, q) && (lq == q || !strings.Contains(fn, lq))) {
				continue
			}
			if total >= offset && total < offset+limit {
				page = append(page, fn)
			}
			total++
		}
	}
	out := PackageSearch{Total: total, Records: make([]PackageRecord, 0, len(page))}
	for _, fn := range page {
		r := PackageRecord{Filename: fn, Size: -1}
		r.Name, r.Version, r.Build = SplitFilename(fn)
		if ref, ok := sv.packages.get(fn); ok {
			r.Served, r.Size = true, ref.size
			r.Cached = ref.hasSHA && s.store.Has(ref.shaHex())
		} else {
			r.Reason, _ = sv.hidden.get(fn)
		}
		if !r.Cached {
			if e, ok := s.pkgEntry(ch, subdir, fn); ok {
				r.Cached = s.store.Has(e.SHA256)
			}
		}
		out.Records = append(out.Records, r)
	}
	return out, nil
}

// SplitFilename parses name, version and build out of a package filename
// ("zlib-1.2.11-h7b6447c_3.conda"): the last two '-' separate them, as conda
// names may contain '-' and versions and builds may not.
func SplitFilename(fn string) (name, version, build string) {
	base, ok := strings.CutSuffix(fn, ".conda")
	if !ok {
		base = strings.TrimSuffix(fn, ".tar.bz2")
	}
	i := strings.LastIndexByte(base, '-')
	if i < 0 {
		return base, "", ""
	}
	build = base[i+1:]
	base = base[:i]
	j := strings.LastIndexByte(base, '-')
	if j < 0 {
		return base, "", build
	}
	return base[:j], base[j+1:], build
}

// PurgeRepodata forgets channel/sub's repodata (every subdir's when sub is ""): the published answer and the stored upstream copies, so the next request
// fetches it from upstream in full, with no conditional request. Imported records
// (`condaproxy import`) are kept: no upstream could give them back. The cached
// packages are untouched.
//
// It acts on this replica; Purge tells the others too.
func (s *Server) PurgeRepodata(channel, sub string) error {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return err
	}
	prefix := "u/" + ch.cfg.Name + "|"
	if sub != "" {
		prefix += sub + "|"
	}
	var keys []string
	err = s.store.Meta.Scan(prefix, func(key string, _ []byte) error {
		rest := strings.TrimPrefix(key, "u/"+ch.cfg.Name+"|")
		_, idx, ok := strings.Cut(rest, "|")
		if !ok || idx == "import" {
			return nil
		}
		if _, err := strconv.Atoi(idx); err != nil {
			return nil
		}
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		return err
	}
	for _, key := range keys {
		var st upState
		if ok, err := s.store.Meta.Get(key, &st); err != nil || !ok {
			continue
		}
		if err := s.store.Meta.Delete(key); err != nil {
			return err
		}
		if st.File != "" {
			s.store.RemoveFile(st.File)
		}
		// And the copy shared with the other replicas: a purge means "ask
		// upstream", not "take what another replica fetched".
		if s.shared() {
			if err := s.coord.Stamps.Stamp(context.Background(), "upstream|"+key, ""); err != nil {
				s.log.Warn("cannot clear the shared repodata stamp", "key", key, "err", err)
			}
		}
	}
	ch.mu.Lock()
	var subdirs []*subdir
	for name, sd := range ch.subdirs {
		if sub == "" || name == sub {
			subdirs = append(subdirs, sd)
		}
	}
	ch.mu.Unlock()
	for _, sd := range subdirs {
		// Not nil: code that has just built may read cur again. A remembered 404
		// that expired long ago makes the next load build afresh; the served
		// file's state ("s/") stays, so an unchanged answer keeps its Last-Modified.
		gone := &served{notFound: true, variants: map[string]variantFile{}}
		s.replace(sd, gone)
		sd.mu.Lock()
		sd.lastErr = nil
		sd.mu.Unlock()
	}
	return nil
}
