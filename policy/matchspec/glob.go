package matchspec

import (
	"regexp"
	"regexp/syntax"
	"strings"
)

// globPattern matches conda's '*' globs (GlobStrMatch and version globs)
// without a regular expression: conda compiles them to ^(?:a.*b)$, which is
// a plain wildcard match, and this runs several times faster than regexp on
// the hot path of matching millions of records.
type globPattern struct {
	parts []string // literal text around each '*'; at least two entries
}

func compileGlob(p string) globPattern { return globPattern{parts: strings.Split(p, "*")} }

// match reports whether s matches. Like Python's regex '.', a '*' never
// matches a line break, and like Python's '$', a single trailing line break
// in s is tolerated.
func (g globPattern) match(s string) bool {
	if g.matchExact(s) {
		return true
	}
	return strings.HasSuffix(s, "\n") && g.matchExact(s[:len(s)-1])
}

func (g globPattern) matchExact(s string) bool {
	parts := g.parts
	first, last := parts[0], parts[len(parts)-1]
	if !strings.HasPrefix(s, first) {
		return false
	}
	s = s[len(first):]
	// Placing each middle literal at its leftmost occurrence is optimal for
	// '*'-only globs, so no backtracking is needed.
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 || strings.IndexByte(s[:i], '\n') >= 0 {
			return false
		}
		s = s[i+len(p):]
	}
	if !strings.HasSuffix(s, last) {
		return false
	}
	return strings.IndexByte(s[:len(s)-len(last)], '\n') < 0
}

// strMatcher is conda's GlobStrMatch, used for package names and build
// strings: "^...$" is a regular expression, text containing '*' is a glob,
// anything else must be equal.
type strMatcher struct {
	text string
	glob globPattern
	re   *regexp.Regexp
	kind strKind
}

type strKind uint8

const (
	strExact strKind = iota
	strGlob
	strRegex
)

func newStrMatcher(value string) (strMatcher, error) {
	switch {
	case strings.HasPrefix(value, "^") && strings.HasSuffix(value, "$"):
		re, err := compilePythonRegex(value)
		if err != nil {
			return strMatcher{}, err
		}
		return strMatcher{text: value, re: re, kind: strRegex}, nil
	case strings.Contains(value, "*"):
		return strMatcher{text: value, glob: compileGlob(value), kind: strGlob}, nil
	}
	return strMatcher{text: value, kind: strExact}, nil
}

func (m *strMatcher) match(s string) bool {
	switch m.kind {
	case strGlob:
		return m.glob.match(s)
	case strRegex:
		return m.re.MatchString(s)
	}
	return m.text == s
}

// isPattern reports whether the matcher can match more than one string.
func (m *strMatcher) isPattern() bool { return m.kind != strExact }

// compilePythonRegex compiles a user-written conda regex ("^...$"). conda
// uses Python's re module; Go's RE2 accepts the common subset (classes,
// alternation, repetition) and rejects look-around and back-references, which
// we report as an error rather than guess at.
func compilePythonRegex(expr string) (*regexp.Regexp, error) {
	// conda calls re.match, which is anchored at the start only: in
	// "^a|b" the "b" branch must also match at the start.
	re, err := regexp.Compile(`^(?:` + expr + `)`)
	if err != nil {
		return nil, &ParseError{Kind: "regular expression", Input: expr,
			Reason: "not supported (conda regexes must be valid RE2 here)", Err: err}
	}
	// RE2 accepts a repeated anchor ("^+"), Python raises "nothing to repeat".
	if tree, err := syntax.Parse(expr, syntax.Perl); err == nil && repeatsAnchor(tree) {
		return nil, &ParseError{Kind: "regular expression", Input: expr, Reason: "nothing to repeat"}
	}
	return re, nil
}

func repeatsAnchor(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
		switch re.Sub[0].Op {
		case syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
			syntax.OpWordBoundary, syntax.OpNoWordBoundary:
			return true
		}
	}
	for _, sub := range re.Sub {
		if repeatsAnchor(sub) {
			return true
		}
	}
	return false
}
