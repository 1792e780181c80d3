package matchspec

import "strings"

// atomKind orders the three kinds of version sub-components the way conda's
// VersionOrder does: any string sorts below any number, and "post" sorts
// above every number (conda stores it as float('inf')).
type atomKind uint8

const (
	atomStr  atomKind = iota // lower-case text; "dev" is stored as "DEV"
	atomNum                  // decimal digits with leading zeros removed ("" is zero)
	atomPost                 // the special string "post"
)

// atom is one run of digits or non-digits inside a version component.
// Components are not stored as nested slices: first marks the atom that
// starts a component, which keeps a parsed version to a single allocation.
type atom struct {
	s     string
	kind  atomKind
	first bool
}

// zeroAtom is conda's fill value: missing sub-components and missing
// components compare as the integer 0, which makes 1.1 == 1.1.0.
var zeroAtom = atom{kind: atomNum}

// Version is a parsed conda version string, ordered exactly like conda's
// VersionOrder. The zero Version is not a valid version; obtain one from
// ParseVersion. Versions are immutable and safe for concurrent use.
type Version struct {
	raw   string // the text as given, returned by String
	norm  string // conda's normalised form (stripped, lower-case, '-' → '_')
	atoms []atom // epoch and version components, then local components
	local int    // index in atoms where the local version starts
}

// ParseVersion parses a conda version string. Leading and trailing whitespace
// is ignored and comparison is case-insensitive, as in conda. It returns a
// *ParseError for empty strings, characters outside [0-9A-Za-z._*+!-], a
// non-numeric or repeated epoch ('!'), a repeated or dangling local version
// separator ('+'), and empty components such as "1..2".
func ParseVersion(s string) (Version, error) {
	v := asciiLower(pyStrip(s))
	if v == "" {
		return Version{}, versionError(s, "empty version string")
	}
	if !validVersionChars(v) {
		// conda accepts dashes as separators, but only when the string has no
		// underscores, by rewriting them to underscores.
		if strings.IndexByte(v, '-') < 0 || strings.IndexByte(v, '_') >= 0 {
			return Version{}, versionError(s, "invalid character(s)")
		}
		v = strings.ReplaceAll(v, "-", "_")
		if !validVersionChars(v) {
			return Version{}, versionError(s, "invalid character(s)")
		}
	}

	epoch, body := "0", v
	if i := strings.IndexByte(v, '!'); i >= 0 {
		if strings.IndexByte(v[i+1:], '!') >= 0 {
			return Version{}, versionError(s, "duplicated epoch separator '!'")
		}
		epoch, body = v[:i], v[i+1:]
		if !allDigits(epoch) {
			return Version{}, versionError(s, "epoch must be an integer")
		}
	}
	main, local, hasLocal := body, "", false
	if i := strings.IndexByte(body, '+'); i >= 0 {
		if strings.IndexByte(body[i+1:], '+') >= 0 {
			return Version{}, versionError(s, "duplicated local version separator '+'")
		}
		main, local, hasLocal = body[:i], body[i+1:], true
	}
	if main == "" {
		if hasLocal {
			return Version{}, versionError(s, "missing version before local version separator '+'")
		}
		return Version{}, versionError(s, "missing version after epoch separator '!'")
	}

	// Most versions have fewer than 16 atoms; build them on the stack and copy
	// once so that a parse costs a single allocation.
	var buf [16]atom
	atoms := appendComponent(buf[:0], epoch)
	var ok bool
	// conda keeps a trailing underscore attached to the last component
	// ("1.0.1_" → [1, "_"]) so that openssl-style versions can sort before
	// their lettered releases.
	trailing := main[len(main)-1] == '_'
	split := main
	if trailing {
		split = main[:len(main)-1]
	}
	start := 0
	for i := 0; i <= len(split); i++ {
		if i < len(split) && split[i] != '.' && split[i] != '_' {
			continue
		}
		comp := main[start:i]
		if i == len(split) && trailing {
			comp = main[start:]
		}
		if atoms, ok = appendComponentChecked(atoms, comp); !ok {
			return Version{}, versionError(s, "empty version component")
		}
		start = i + 1
	}
	localStart := len(atoms)
	if hasLocal {
		start = 0
		for i := 0; i <= len(local); i++ {
			if i < len(local) && local[i] != '.' && local[i] != '_' {
				continue
			}
			if atoms, ok = appendComponentChecked(atoms, local[start:i]); !ok {
				return Version{}, versionError(s, "empty version component")
			}
			start = i + 1
		}
	}
	out := make([]atom, len(atoms))
	copy(out, atoms)
	return Version{raw: s, norm: v, atoms: out, local: localStart}, nil
}

// validVersionChars is conda's version_check_re: ^[\*\.\+!_0-9a-z]+$.
func validVersionChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLowerAlnum(c) && c != '*' && c != '.' && c != '+' && c != '!' && c != '_' {
			return false
		}
	}
	return true
}

func appendComponentChecked(atoms []atom, comp string) ([]atom, bool) {
	if comp == "" {
		return atoms, false
	}
	return appendComponent(atoms, comp), true
}

// appendComponent splits one non-empty component into runs of digits, runs of
// '*' and runs of anything else (conda's version_split_re), prepending a zero
// when the component does not start with a digit so that numbers and strings
// stay in phase ("1.1.a1" == "1.1.0a1").
func appendComponent(atoms []atom, comp string) []atom {
	first := true
	if !isDigit(comp[0]) {
		atoms = append(atoms, atom{kind: atomNum, first: true})
		first = false
	}
	for i := 0; i < len(comp); {
		j := i + 1
		switch {
		case isDigit(comp[i]):
			for j < len(comp) && isDigit(comp[j]) {
				j++
			}
			atoms = append(atoms, atom{s: strings.TrimLeft(comp[i:j], "0"), kind: atomNum, first: first})
		case comp[i] == '*':
			for j < len(comp) && comp[j] == '*' {
				j++
			}
			atoms = append(atoms, atom{s: comp[i:j], kind: atomStr, first: first})
		default:
			for j < len(comp) && !isDigit(comp[j]) && comp[j] != '*' {
				j++
			}
			run := comp[i:j]
			switch run {
			case "post":
				atoms = append(atoms, atom{kind: atomPost, first: first})
			case "dev":
				// Upper case sorts below every other (lower-case) string but
				// above '*', giving conda's order '*' < dev < '_' < 'a'.
				atoms = append(atoms, atom{s: "DEV", kind: atomStr, first: first})
			default:
				atoms = append(atoms, atom{s: run, kind: atomStr, first: first})
			}
		}
		first = false
		i = j
	}
	return atoms
}

// String returns the version exactly as it was given to ParseVersion.
func (v Version) String() string { return v.raw }

// Normalized returns conda's normalised spelling of the version: stripped,
// lower-cased, with dashes turned into underscores when conda does so.
func (v Version) Normalized() string { return v.norm }

// Compare returns -1, 0 or +1 as v sorts before, equal to, or after o in
// conda's order. Equal versions may be spelled differently ("1.1" and
// "1.1.0", "1.0-1" and "1.0_1", "1.0RC1" and "1.0rc1").
func (v Version) Compare(o Version) int {
	if c := comparePart(v.atoms[:v.local], o.atoms[:o.local]); c != 0 {
		return c
	}
	return comparePart(v.atoms[v.local:], o.atoms[o.local:])
}

// Equal reports whether v and o are equal in conda's order.
func (v Version) Equal(o Version) bool { return v.Compare(o) == 0 }

// nextComponent returns the end of the component starting at i (i itself if
// the part is exhausted, which stands for conda's empty fill component).
func nextComponent(a []atom, i int) int {
	if i >= len(a) {
		return i
	}
	j := i + 1
	for j < len(a) && !a[j].first {
		j++
	}
	return j
}

// comparePart compares two lists of components lexicographically, padding
// the shorter list and the shorter component with zeros.
func comparePart(a, b []atom) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		ie, je := nextComponent(a, i), nextComponent(b, j)
		if c := compareComponent(a[i:ie], b[j:je]); c != 0 {
			return c
		}
		i, j = ie, je
	}
	return 0
}

func compareComponent(a, b []atom) int {
	n := max(len(a), len(b))
	for k := 0; k < n; k++ {
		x, y := zeroAtom, zeroAtom
		if k < len(a) {
			x = a[k]
		}
		if k < len(b) {
			y = b[k]
		}
		if c := compareAtom(x, y); c != 0 {
			return c
		}
	}
	return 0
}

func compareAtom(x, y atom) int {
	if x.kind != y.kind {
		// str < number < post
		if x.kind < y.kind {
			return -1
		}
		return 1
	}
	switch x.kind {
	case atomPost:
		return 0
	case atomNum:
		if len(x.s) != len(y.s) {
			if len(x.s) < len(y.s) {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(x.s, y.s)
}

func atomEqual(x, y atom) bool { return x.kind == y.kind && x.s == y.s }

// StartsWith implements conda's VersionOrder.startswith, used by the prefix
// specs "1.2.*", "1.2*" and "=1.2": every component of prefix but the last
// must equal v's, and the last one matches if its final number is equal or
// its final string is a prefix of v's string at that position. So 1.2.3
// starts with 1.2, 2013ab starts with 2013a, and 1.20 does not start with 1.2.
// A prefix with a local version (1.2+3) requires the main versions to be equal
// and applies the same rule to the local part; without one, v's local part is
// ignored.
func (v Version) StartsWith(prefix Version) bool {
	if prefix.atoms == nil || v.atoms == nil {
		return false
	}
	var t1, t2 []atom
	if prefix.local < len(prefix.atoms) {
		if comparePart(v.atoms[:v.local], prefix.atoms[:prefix.local]) != 0 {
			return false
		}
		t1, t2 = v.atoms[v.local:], prefix.atoms[prefix.local:]
	} else {
		t1, t2 = v.atoms[:v.local], prefix.atoms[:prefix.local]
	}
	// Walk all components of t2 but the last, comparing with t1 (padded).
	i, j := 0, 0
	for {
		je := nextComponent(t2, j)
		if je == len(t2) {
			break // t2[j:je] is the last component
		}
		ie := nextComponent(t1, i)
		if compareComponent(t1[i:ie], t2[j:je]) != 0 {
			return false
		}
		i, j = ie, je
	}
	v1 := t1[i:nextComponent(t1, i)]
	v2 := t2[j:]
	nt := len(v2) - 1
	if compareComponent(v1[:min(nt, len(v1))], v2[:nt]) != 0 {
		return false
	}
	c1 := zeroAtom
	if len(v1) > nt {
		c1 = v1[nt]
	}
	c2 := v2[nt]
	if c2.kind == atomStr {
		return c1.kind == atomStr && strings.HasPrefix(c1.s, c2.s)
	}
	return atomEqual(c1, c2)
}
