package policy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/condaproxy/condaproxy/policy/matchspec"
	"github.com/condaproxy/condaproxy/repodata"
)

// pythonVersion is one entry of python_versions, "3.11", with the final releases
// that stand for it: 3.11 and 3.11.0 to 3.11.maxPatch.
type pythonVersion struct {
	text       string
	prefix     matchspec.Version
	candidates []matchspec.Version
}

// maxPatch bounds the X.Y.Z releases tried for X.Y. CPython's longest-lived
// branches stopped at 2.7.18 and 3.6.15; 3.8 reached .20. 50 leaves room.
const maxPatch = 50

func newPythonVersion(xy string) (pythonVersion, error) {
	pv := pythonVersion{text: xy}
	var err error
	if pv.prefix, err = matchspec.ParseVersion(xy); err != nil {
		return pv, err
	}
	parts := strings.Split(xy, ".")
	if len(parts) == 3 {
		// "3.11.4": that release alone.
		pv.candidates = []matchspec.Version{pv.prefix}
		return pv, nil
	}
	pv.candidates = append(pv.candidates, pv.prefix)
	for z := 0; z <= maxPatch; z++ {
		v, _ := matchspec.ParseVersion(xy + "." + strconv.Itoa(z))
		pv.candidates = append(pv.candidates, v)
	}
	return pv, nil
}

type pyVerdict struct{ detail string }

// versionLiteral finds versions written in a constraint, to add the pre-releases
// it names ("3.13.0rc1") to the candidates: a pre-release counts only when named.
var versionLiteral = regexp.MustCompile(`[0-9]+(\.[0-9]+)*[._-]?[A-Za-z]+[0-9A-Za-z._]*`)

// pythonHides applies step 3 and returns why the record goes, or "".
func (d *decider) pythonHides(r *repodata.Record) string {
	f := d.f
	if r.Name == "python" {
		v, err := matchspec.ParseVersion(r.Version)
		if err != nil {
			return "python " + r.Version + " is not a conda version"
		}
		for _, pv := range f.pythons {
			if v.StartsWith(pv.prefix) {
				return ""
			}
		}
		return "python " + r.Version + " is none of them"
	}
	// The record's python constraints, as written: the verdict depends on nothing
	// else, so it is computed once per distinct set (most records share a few).
	// The key is the one constraint itself, or the constraints joined in a
	// buffer on the stack: a lookup that hits allocates nothing.
	var k string
	var buf [256]byte
	joined := buf[:0]
	n := 0
	for _, dep := range r.Depends {
		if depName(dep) == "python" {
			if n == 0 {
				k = dep
			} else {
				if n == 1 {
					joined = append(joined, k...)
				}
				joined = append(append(joined, " & "...), dep...)
			}
			n++
		}
	}
	if n == 0 {
		return ""
	}
	d.mu.RLock()
	var v pyVerdict
	var ok bool
	if n == 1 {
		v, ok = d.python[k]
	} else {
		v, ok = d.python[string(joined)] // no copy: the compiler looks up the bytes
	}
	d.mu.RUnlock()
	if ok {
		return v.detail
	}
	// Computed outside the lock: two goroutines that miss together both compute
	// the same verdict, which is cheaper than making every other caller wait.
	detail := d.pythonVerdict(r.Depends)
	if n > 1 {
		k = string(joined)
	} else {
		// k may alias the upstream document: the cache must not pin it.
		k = strings.Clone(k)
	}
	d.mu.Lock()
	d.python[k] = pyVerdict{detail}
	d.mu.Unlock()
	return detail
}

func (d *decider) pythonVerdict(depends []string) string {
	var specs []matchspec.VersionSpec
	var written []string
	var named []matchspec.Version
	for _, dep := range depends {
		if depName(dep) != "python" {
			continue
		}
		ms, err := matchspec.Parse(dep)
		if err != nil {
			continue // not a constraint we can read: it constrains nothing
		}
		vs, ok := ms.Version()
		if !ok {
			continue
		}
		specs = append(specs, vs)
		written = append(written, dep)
		for _, lit := range versionLiteral.FindAllString(vs.String(), -1) {
			if v, err := matchspec.ParseVersion(lit); err == nil {
				named = append(named, v)
			}
		}
	}
	if len(specs) == 0 {
		return "" // "python" or "python *": no constraint
	}
	for _, pv := range d.f.pythons {
		cands := pv.candidates
		for _, v := range named {
			if v.StartsWith(pv.prefix) {
				cands = append(cands[:len(cands):len(cands)], v)
			}
		}
		for _, c := range cands {
			if allMatch(specs, c) {
				return ""
			}
		}
	}
	return fmt.Sprintf("needs %s", strings.Join(written, ", "))
}

func allMatch(specs []matchspec.VersionSpec, v matchspec.Version) bool {
	for _, s := range specs {
		if !s.Match(v) {
			return false
		}
	}
	return true
}

// licenseHides applies step 4: an entry hides a record whose license_family, or
// an identifier of whose license (a run of letters, digits, '.', '-'), equals it or
// begins with it followed by a digit or '-', case-insensitively. "GPL" hides
// GPL-3.0-only, GPL2 and family GPL3; not LGPL-2.1 or AGPL-3.0.
func (f *Filter) licenseHides(r *repodata.Record) (rule, detail string) {
	for i, entry := range f.licenses {
		if identifierMatches(r.LicenseFamily, entry) {
			return f.licenseRule[i], "license_family " + r.LicenseFamily
		}
		if identifierMatches(r.License, entry) {
			return f.licenseRule[i], "license " + r.License
		}
	}
	return "", ""
}

func identifierMatches(text, entry string) bool {
	if text == "" {
		return false
	}
	isID := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-'
	}
	for i := 0; i < len(text); {
		if !isID(text[i]) {
			i++
			continue
		}
		j := i
		for j < len(text) && isID(text[j]) {
			j++
		}
		id := text[i:j]
		if len(id) >= len(entry) && strings.EqualFold(id[:len(entry)], entry) {
			if len(id) == len(entry) {
				return true
			}
			if c := id[len(entry)]; c == '-' || c >= '0' && c <= '9' {
				return true
			}
		}
		i = j
	}
	return false
}
