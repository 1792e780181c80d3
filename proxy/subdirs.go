package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/fill"
)

// Which subdirs a channel has: one answer, used by a sync (what to pre-warm),
// the dependency closure with no platforms (what it runs over) and the filtered
// channeldata.json (what it may list).

// channelSubdirs returns the subdirs of ch, noarch first, the others sorted:
// with platforms, noarch and the platforms. Without, the union of what each
// source has: an upstream's channeldata.json `subdirs`; a file:// tree with
// none, its directories that hold a repodata.json; an upstream with neither,
// commonSubdirs (it said nothing, so the usual ones are asked; so does a
// channeldata.json with no subdirs); and the subdirs imports brought. An
// upstream that fails with no copy is skipped while another answers; ctx
// ending (canceled, or its deadline passed) is an error, never a partial
// list. Only subdirs the channel serves are kept. With wait, a stale
// channeldata.json is revalidated before it is read (builds run in the
// background or for a client already waiting on a build); without, the stale
// copy is read and revalidated behind.
func (s *Server) channelSubdirs(ctx context.Context, ch *channel, wait bool) ([]string, error) {
	set := map[string]bool{"noarch": true}
	if len(ch.cfg.Platforms) > 0 {
		for _, p := range ch.cfg.Platforms {
			set[p] = true
		}
		return sortSubdirs(set), nil
	}
	// A failing upstream does not take the channel down: its list is skipped
	// while another upstream gave one; only when none did is it an error.
	failed := map[int]error{}
	for i := range ch.sources {
		subs, err := s.upstreamSubdirs(ctx, ch, i, wait)
		if err != nil {
			// The caller gone or past its deadline (a page's cap, a sync
			// job's) is no upstream failure: the list is not known, so no
			// partial list is answered as the whole.
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil, err
			}
			failed[i] = err
			continue
		}
		for _, sd := range subs {
			set[sd] = true
		}
	}
	if len(failed) > 0 && len(failed) == len(ch.sources) {
		return nil, failed[0]
	}
	for i, err := range failed {
		s.logger(ctx).Warn("upstream's subdirs are unknown (its channeldata.json failed, none is cached); the other upstreams' are used",
			"channel", ch.cfg.Name, "upstream", ch.sources[i].String(), "err", err)
	}
	prefix := "u/" + ch.cfg.Name + "|"
	err := s.store.Meta.Scan(prefix, func(key string, _ []byte) error {
		if sub, ok := strings.CutSuffix(strings.TrimPrefix(key, prefix), "|import"); ok {
			set[sub] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for sd := range set {
		if !ch.serves(sd) { // with no platforms, only noarch and KnownSubdirs
			delete(set, sd)
		}
	}
	return sortSubdirs(set), nil
}

func sortSubdirs(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for sd := range set {
		if sd != "noarch" {
			out = append(out, sd)
		}
	}
	slices.Sort(out)
	return append([]string{"noarch"}, out...)
}

// upstreamSubdirs is what upstream i of ch says it has (see channelSubdirs),
// at most len(config.KnownSubdirs) names: each a subdir conda knows, once. An
// upstream error with no copy of its channeldata.json is an error: the closure
// cannot be cut honestly without the list (channelSubdirs skips it when another
// upstream answered). A channeldata.json with no or an empty subdirs (or none
// conda knows) said nothing: the upstream is looked at as one without.
func (s *Server) upstreamSubdirs(ctx context.Context, ch *channel, i int, wait bool) ([]string, error) {
	sha, err := s.mutableSHAFrom(ctx, ch, "channeldata.json", s.channelDataSource(ch, i), wait)
	if err == nil {
		subs, perr := s.channelDataSubdirs(sha)
		switch {
		case perr == nil && len(subs) > 0:
			return subs, nil
		case perr == nil:
			s.logger(ctx).Debug("upstream channeldata.json lists no subdirs; its subdirs are guessed",
				"channel", ch.cfg.Name, "upstream", ch.sources[i].String())
		default:
			s.logger(ctx).Warn("upstream channeldata.json does not parse; its subdirs are guessed",
				"channel", ch.cfg.Name, "upstream", ch.sources[i].String(), "err", perr)
		}
	} else if !errors.Is(err, errNotFound) {
		return nil, err
	}
	if src := ch.sources[i]; src.Base.Scheme == "file" {
		entries, err := os.ReadDir(filepath.FromSlash(src.Base.Path))
		if err == nil {
			var out []string
			for _, e := range entries {
				if !e.IsDir() || !config.KnownSubdirs[e.Name()] {
					continue
				}
				if fi, err := os.Stat(filepath.Join(filepath.FromSlash(src.Base.Path), e.Name(), "repodata.json")); err == nil && fi.Mode().IsRegular() {
					out = append(out, e.Name())
				}
			}
			return out, nil
		}
	}
	return commonSubdirs, nil
}

// channelDataSource is the source index whose channeldata.json upstream i's
// subdirs are read from: -1 (the first upstream that has one, the copy served
// to clients) when there is one upstream, else i itself.
func (s *Server) channelDataSource(ch *channel, i int) int {
	if len(ch.sources) == 1 {
		return -1
	}
	return i
}

// channelDataSubdirs parses the top-level subdirs of the stored channeldata.json
// sha, once per sha (a big channel's is tens of MB).
func (s *Server) channelDataSubdirs(sha string) ([]string, error) {
	s.cdSubdirsMu.Lock()
	if s.cdSubdirs != nil {
		if v, ok := s.cdSubdirs[sha]; ok {
			s.cdSubdirsMu.Unlock()
			return v, nil
		}
	}
	s.cdSubdirsMu.Unlock()
	b, err := s.readMetadataBlob(sha) // bounded by limits.max_metadata
	if err != nil {
		return nil, err
	}
	var cd struct {
		Subdirs json.RawMessage `json:"subdirs"`
	}
	// A Decoder, not Unmarshal: what follows the document is ignored, as before.
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&cd); err != nil {
		return nil, err
	}
	var raw []string
	if len(cd.Subdirs) > 0 {
		if err := json.Unmarshal(cd.Subdirs, &raw); err != nil {
			return nil, errors.New("subdirs is not a list of names")
		}
	}
	out := knownSubdirs(raw)
	s.cdSubdirsMu.Lock()
	if s.cdSubdirs == nil || len(s.cdSubdirs) >= 64 {
		s.cdSubdirs = map[string][]string{}
	}
	s.cdSubdirs[sha] = out
	s.cdSubdirsMu.Unlock()
	return out, nil
}

// knownSubdirs is list kept to the subdirs conda knows (config.KnownSubdirs; a
// channel with no platforms serves no other), each once, in upstream's order:
// at most len(config.KnownSubdirs) names, so a channeldata.json listing
// thousands costs neither memory in the memo nor requests.
func knownSubdirs(list []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, sd := range list {
		if config.KnownSubdirs[sd] && !seen[sd] {
			seen[sd] = true
			out = append(out, sd)
		}
	}
	return out
}

// subdirsCache is the Server's memo of channelDataSubdirs.
type subdirsCache struct {
	cdSubdirsMu sync.Mutex
	cdSubdirs   map[string][]string
}

// mutableKey is the store key of rel's copy from source up (-1: the first
// upstream that has it).
func mutableKey(ch *channel, rel string, up int) string {
	if up < 0 {
		return stateKey("f", ch.cfg.Name, rel)
	}
	return stateKey("f", ch.cfg.Name, rel, "up"+strconv.Itoa(up))
}

// refreshMutable starts (or joins) the revalidation of rel from up and waits.
func (s *Server) refreshMutable(ctx context.Context, ch *channel, rel string, up int, prev *fileEntry) (string, error) {
	key := mutableKey(ch, rel, up)
	f := s.fills.Start(ctx, key, func(ctx context.Context, f *fill.Fill) (string, error) {
		return s.fetchMutableFrom(ctx, f, ch, rel, key, prev, up)
	})
	return f.Wait(ctx)
}
