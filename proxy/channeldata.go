package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/policy"
	"github.com/condaproxy/condaproxy/policy/matchspec"
)

// channeldata.json lists packages, so it is cut by the filter like repodata
// (SPEC "HTTP": passed through, filtered where it lists packages): `packages`
// keeps only names with a served record, each kept name's `subdirs` only the
// subdirs where it has one, its `version` only a served version, its
// `run_exports` only versions with no hidden record, its `reference_package`
// only a served file, what describes upstream's newest build only when no
// record of its version is hidden, and only the keys the format holds (see
// nameKeys; name-level metadata is the name's, kept for any served name); the
// top-level `subdirs` only served subdirs. A channel whose filter hides nothing
// passes upstream's copy through as it is.

// cutChannelData is a channel's filtered channeldata.json, kept in memory for the
// key it was cut for.
type channelDataAnswer struct {
	key          string // upstream's copy, the policy, and each served subdir's generation
	body         []byte
	etag         string
	lastModified time.Time
	cutAt        time.Time // when it was cut: a fallback to it is marked stale by its age
}

// hidesNothing reports whether p serves every record of every subdir: only then
// is upstream's channeldata.json right as it is.
func hidesNothing(p policy.Policy) bool {
	h, ok := p.(interface{ HidesNothing() bool })
	return ok && h.HidesNothing()
}

// errChannelData answers a malformed upstream channeldata.json with no good
// cut of an earlier copy to serve.
var errChannelData = &httpError{http.StatusBadGateway, "upstream channeldata.json is malformed and no good copy is cached"}

func (s *Server) serveChannelData(w http.ResponseWriter, r *http.Request, ch *channel) error {
	if hidesNothing(ch.policy) {
		return s.serveMutable(w, r, ch, "channeldata.json")
	}
	cd, stale, err := s.channelDataCut(r.Context(), ch)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	untrustedContent(h, "application/json")
	h["Cache-Control"] = s.metadataCacheControl
	if stale {
		// The last good cut, as repodata's last good copy is marked.
		h.Set("X-Condaproxy-Stale", strconv.Itoa(max(1, int(s.now().Sub(cd.cutAt).Seconds()))))
		s.metrics.StaleAnswers.WithLabelValues(ch.cfg.Name).Inc()
	}
	h.Set("ETag", cd.etag)
	http.ServeContent(w, r, "", cd.lastModified, bytes.NewReader(cd.body))
	return nil
}

// servedName is what the served records of one channel say about one name:
// its subdirs and versions with a served record, and hidden, its versions with
// a record not served (hidden by the filter; for an export, not exported).
type servedName struct {
	subdirs  map[string]bool
	versions map[string]bool
	hidden   map[string]bool
}

// servedNames are a channel's served names, by name.
type servedNames map[string]*servedName

// add counts the package file fn of subdir sub; false when fn is no package
// filename (then nothing is counted).
func (n servedNames) add(sub, fn string) bool {
	name, version, ok := splitFilename(fn)
	if !ok {
		return false
	}
	e := n[name]
	if e == nil {
		e = &servedName{subdirs: map[string]bool{}, versions: map[string]bool{}}
		n[name] = e
	}
	e.subdirs[sub] = true
	e.versions[version] = true
	return true
}

// hide counts the package file fn as not served: its version has a record
// hidden. Only a name with a served record is counted (the others are not
// listed at all).
func (n servedNames) hide(fn string) {
	name, version, ok := splitFilename(fn)
	if e := n[name]; ok && e != nil {
		if e.hidden == nil {
			e.hidden = map[string]bool{}
		}
		e.hidden[version] = true
	}
}

// whole reports whether every record of version is served.
func (e *servedName) whole(version string) bool {
	return e.versions[version] && !e.hidden[version]
}

// channelDataCut returns ch's filtered channeldata.json, cut again only when
// upstream's copy, the filter or a served subdir's answer changed. When it
// cannot be cut (upstream's copy, the subdir list or one served subdir fails),
// the last good cut is returned, stale; with none, the error (a subdir's names
// it).
func (s *Server) channelDataCut(ctx context.Context, ch *channel) (cd *channelDataAnswer, stale bool, err error) {
	ch.cdMu.Lock()
	prev := ch.cd
	ch.cdMu.Unlock()
	fallback := func(err error) (*channelDataAnswer, bool, error) {
		if prev != nil && !errors.Is(err, context.Canceled) {
			s.logger(ctx).Warn("channeldata.json cannot be cut; serving the last good copy", "channel", ch.cfg.Name, "err", err)
			return prev, true, nil
		}
		return nil, false, err
	}
	sha, err := s.mutableSHA(ctx, ch, "channeldata.json")
	if err != nil {
		return fallback(err)
	}
	subs, err := s.channelSubdirs(ctx, ch, false)
	if err != nil {
		return fallback(err)
	}
	views := map[string]*served{}
	for _, sub := range subs {
		sv, done, err := s.use(ctx, ch.subdir(sub))
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				err = fmt.Errorf("%w: %w", &httpError{http.StatusBadGateway,
					"channeldata.json: subdir " + sub + " cannot be built and no good cut is cached"}, err)
			}
			return fallback(err)
		}
		defer done()
		if !sv.notFound {
			views[sub] = sv
		}
	}
	keyParts := []string{sha, ch.policy.Fingerprint()}
	lastModified := time.Time{}
	var e fileEntry
	if ok, _ := s.store.Meta.Get(mutableKey(ch, "channeldata.json", -1), &e); ok {
		if t, err := http.ParseTime(e.LastModified); err == nil {
			lastModified = t
		}
	}
	for _, sub := range subs {
		if sv := views[sub]; sv != nil {
			keyParts = append(keyParts, sub+":"+sv.json.SHA)
			if sv.lastModified.After(lastModified) {
				lastModified = sv.lastModified
			}
		}
	}
	key := strings.Join(keyParts, "|")
	if prev != nil && prev.key == key {
		return prev, false, nil
	}
	v, err, _ := s.loads.Do("channeldata|"+ch.cfg.Name+"|"+key, func() (any, error) {
		raw, err := s.readMetadataBlob(sha)
		if err != nil {
			return nil, err
		}
		body, err := cutChannelDataJSON(raw, views)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(body)
		cd := &channelDataAnswer{key: key, body: body, etag: `"` + hex.EncodeToString(sum[:16]) + `"`,
			lastModified: lastModified.UTC().Truncate(time.Second), cutAt: s.now()}
		ch.cdMu.Lock()
		ch.cd = cd
		ch.cdMu.Unlock()
		return cd, nil
	})
	if err != nil {
		if prev != nil {
			// Upstream's new copy cannot be cut: the last good one stays served.
			return fallback(err)
		}
		s.logger(ctx).Warn("channeldata.json cannot be cut", "channel", ch.cfg.Name, "err", err)
		var he *httpError
		if errors.As(err, &he) || errors.Is(err, errBadChannelData) {
			return nil, false, errChannelData
		}
		return nil, false, err
	}
	return v.(*channelDataAnswer), false, nil
}

// errBadChannelData marks a channeldata.json that is not what it should be.
var errBadChannelData = errors.New("malformed channeldata.json")

// cutChannelDataJSON cuts upstream's channeldata raw to what views (subdir ->
// served answer) serve.
func cutChannelDataJSON(raw []byte, views map[string]*served) ([]byte, error) {
	names := servedNames{}
	for sub, sv := range views {
		sv.packages.each(func(fn string, _ pkgRef) bool {
			names.add(sub, fn)
			return true
		})
	}
	for _, sv := range views {
		sv.hidden.each(func(fn string, _ string) bool {
			names.hide(fn)
			return true
		})
	}
	served := func(ref string) bool {
		sub, fn, ok := strings.Cut(ref, "/")
		sv := views[sub]
		return ok && sv != nil && sv.packages.has(fn)
	}
	subdirs := make(map[string]bool, len(views))
	for sub := range views {
		subdirs[sub] = true
	}
	return cutChannelDataDoc(raw, names, subdirs, served, false)
}

// splitFilename is SplitFilename of a package filename (.conda or .tar.bz2)
// with a name and two '-' after it: ok is false for anything else.
func splitFilename(fn string) (name, version string, ok bool) {
	if !strings.HasSuffix(fn, ".conda") && !strings.HasSuffix(fn, ".tar.bz2") || strings.Count(fn, "-") < 2 {
		return "", "", false
	}
	name, version, _ = SplitFilename(fn)
	return name, version, name != ""
}

// cutChannelDataDoc cuts a channeldata.json to what is served: names maps each
// name with a served record to its subdirs and versions, subdirs are the served
// subdirs, and servedFile reports whether "<subdir>/<filename>" is served (nil:
// none is known, reference_package is dropped). A raw that is not a JSON object,
// or whose packages is not an object, is an error; an entry of packages that is
// not an object, or a subdirs entry that is not a valid subdir name, is dropped.
// The output is deterministic: keys sorted.
func cutChannelDataDoc(raw []byte, names servedNames, subdirs map[string]bool, servedFile func(string) bool, addMissing bool) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadChannelData, err)
	}
	if top == nil {
		return nil, fmt.Errorf("%w: not an object", errBadChannelData)
	}
	out := map[string]json.RawMessage{}
	if v, ok := top["channeldata_version"]; ok {
		out["channeldata_version"] = v
	}
	var pkgs map[string]json.RawMessage
	if p, ok := top["packages"]; ok && !bytes.Equal(bytes.TrimSpace(p), []byte("null")) {
		if err := json.Unmarshal(p, &pkgs); err != nil {
			return nil, fmt.Errorf("%w: packages is not an object", errBadChannelData)
		}
	}
	cut := map[string]json.RawMessage{}
	for name, v := range pkgs {
		n := names[name]
		if n == nil {
			continue
		}
		var entry map[string]json.RawMessage
		if json.Unmarshal(v, &entry) != nil || entry == nil {
			continue
		}
		// version, and what describes that one build (its license, source,
		// timestamp, prefixes, own run_exports), are upstream's newest: when the
		// filter hides that version, the newest served version replaces it; when
		// it hides any record of it (the newest build may be a newer build of a
		// served version), what describes the build goes. Name-level keys stay
		// for any served name. A key the format does not hold goes always.
		versionServed, newestServed := false, false
		if ver, ok := entry["version"]; ok {
			var s string
			if json.Unmarshal(ver, &s) == nil {
				versionServed, newestServed = n.versions[s], n.whole(s)
			}
		}
		for k := range entry {
			switch {
			case nameKeys[k]:
			case newestBuildKeys[k]:
				if !newestServed {
					delete(entry, k)
				}
			default:
				delete(entry, k)
			}
		}
		entry["subdirs"] = mustJSON(cutSubdirs(entry["subdirs"], n.subdirs))
		if !versionServed {
			if best := newestVersion(n.versions); best != "" {
				entry["version"] = mustJSON(best)
			} else {
				delete(entry, "version")
			}
		}
		if re, ok := entry["run_exports"]; ok {
			if cut := cutRunExports(re, n, newestServed); cut != nil {
				entry["run_exports"] = cut
			} else {
				delete(entry, "run_exports")
			}
		}
		if ref, ok := entry["reference_package"]; ok {
			var s string
			if servedFile == nil || json.Unmarshal(ref, &s) != nil || !servedFile(s) {
				delete(entry, "reference_package")
			}
		}
		b, err := marshal(entry, false)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errBadChannelData, name, err)
		}
		cut[name] = b
	}
	if addMissing {
		// An export's names upstream's copy does not list: their subdirs and
		// newest version.
		for name, n := range names {
			if _, ok := cut[name]; ok {
				continue
			}
			entry := map[string]any{"subdirs": cutSubdirs(nil, n.subdirs)}
			if v := newestVersion(n.versions); v != "" {
				entry["version"] = v
			}
			cut[name] = mustJSON(entry)
		}
	}
	out["packages"] = mustJSON(cut)
	out["subdirs"] = mustJSON(cutSubdirs(top["subdirs"], subdirs))
	return marshal(out, true)
}

// cutSubdirs is a subdirs list kept to valid names in keep, sorted; a list that
// does not parse gives keep itself.
func cutSubdirs(raw json.RawMessage, keep map[string]bool) []string {
	var list []string
	out := []string{}
	seen := map[string]bool{}
	if raw == nil || json.Unmarshal(raw, &list) != nil {
		for sd := range keep {
			list = append(list, sd)
		}
	}
	for _, sd := range list {
		if keep[sd] && config.ValidSubdir(sd) && !seen[sd] {
			seen[sd] = true
			out = append(out, sd)
		}
	}
	slices.Sort(out)
	return out
}

// newestVersion is the highest of versions in conda's order ("" if none parses).
func newestVersion(versions map[string]bool) string {
	var best matchspec.Version
	found := ""
	for s := range versions {
		v, err := matchspec.ParseVersion(s)
		if err != nil {
			continue
		}
		if found == "" || v.Compare(best) > 0 || (v.Compare(best) == 0 && s > found) {
			best, found = v, s
		}
	}
	return found
}

// The keys of a channeldata.json package entry (conda-index's channeldata
// fields, and license_family): nameKeys describe the name and are kept for a
// served name (even when its newest version is hidden: they are the name's);
// newestBuildKeys describe upstream's newest build and are kept only when no
// record of its version is hidden (a hidden newer build of a served version
// would be described, its timestamp alone telling it exists). version, subdirs, run_exports and
// reference_package are cut on their own. Any other key is dropped: the cut
// cannot know what it says about hidden records.
var (
	nameKeys = map[string]bool{
		"summary": true, "description": true, "home": true, "dev_url": true, "doc_url": true,
		"doc_source_url": true, "icon_url": true, "icon_hash": true, "tags": true, "keywords": true,
		"identifiers": true, "version": true, "subdirs": true, "run_exports": true, "reference_package": true,
	}
	newestBuildKeys = map[string]bool{
		"license": true, "license_family": true, "timestamp": true,
		"source_url": true, "source_git_url": true, "source_git_tag": true, "source_git_rev": true,
		"recipe_origin": true, "commits": true, "binary_prefix": true, "text_prefix": true,
		"activate.d": true, "deactivate.d": true, "pre_link": true, "post_link": true, "pre_unlink": true,
	}
	// runExportKinds are the keys of one build's own run_exports.
	runExportKinds = map[string]bool{
		"weak": true, "strong": true, "noarch": true, "weak_constrains": true, "strong_constrains": true,
	}
)

// cutRunExports cuts a run_exports entry to served versions: keyed by version
// ({"1.2": {"weak": [...]}}), only the keys of versions whose every record is
// served (a value may describe any build of its version), whatever their
// values; the newest build's own ({"weak": [...]}), whole when that build is
// served. nil: nothing is left (or it is not an object).
func cutRunExports(raw json.RawMessage, n *servedName, newestServed bool) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || len(m) == 0 {
		return nil
	}
	own := true
	for k := range m {
		if !runExportKinds[k] {
			own = false
			break
		}
	}
	if own {
		if newestServed {
			return raw
		}
		return nil
	}
	for k := range m {
		if !n.whole(k) {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	return mustJSON(m)
}

func mustJSON(v any) json.RawMessage {
	b, _ := marshal(v, false)
	return b
}

// marshal is json.Marshal (or MarshalIndent) without HTML escaping: upstream's
// "zlib >=1.2" stays as it was written.
func marshal(v any, indent bool) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", " ")
	}
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// readMetadataBlob reads a stored metadata file whole, bounded by
// limits.max_metadata (a copy fetched under a larger limit, or imported, is
// refused rather than read).
func (s *Server) readMetadataBlob(sha string) ([]byte, error) {
	b, err := s.store.OpenBlob(sha)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	limit := int64(s.cfg.Limits.MaxMetadata)
	if limit > 0 && b.Size > limit {
		return nil, fmt.Errorf("%w: %d bytes, past limits.max_metadata (%d)", errBadChannelData, b.Size, limit)
	}
	return io.ReadAll(b)
}

// ExportChannelData returns the channeldata.json of an export of channel that
// holds exactly files (subdir -> filenames): its names with their exported
// subdirs and versions, upstream's metadata of each name where upstream has a
// channeldata.json (the stored copy; upstream is asked only when none is; without
// one, the names and versions alone), and subdirs the
// exported ones. A record of an exported subdir that the export does not hold
// counts as hidden: upstream's newest build is described, and a version's
// run_exports kept, only when every record of that version is exported.
func (s *Server) ExportChannelData(ctx context.Context, channel string, files map[string][]string) ([]byte, error) {
	ch, err := s.condaChannel(channel)
	if err != nil {
		return nil, err
	}
	names := servedNames{}
	subdirs := map[string]bool{}
	exported := map[string]bool{}
	for sub, fns := range files {
		subdirs[sub] = true
		for _, fn := range fns {
			if names.add(sub, fn) {
				exported[sub+"/"+fn] = true
			}
		}
	}
	// A record of an exported subdir that is not in the export (hidden, or
	// left out) is hidden to the cut: what describes upstream's newest build,
	// and a version's run_exports, stay only when every record of it is exported.
	for sub := range files {
		sv, done, err := s.use(ctx, ch.subdir(sub))
		if err != nil {
			return nil, err
		}
		if !sv.notFound {
			sv.packages.each(func(fn string, _ pkgRef) bool {
				if !exported[sub+"/"+fn] {
					names.hide(fn)
				}
				return true
			})
			sv.hidden.each(func(fn string, _ string) bool {
				names.hide(fn)
				return true
			})
		}
		done()
	}
	raw := []byte(`{"channeldata_version": 1}`)
	if sha, err := s.mutableSHA(ctx, ch, "channeldata.json"); err == nil {
		if b, err := s.readMetadataBlob(sha); err == nil {
			raw = b
		}
	}
	// Names upstream's copy does not list still have a record in the export.
	out, err := cutChannelDataDoc(raw, names, subdirs, func(ref string) bool { return exported[ref] }, true)
	if errors.Is(err, errBadChannelData) {
		// Upstream's copy is unusable: the names and subdirs alone.
		out, err = cutChannelDataDoc([]byte(`{"channeldata_version": 1}`), names, subdirs, nil, true)
	}
	return out, err
}
