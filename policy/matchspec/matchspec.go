package matchspec

import (
	"strings"
)

// Candidate is the part of a repodata record that a MatchSpec can test.
type Candidate struct {
	Name        string
	Version     string
	Build       string
	BuildNumber int
}

// MatchSpec is a parsed conda match spec such as "numpy >=1.20,<2",
// "conda-forge::python=3.11" or "openssl[version='>=3',build=h*_0]".
// Its fields are informational: matching uses the matchers compiled by
// Parse, so treat a MatchSpec as read-only. It is safe for concurrent use.
type MatchSpec struct {
	// Name is the lower-cased package name. It may be a glob ("r-*"; "*"
	// matches every package) or, as in conda, a "^...$" regular expression.
	Name string
	// Channel and Subdir are kept from "channel/subdir::name" and from
	// [channel=...] / [subdir=...]. Match ignores them: a Candidate carries
	// no channel, and the proxy selects the channel before matching.
	Channel string
	Subdir  string

	name        strMatcher
	version     VersionSpec
	hasVersion  bool
	build       strMatcher
	hasBuild    bool
	buildNumber *buildNumberSpec
	original    string
}

// knownSubdirs is conda's KNOWN_SUBDIRS: the platform directories that
// "channel/subdir" recognises as a subdir rather than part of the channel.
var knownSubdirs = map[string]bool{
	"noarch": true, "emscripten-wasm32": true, "wasi-wasm32": true, "freebsd-64": true,
	"linux-32": true, "linux-64": true, "linux-aarch64": true, "linux-armv6l": true,
	"linux-armv7l": true, "linux-ppc64": true, "linux-ppc64le": true, "linux-riscv64": true,
	"linux-s390x": true, "osx-64": true, "osx-arm64": true, "win-32": true, "win-64": true,
	"win-arm64": true, "zos-z": true,
}

// conda's other MatchSpec fields: valid in conda, but not matchable against a
// Candidate, so a spec using them is refused rather than half-applied.
var unsupportedFields = map[string]bool{
	"track_features": true, "features": true, "url": true, "md5": true, "sha256": true,
	"license": true, "license_family": true, "fn": true, "when": true, "extras": true, "flags": true,
}

// Parse parses a conda match spec the way conda's MatchSpec(str) does
// (the classic parser, conda.models.match_spec._parse_spec_str):
//
//	numpy                      name only ("*" and globs such as "r-*" allowed)
//	numpy 1.8                  version 1.8 exactly (== 1.8, so also 1.8.0)
//	numpy 1.8* / numpy 1.8.*   versions starting with 1.8
//	numpy=1.8                  versions starting with 1.8 ("=" is fuzzy)
//	numpy==1.8                 exactly 1.8
//	numpy=1.8=py27_0           exactly 1.8, build py27_0 (with a build "=" is exact)
//	numpy 1.8 py27_0           the same
//	numpy >=1.8,<2|1.7.*       any version spec (see ParseVersionSpec)
//	numpy * py3*               any version, build glob
//	numpy[version='>=1.8', build=py*, build_number='>=2']
//	conda-forge::numpy, conda-forge/linux-64::numpy, numpy[channel=conda-forge,subdir=noarch]
//
// Values in brackets override the ones outside (except the name); a trailing
// "# comment" and a legacy "(optional)" section are ignored, as in conda.
//
// Deliberate differences from conda, each failing closed where conda would
// silently ignore part of the spec or build a spec matching nothing: the
// empty string (which conda reads as "match everything") is an error;
// " if " conditions, single-colon namespaces ("ns:name"), line breaks, and
// quote characters in a version or build are errors; package file names and
// URLs ("x-1.0-0.conda"), legacy feature specs ("mkl@") and the bracket
// fields conda can match but a Candidate cannot carry (md5, sha256, license,
// features, track_features, url, fn, when, extras, flags) are errors; glob
// names may only use [a-z0-9._-] besides '*'. Channels are kept as written:
// conda's channel canonicalisation (URLs to names, "pkgs/main" to "defaults")
// depends on client configuration, so it is not reproduced.
func Parse(s string) (*MatchSpec, error) {
	fail := func(reason string, cause error) (*MatchSpec, error) {
		return nil, matchSpecError(s, reason, cause)
	}
	switch {
	case s == "":
		return fail("empty spec", nil)
	case strings.ContainsAny(s, "\n\r"):
		return fail("line breaks are not allowed", nil)
	case strings.HasSuffix(s, "@"):
		return fail("legacy feature specs ('name@') are not supported", nil)
	}
	spec := s
	if i := strings.IndexByte(spec, '#'); i >= 0 {
		spec = spec[:i]
	}
	if strings.Contains(spec, " if ") {
		// The classic parser drops the condition silently.
		return fail("conditional specs (' if ...') are not supported", nil)
	}
	if hasPackageExtension(spec) {
		return fail("package file names and URLs are not supported", nil)
	}

	// Step 3: the last [...] section holds key=value pairs.
	brackets := map[string]string{}
	var keys []string // in order of appearance, for deterministic errors
	if open, close, ok := findSection(spec, '[', ']'); ok {
		section := spec[open : close+1]
		spec = strings.ReplaceAll(spec, section, "")
		for _, kv := range bracketPairs(section[1 : len(section)-1]) {
			if kv.value == "" {
				return fail("key-value mismatch in brackets (empty value for "+kv.key+")", nil)
			}
			if kv.key == "version" {
				// conda never passes the build here, whatever the brackets hold.
				kv.value = sanitizeVersion(kv.value, false)
			}
			brackets[kv.key] = kv.value
			keys = append(keys, kv.key)
		}
	}
	for _, key := range keys {
		switch {
		case key == "version" || key == "build" || key == "build_number" ||
			key == "channel" || key == "subdir" || key == "name":
		case unsupportedFields[key]:
			return fail("field '"+key+"' is not supported", nil)
		default:
			return fail("cannot match on field '"+key+"'", nil)
		}
	}

	// Step 4: a legacy "(target=...,optional)" section is dropped.
	if open, close, ok := findSection(spec, '(', ')'); ok {
		spec = strings.ReplaceAll(spec, spec[open:close+1], "")
	}

	// Step 5: channel(/subdir)::name. conda splits on the last two colons.
	m := &MatchSpec{original: s}
	if j := strings.LastIndexByte(spec, ':'); j >= 0 {
		i := strings.LastIndexByte(spec[:j], ':')
		namespace := spec[i+1 : j]
		if namespace != "" {
			return fail("namespace '"+namespace+"' is not supported (use '::' after a channel)", nil)
		}
		if i >= 0 {
			m.Channel, m.Subdir = splitChannel(spec[:i])
		}
		spec = spec[j+1:]
	}
	if c, ok := brackets["channel"]; ok {
		bc, bs := splitChannel(c)
		if bc != "" {
			m.Channel = bc
		}
		if bs != "" {
			m.Subdir = bs
		}
	}
	if sd, ok := brackets["subdir"]; ok {
		m.Subdir = sd
	}
	for _, part := range [...]string{m.Channel, m.Subdir} {
		if part != "" && !validChannelText(part) {
			return fail("invalid channel or subdir '"+part+"'", nil)
		}
	}

	// Step 6: the name runs up to the first space or operator character.
	end := strings.IndexAny(spec, " =<>!~")
	if end < 0 {
		end = len(spec)
	}
	name, rest := spec[:end], spec[end:]
	if name == "" {
		return fail("no package name found", nil)
	}
	if reason := checkName(name); reason != "" {
		return fail(reason, nil)
	}
	m.Name = strings.ToLower(name)
	var err error
	if m.name, err = newStrMatcher(m.Name); err != nil {
		return fail("bad package name pattern", err)
	}

	// Step 7: version and build. conda's regex needs at least one character
	// after the operator or space that ends the name ("numpy=" is just numpy).
	var version, build string
	if len(rest) >= 2 {
		if vb := pyStrip(rest); vb != "" {
			if strings.Contains(vb, "[") {
				return fail("multiple brackets sections not allowed", nil)
			}
			version, build, m.hasBuild = splitVersionBuild(vb)
			version = sanitizeVersion(version, m.hasBuild)
			m.hasVersion = true
		}
	}
	if v, ok := brackets["version"]; ok {
		version, m.hasVersion = v, true
	}
	if b, ok := brackets["build"]; ok {
		build, m.hasBuild = b, true
	}
	if m.hasVersion {
		if strings.ContainsAny(version, `'"`) {
			return fail("quote characters are not allowed in a version", nil)
		}
		if m.version, err = ParseVersionSpec(version); err != nil {
			return fail("bad version", err)
		}
	}
	if m.hasBuild {
		if strings.ContainsAny(build, `'"`) {
			return fail("quote characters are not allowed in a build string", nil)
		}
		if m.build, err = newStrMatcher(build); err != nil {
			return fail("bad build string pattern", err)
		}
	}
	if bn, ok := brackets["build_number"]; ok {
		if m.buildNumber, err = parseBuildNumber(bn); err != nil {
			return fail("bad build number", err)
		}
	}
	return m, nil
}

// MustParse is Parse for constants known to be valid; it panics on error.
func MustParse(s string) *MatchSpec {
	m, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return m
}

// Match reports whether the candidate satisfies every constraint of the spec.
// A candidate whose version is not a valid conda version never matches a
// spec with a version constraint other than "*".
func (m *MatchSpec) Match(c Candidate) bool {
	if !m.name.match(c.Name) {
		return false
	}
	if m.hasBuild && !m.build.match(c.Build) {
		return false
	}
	if m.buildNumber != nil && !m.buildNumber.match(c.BuildNumber) {
		return false
	}
	// conda's "*" accepts any version text without parsing it.
	if m.hasVersion && !m.version.MatchesAll() {
		return m.version.MatchString(c.Version)
	}
	return true
}

// MatchVersion is Match for callers that already hold the parsed version of
// the candidate; c.Version is ignored.
func (m *MatchSpec) MatchVersion(c Candidate, v Version) bool {
	if !m.name.match(c.Name) {
		return false
	}
	if m.hasBuild && !m.build.match(c.Build) {
		return false
	}
	if m.buildNumber != nil && !m.buildNumber.match(c.BuildNumber) {
		return false
	}
	if m.hasVersion && !m.version.MatchesAll() {
		return m.version.Match(v)
	}
	return true
}

// MatchName reports whether a package name satisfies the spec's name (exact,
// glob or regex). Like conda, the candidate name is not lower-cased.
func (m *MatchSpec) MatchName(name string) bool { return m.name.match(name) }

// NameIsExact reports whether the spec names a single package (no glob).
func (m *MatchSpec) NameIsExact() bool { return !m.name.isPattern() }

// Version returns the version constraint, if the spec has one.
func (m *MatchSpec) Version() (VersionSpec, bool) { return m.version, m.hasVersion }

// Build returns the build-string constraint (exact, glob or ^regex$), if any.
func (m *MatchSpec) Build() (string, bool) { return m.build.text, m.hasBuild }

// BuildNumber returns the build-number constraint as text ("3", ">=2", "*"),
// if any.
func (m *MatchSpec) BuildNumber() (string, bool) {
	if m.buildNumber == nil {
		return "", false
	}
	return m.buildNumber.text, true
}

// Original returns the text given to Parse.
func (m *MatchSpec) Original() string { return m.original }

// String returns conda's canonical form of the spec, e.g. "numpy==1.8=py27_0",
// "numpy=1.8", "conda-forge/linux-64::numpy[version='>=1.8,<2']". It always
// parses back to an equivalent spec; where conda's own canonical form would
// not (glob versions ending in ".*", values needing quotes, specs ending in
// a package file extension) the value is moved into brackets or quoted.
func (m *MatchSpec) String() string {
	s := m.format(false)
	if !strings.HasSuffix(s, "]") && hasPackageExtension(s) {
		// Would read back as a file name; move version and build into
		// brackets so that the string ends with ']'.
		s = m.format(true)
	} else if back, err := Parse(s); err != nil || back.format(false) != s {
		// The positional form does not read back as itself (a build such as
		// "-" after "==1" joins the version; a build's leading space is
		// trimmed): the bracket form, quoted, does.
		s = m.format(true)
	}
	return s
}

func (m *MatchSpec) format(forceBrackets bool) string {
	var b strings.Builder
	var br []string

	chanExact := m.Channel != "" && !strings.Contains(m.Channel, "*") &&
		!(strings.HasPrefix(m.Channel, "^") && strings.HasSuffix(m.Channel, "$"))
	if chanExact {
		b.WriteString(m.Channel)
	} else if m.Channel != "" && m.Channel != "*" {
		br = append(br, "channel="+m.Channel) // validChannelText: nothing to quote
	}
	if m.Subdir != "" {
		if chanExact && knownSubdirs[m.Subdir] {
			b.WriteString("/" + m.Subdir)
		} else {
			br = append(br, "subdir="+m.Subdir)
		}
	}
	if b.Len() > 0 {
		b.WriteString("::")
	}
	b.WriteString(m.Name)

	versionExact := false
	positional := "" // what conda writes after the name for the version, if anything
	if m.hasVersion {
		v := m.version.String()
		root := m.version.root
		switch root.form {
		case formAll:
			// conda omits "*" (conda issue 14357)
		case formExact:
			positional, versionExact = "=="+v, true
		case formPrefix:
			// conda writes v minus ".*"; the operand itself is the same spec
			// and stays stable when v is "1.2..*".
			positional = "=" + root.ver.String()
		case formGlob:
			if strings.HasSuffix(v, ".*") {
				// conda writes "=" + v[:-2], which reads back as a different glob.
				positional, versionExact = "=="+v, true
			} else if strings.HasSuffix(v, "*") && !strings.HasSuffix(v, "**") {
				positional = "=" + v[:len(v)-1]
			} else {
				positional, versionExact = "=="+v, true
			}
		case formOperator:
			switch root.op {
			case opEq:
				// Read back, "==1*" would lose its "==" and become a prefix match.
				if !strings.Contains(v, "*") {
					positional, versionExact = v, true
				}
			case opNe, opNotPrefix, opCompatible:
				if !m.hasBuild {
					positional = v
				}
			}
		}
		if root.form == formAll {
			if forceBrackets {
				br = append(br, "version=*")
			}
		} else {
			if positional == "" || forceBrackets || !positionalSafe(positional) {
				br = append(br, "version="+quoteValue(bracketVersion(v, root), ""))
				versionExact = false
			} else {
				b.WriteString(positional)
			}
		}
	} else if forceBrackets {
		br = append(br, "version=*")
	}

	if m.hasBuild {
		bs := m.build.text
		switch {
		case strings.ContainsAny(bs, "><$^|,"):
			br = append(br, "build="+quoteValue(bs, ""))
		case versionExact && !forceBrackets && !strings.Contains(bs, "*") && positionalSafe(strings.ReplaceAll(bs, " ", "")) &&
			!strings.HasSuffix(positional, "!"):
			// (conda's positional build may contain spaces: the build is
			// everything after the separator.) A version ending in '!' (the
			// glob "*!") would join the separator into "!=" and read back as
			// one version constraint: its build goes in brackets.
			b.WriteString("=" + bs)
		default:
			br = append(br, "build="+quoteValue(bs, " ,"))
		}
	}
	if m.buildNumber != nil {
		br = append(br, "build_number="+quoteValue(m.buildNumber.text, ", ="))
	}
	if len(br) > 0 {
		b.WriteString("[" + strings.Join(br, ",") + "]")
	}
	return b.String()
}

// bracketVersion protects a version written inside brackets from the
// rewriting conda applies there (sanitizeVersion turns "==1.2,<2" into
// "1.2,<2" and "=1.2" into "1.2*"): a leading "==X" is written as the
// equivalent exact "X" when X has no '*', anything else is parenthesised,
// which conda leaves alone and which does not change the spec.
func bracketVersion(v string, root *specNode) string {
	if sanitizeVersion(v, false) == v {
		return v
	}
	first := root
	for len(first.kids) > 0 {
		first = first.kids[0]
	}
	if first.form == formOperator && first.op == opEq && !strings.Contains(first.text, "*") {
		return strings.TrimPrefix(v, "==")
	}
	return "(" + v + ")"
}

// quoteValue wraps v in single quotes, as conda's canonical form does, when
// quoteIf is empty (always quote) or v contains one of its characters.
func quoteValue(v, quoteIf string) string {
	if quoteIf == "" || strings.ContainsAny(v, quoteIf) {
		return "'" + v + "'"
	}
	return v
}

// positionalSafe reports whether text can follow the name without brackets
// and read back unchanged: versions, globs and build strings made of these
// characters, after a leading operator.
func positionalSafe(text string) bool {
	t := strings.TrimLeft(text, "=!~")
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(isLowerAlnum(c) || (c >= 'A' && c <= 'Z') || strings.IndexByte(`._*+!-?{}\`, c) >= 0) {
			return false
		}
	}
	return true
}

func hasPackageExtension(s string) bool {
	l := strings.ToLower(s)
	return strings.HasSuffix(l, ".conda") || strings.HasSuffix(l, ".tar.bz2")
}

// findSection locates conda's _BRACKETS_RE / _PARENS_RE match, .*(\[.*\]):
// the last opening character that has a closing one after it, up to the
// last closing character.
func findSection(s string, open, close byte) (int, int, bool) {
	j := strings.LastIndexByte(s, close)
	if j < 0 {
		return 0, 0, false
	}
	i := strings.LastIndexByte(s[:j], open)
	if i < 0 {
		return 0, 0, false
	}
	return i, j, true
}

type keyValue struct{ key, value string }

// bracketPairs scans key=value pairs the way conda's _BRACKETS_KV_RE does
// with finditer: keys are [a-zA-Z0-9_-]+, values are optionally quoted with
// ' or ", contain no quote characters, and end at ',', ' ' or the end.
// Text that does not fit is skipped, as conda skips it.
func bracketPairs(s string) []keyValue {
	var out []keyValue
	isKey := func(c byte) bool {
		return isLowerAlnum(c) || (c >= 'A' && c <= 'Z') || c == '_' || c == '-'
	}
	isDelim := func(i int) bool { return i == len(s) || s[i] == ',' || s[i] == ' ' }
	for p := 0; p < len(s); {
		e := p
		for e < len(s) && isKey(s[e]) {
			e++
		}
		if e == p || e == len(s) || s[e] != '=' {
			p++
			continue
		}
		key, v := s[p:e], e+1
		// Next quote character at or after i.
		nextQuote := func(i int) int {
			k := strings.IndexAny(s[i:], `'"`)
			if k < 0 {
				return len(s)
			}
			return i + k
		}
		matched := false
		if v < len(s) && (s[v] == '\'' || s[v] == '"') {
			k := nextQuote(v + 1)
			if k < len(s) && s[k] == s[v] && isDelim(k+1) {
				out = append(out, keyValue{key, s[v+1 : k]})
				p, matched = min(k+2, len(s)), true
			}
		}
		if !matched {
			// Unquoted: the shortest run of non-quote characters followed by
			// a delimiter.
			k := v
			for k < len(s) && !isDelim(k) && s[k] != '\'' && s[k] != '"' {
				k++
			}
			if isDelim(k) {
				out = append(out, keyValue{key, s[v:k]})
				p, matched = min(k+1, len(s)), true
			}
		}
		if !matched {
			p++
		}
	}
	return out
}

// sanitizeVersion is conda's _sanitize_version_str: "==1.2" becomes "1.2"
// (exact) unless a build follows, "=1.2" becomes "1.2*" (prefix) unless a
// build follows, in which case it is exact.
func sanitizeVersion(v string, hasBuild bool) string {
	if v == "==" || v == "=" || !strings.HasPrefix(v, "=") {
		return v
	}
	w := strings.TrimLeft(v, "=")
	if strings.HasPrefix(v, "==") && !hasBuild {
		return w
	}
	if !strings.ContainsAny(w, "=,|") {
		if !hasBuild && !strings.HasSuffix(w, "*") {
			return w + "*"
		}
		return w
	}
	return v
}

// splitVersionBuild reproduces conda's _VERSION_BUILD_RE, which takes the
// shortest version such that the rest is a separator (' ' or '=', not right
// after an operator character) followed by a build string free of -=,|<>~.
// Spaces are then removed from the version, so ">= 1.0 , < 2" is ">=1.0,<2".
func splitVersionBuild(s string) (version, build string, hasBuild bool) {
	lastBad := -1
	for i := 0; i < len(s); i++ {
		if strings.IndexByte("-=,|<>~", s[i]) >= 0 {
			lastBad = i
		}
	}
	sepOK := func(k int) bool {
		return k < len(s)-1 && (s[k] == ' ' || s[k] == '=') &&
			strings.IndexByte("=!|,<>~", s[k-1]) < 0 && lastBad <= k
	}
	// The regex engine tries version lengths n+1 (absorbing one more
	// non-operator character) before n, for n = 1, 2, ...
	result := func(k int) (string, string, bool) {
		if k < len(s) {
			return strings.ReplaceAll(s[:k], " ", ""), pyStrip(s[k+1:]), true
		}
		return strings.ReplaceAll(s, " ", ""), "", false
	}
	for n := 1; n <= len(s); n++ {
		if n < len(s) && strings.IndexByte("><!,|", s[n]) < 0 {
			if sepOK(n + 1) {
				return result(n + 1)
			}
			if n+1 == len(s) {
				return result(len(s))
			}
		}
		if sepOK(n) {
			return result(n)
		}
		if n == len(s) {
			return result(len(s))
		}
	}
	return result(len(s))
}

func splitChannel(c string) (channel, subdir string) {
	if i := strings.LastIndexByte(c, '/'); i >= 0 && knownSubdirs[c[i+1:]] {
		return c[:i], c[i+1:]
	}
	return c, ""
}

// validChannelText refuses characters that no channel name or URL needs and
// that would change meaning when the spec is printed and parsed again.
func validChannelText(s string) bool {
	for _, r := range s {
		if r < 0x21 || r == 0x7f || pyIsSpace(r) || strings.ContainsRune(`[]()'"#,`, r) {
			return false
		}
	}
	return true
}

// checkName applies conda's CEP-26 package name rules to names without '*';
// names with '*' are globs (conda does not validate them) and here must use
// the same character set plus '*', or be a "^...$" regular expression.
func checkName(name string) string {
	lower := strings.ToLower(name)
	if strings.Contains(lower, "*") {
		if strings.HasPrefix(lower, "^") && strings.HasSuffix(lower, "$") {
			for _, r := range lower {
				if r < 0x21 || r >= 0x7f || strings.ContainsRune(`[]()'"#`, r) {
					return "invalid character in package name pattern"
				}
			}
			return ""
		}
		for i := 0; i < len(lower); i++ {
			c := lower[i]
			if !isLowerAlnum(c) && strings.IndexByte("._-*", c) < 0 {
				return "invalid character in package name pattern"
			}
		}
		return ""
	}
	var bad []rune
	for _, r := range lower {
		if r >= 0x80 || !(isLowerAlnum(byte(r)) || r == '.' || r == '_' || r == '-') {
			if !strings.ContainsRune(string(bad), r) {
				bad = append(bad, r)
			}
		}
	}
	if len(bad) > 0 {
		return "package name contains invalid characters (" + string(bad) + ")"
	}
	if !cep26Name(lower) {
		return "invalid package name"
	}
	return ""
}

func isNameSep(c byte) bool { return c == '.' || c == '-' || c == '_' }

// cep26Name implements conda's two CEP-26 regexes:
//
//	^(([a-z0-9])|([a-z0-9_](?!_)))[._-]?([a-z0-9]+(\.|-|_|$))*$
//	^__[a-z0-9][._-]?([a-z0-9]+(\.|-|_|$))*$
//
// i.e. alphanumeric runs separated by single separators, with an optional
// leading underscore (or "__" for virtual packages).
func cep26Name(s string) bool {
	// rest matches ([a-z0-9]+(\.|-|_|$))*$
	rest := func(r string) bool {
		for i := 0; i < len(r); {
			if !isLowerAlnum(r[i]) {
				return false
			}
			for i < len(r) && isLowerAlnum(r[i]) {
				i++
			}
			if i == len(r) {
				return true
			}
			if !isNameSep(r[i]) {
				return false
			}
			i++
		}
		return true
	}
	afterHead := func(r string) bool {
		return rest(r) || (r != "" && isNameSep(r[0]) && rest(r[1:]))
	}
	if s == "" {
		return false
	}
	if isLowerAlnum(s[0]) || (s[0] == '_' && (len(s) == 1 || s[1] != '_')) {
		if afterHead(s[1:]) {
			return true
		}
	}
	return len(s) >= 3 && strings.HasPrefix(s, "__") && isLowerAlnum(s[2]) && afterHead(s[3:])
}
