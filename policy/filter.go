package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/policy/matchspec"
	"github.com/condaproxy/condaproxy/repodata"
)

// Filter is a channel's mirror rules, compiled. Its steps run in SPEC order:
// platforms, pkg_list (with include_dependencies), python_versions,
// license_blacklist, blacklist, whitelist (restores only what 4-5 hid), then
// exclude_newer and min_age.
type Filter struct {
	platforms   map[string]bool // nil: every subdir
	pkgList     []namedSpec
	includeDeps bool
	pythons     []pythonVersion
	pythonRule  string
	licenses    []string // as configured
	licenseRule []string // "license_blacklist: GPL", per entry
	blacklist   []namedSpec
	whitelist   []namedSpec
	newer       time.Time
	newerRule   string
	minAge      time.Duration
	minAgeRule  string
	now         func() time.Time
	fingerprint string
}

type namedSpec struct {
	spec *matchspec.MatchSpec
	rule string // "blacklist: numpy 1.26.*", shared by every record it hides
}

// Compile builds the filter of cfg.Channels[i]. A spec that does not parse is a
// configuration error naming the channel's key and line. now is the clock of
// min_age (nil: time.Now).
func Compile(cfg *config.Config, i int, now func() time.Time) (Policy, error) {
	ch := &cfg.Channels[i]
	if now == nil {
		now = time.Now
	}
	f := &Filter{includeDeps: ch.IncludeDependencies, newer: ch.ExcludeNewerTime, minAge: ch.MinAge.D(), now: now}
	if len(ch.Platforms) > 0 {
		f.platforms = map[string]bool{"noarch": true}
		for _, p := range ch.Platforms {
			f.platforms[p] = true
		}
	}
	specs := func(key string, list []string) ([]namedSpec, error) {
		var out []namedSpec
		for j, s := range list {
			ms, err := matchspec.Parse(s)
			if err != nil {
				return nil, cfg.Errorf(fmt.Sprintf("channels[%d].%s[%d]", i, key, j), "channel %s: %v", ch.Name, err)
			}
			out = append(out, namedSpec{ms, key + ": " + s})
		}
		return out, nil
	}
	var err error
	if f.pkgList, err = specs("pkg_list", ch.PkgList); err != nil {
		return nil, err
	}
	if f.blacklist, err = specs("blacklist", ch.Blacklist); err != nil {
		return nil, err
	}
	if f.whitelist, err = specs("whitelist", ch.Whitelist); err != nil {
		return nil, err
	}
	for j, v := range ch.PythonVersions {
		pv, err := newPythonVersion(v)
		if err != nil {
			return nil, cfg.Errorf(fmt.Sprintf("channels[%d].python_versions[%d]", i, j), "channel %s: %v", ch.Name, err)
		}
		f.pythons = append(f.pythons, pv)
	}
	if len(f.pythons) > 0 {
		f.pythonRule = "python_versions: " + strings.Join(ch.PythonVersions, ", ")
	}
	for _, l := range ch.LicenseBlacklist {
		f.licenses = append(f.licenses, l)
		f.licenseRule = append(f.licenseRule, "license_blacklist: "+l)
	}
	if !f.newer.IsZero() {
		f.newerRule = "exclude_newer: " + ch.ExcludeNewer
	}
	if f.minAge > 0 {
		f.minAgeRule = "min_age: " + ch.MinAge.String()
	}
	// The fingerprint is the filter keys as configured: a changed rule rebuilds
	// every answer at the next start, from the stored upstream repodata.
	keys, _ := json.Marshal([]any{ch.Platforms, ch.PkgList, ch.IncludeDependencies, ch.PythonVersions,
		ch.LicenseBlacklist, ch.Blacklist, ch.Whitelist, ch.ExcludeNewer, ch.MinAge.String()})
	sum := sha256.Sum256(keys)
	f.fingerprint = hex.EncodeToString(sum[:8])
	return f, nil
}

// TimeDependent reports whether the cut changes as time passes (min_age): such a
// channel is cut again at every revalidation, even when upstream did not change.
func (f *Filter) TimeDependent() bool { return f.minAge > 0 }

// Fingerprint implements Policy.
func (f *Filter) Fingerprint() string { return f.fingerprint }

// ServesSubdir implements Policy: noarch always (clients require it).
func (f *Filter) ServesSubdir(subdir string) bool {
	return f.platforms == nil || subdir == "noarch" || f.platforms[subdir]
}

// Inputs implements Policy: the dependency closure runs over every served subdir
// of the channel together, so a noarch root pulls in the linux-64 python. With
// platforms those are the served subdirs; without, the subdirs the channel has
// (available: what upstream lists, what an imported tree holds).
func (f *Filter) Inputs(subdir string, available func() []string) []string {
	if !f.includeDeps || len(f.pkgList) == 0 {
		return nil
	}
	set := map[string]bool{}
	if f.platforms != nil {
		set = f.platforms
	} else if available != nil {
		for _, s := range available() {
			set[s] = true
		}
	}
	out := []string{subdir}
	for p := range set {
		if p != subdir && f.ServesSubdir(p) {
			out = append(out, p)
		}
	}
	slices.Sort(out[1:])
	return out
}

// HidesNothing reports whether the filter serves every record of every subdir:
// no platforms and no rule. Only then is upstream metadata that lists packages
// (channeldata.json) passed through as it is.
func (f *Filter) HidesNothing() bool {
	return f.platforms == nil && len(f.pkgList) == 0 && len(f.pythons) == 0 && len(f.licenses) == 0 &&
		len(f.blacklist) == 0 && f.newer.IsZero() && f.minAge == 0
}

// Prepare implements Policy.
func (f *Filter) Prepare(subdir string, all func(visit func(string, *repodata.Record)) error) (Decider, error) {
	d := &decider{f: f, python: map[string]pyVerdict{}}
	if f.includeDeps && len(f.pkgList) > 0 {
		needed, err := f.closure(all)
		if err != nil {
			return nil, err
		}
		d.needed = needed
	}
	if f.minAge > 0 {
		d.youngest = f.now().Add(-f.minAge)
	}
	return d, nil
}

// closure returns the names needed, transitively, by the depends of the records
// pkg_list keeps: by name, every version; constrains are not followed.
func (f *Filter) closure(all func(visit func(string, *repodata.Record)) error) (map[string]bool, error) {
	deps := map[string]map[string]bool{} // name -> names its records depend on
	needed := map[string]bool{}
	err := all(func(_ string, r *repodata.Record) {
		names := deps[r.Name]
		if names == nil {
			names = map[string]bool{}
			deps[strings.Clone(r.Name)] = names
		}
		root := matchesAny(f.pkgList, r) != ""
		for _, dep := range r.Depends {
			n := depName(dep)
			if n == "" {
				continue
			}
			if !names[n] {
				names[strings.Clone(n)] = true
			}
			if root && !needed[n] {
				needed[strings.Clone(n)] = true
			}
		}
	})
	if err != nil {
		return nil, err
	}
	queue := make([]string, 0, len(needed))
	for n := range needed {
		queue = append(queue, n)
	}
	for len(queue) > 0 {
		n := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		for dep := range deps[n] {
			if !needed[dep] {
				needed[dep] = true
				queue = append(queue, dep)
			}
		}
	}
	return needed, nil
}

// depName is the package name of a depends entry: "python >=3.8" -> "python".
func depName(dep string) string {
	dep = strings.TrimSpace(dep)
	if i := strings.IndexAny(dep, " =<>!~[;"); i >= 0 {
		dep = dep[:i]
	}
	return dep
}

func matchesAny(specs []namedSpec, r *repodata.Record) string {
	if len(specs) == 0 {
		return ""
	}
	c := matchspec.Candidate{Name: r.Name, Version: r.Version, Build: r.Build, BuildNumber: int(r.BuildNumber)}
	for _, s := range specs {
		if s.spec.Match(c) {
			return s.rule
		}
	}
	return ""
}

// decider is safe for concurrent use: the proxy decides concurrent package
// requests with one decider per subdir. Everything but the python memo is set by
// Prepare and only read after it (f, needed, youngest; the Filter and its
// compiled specs are read-only once compiled); the memo is filled as records are
// seen, under mu.
type decider struct {
	f        *Filter
	needed   map[string]bool // include_dependencies closure
	youngest time.Time       // min_age: records built after this are hidden

	mu     sync.RWMutex
	python map[string]pyVerdict // python constraints as written -> verdict
}

// Decide implements Decider, step by step in SPEC order.
func (d *decider) Decide(r *repodata.Record) (string, string) {
	f := d.f
	// 2. pkg_list, with the dependency closure.
	if len(f.pkgList) > 0 && matchesAny(f.pkgList, r) == "" && !d.needed[r.Name] {
		if f.includeDeps {
			return "pkg_list", r.Name + " matches no pkg_list spec and no listed package depends on it"
		}
		return "pkg_list", r.Name + " matches no pkg_list spec"
	}
	// 3. python_versions.
	if len(f.pythons) > 0 {
		if detail := d.pythonHides(r); detail != "" {
			return f.pythonRule, detail
		}
	}
	// 4, 5, 6. license_blacklist and blacklist; whitelist restores only these.
	rule, detail := f.licenseHides(r)
	if rule == "" {
		if rule = matchesAny(f.blacklist, r); rule != "" {
			detail = r.Name + " " + r.Version + " " + r.Build
		}
	}
	if rule != "" && matchesAny(f.whitelist, r) == "" {
		return rule, detail
	}
	// 7. exclude_newer, min_age: records without a timestamp stay.
	if r.Timestamp > 0 && (f.newerRule != "" || f.minAgeRule != "") {
		ms := r.Timestamp
		if ms < 1e11 {
			ms *= 1000 // seconds, in old records
		}
		built := time.UnixMilli(ms).UTC()
		if f.newerRule != "" && built.After(f.newer) {
			return f.newerRule, "built " + built.Format(time.RFC3339)
		}
		if f.minAgeRule != "" && built.After(d.youngest) {
			return f.minAgeRule, "built " + built.Format(time.RFC3339)
		}
	}
	return "", ""
}
