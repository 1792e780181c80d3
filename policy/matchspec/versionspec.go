package matchspec

import (
	"regexp"
	"strings"
)

// specForm records which of conda's VersionSpec branches produced a node.
// MatchSpec.String needs it to choose between conda's "name=1.2",
// "name==1.2" and "name[version='...']" spellings.
type specForm uint8

const (
	formAll      specForm = iota // "*"
	formAnd                      // a,b
	formOr                       // a|b
	formRegex                    // ^...$
	formOperator                 // ==1.2, !=1.2, <1.2, <=1.2, >1.2, >=1.2, =1.2, ~=1.2
	formGlob                     // a '*' before the end: 1.*.3
	formPrefix                   // trailing '*': 1.2.* or 1.2*
	formExact                    // bare version: 1.2
)

type cmpOp uint8

const (
	opEq cmpOp = iota
	opNe
	opLt
	opLe
	opGt
	opGe
	opPrefix    // "=1.2", "1.2.*", "=1.2.*", ">=" is not this
	opNotPrefix // "!=1.2.*"
	opCompatible
)

type specNode struct {
	form   specForm
	op     cmpOp
	ver    Version
	compat Version // ~=: the version with its last '.' component dropped
	glob   globPattern
	re     *regexp.Regexp
	kids   []*specNode
	text   string
}

// VersionSpec is a parsed conda version constraint such as ">=1.2,<2|3.*".
// It is immutable and safe for concurrent use. The zero VersionSpec matches
// nothing (it fails closed); obtain one from ParseVersionSpec.
type VersionSpec struct {
	root *specNode
}

// ParseVersionSpec parses a conda version spec (conda's VersionSpec):
//
//   - "*" matches every version;
//   - "1.2" matches versions equal to 1.2 (so also 1.2.0);
//   - "1.2.*" and "1.2*" match versions starting with 1.2 (see Version.StartsWith);
//   - "==1.2", "!=1.2", "<1.2", "<=1.2", ">1.2", ">=1.2" compare;
//   - "=1.2" is the same as "1.2.*"; "!=1.2.*" excludes that prefix; ">=1.2.*"
//     is ">=1.2"; "~=1.2.3" means ">=1.2.3,1.2.*" (compatible release);
//   - a '*' elsewhere ("1.*.3") is a glob on the version text;
//   - "^...$" is a regular expression on the version text;
//   - "," (and) binds tighter than "|" (or); parentheses group.
//
// Regular expressions use Go's RE2 syntax, which covers what conda specs
// use in practice; Python-only constructs (look-around, back-references,
// possessive quantifiers) are rejected. Like Python's re.match they are
// anchored at the start, and like conda they see the version text as written.
//
// Deliberate differences from conda, all of them cases conda either crashes
// on or silently misreads: two expressions side by side without an operator
// ("(1.5)(1.6)", which conda truncates to "1.5") are an error; "~=1" (no '.'
// to drop) is an error at parse time rather than at match time; a version
// containing '@' (conda's legacy exact-string match, which can never match a
// valid version) is an error; whitespace inside a glob or '*'-suffixed version
// ("1 .*") is an error; several trailing stars ("1.2**") are an error.
func ParseVersionSpec(s string) (VersionSpec, error) {
	n, err := parseSpecExpr(s)
	if err != nil {
		return VersionSpec{}, err
	}
	return VersionSpec{root: n}, nil
}

// MustParseVersionSpec is ParseVersionSpec for constants known to be valid;
// it panics on error.
func MustParseVersionSpec(s string) VersionSpec {
	vs, err := ParseVersionSpec(s)
	if err != nil {
		panic(err)
	}
	return vs
}

// String returns conda's canonical spelling of the spec (conda's
// VersionSpec.spec): whitespace around terms and operators removed, "1.2*"
// written "1.2.*". Unlike conda, an '|' group nested inside ',' keeps its
// parentheses, so that the string always parses back to the same spec.
func (s VersionSpec) String() string {
	if s.root == nil {
		return ""
	}
	return s.root.text
}

// Match reports whether v satisfies the spec.
func (s VersionSpec) Match(v Version) bool {
	if s.root == nil || v.atoms == nil {
		return false
	}
	return s.root.match(v)
}

// MatchString parses v and reports whether it satisfies the spec; a string
// that is not a valid conda version never matches. (conda itself raises for
// such a version unless a "*" or regex branch decides first; failing closed
// keeps the answer independent of the order of the branches.)
func (s VersionSpec) MatchString(v string) bool {
	ver, err := ParseVersion(v)
	if err != nil {
		return false
	}
	return s.Match(ver)
}

// IsExact reports whether the spec pins a single version ("1.2" or "==1.2"),
// as conda's VersionSpec.is_exact does.
func (s VersionSpec) IsExact() bool {
	if s.root == nil {
		return false
	}
	return s.root.form == formExact || (s.root.form == formOperator && s.root.op == opEq)
}

// MatchesAll reports whether the spec is "*".
func (s VersionSpec) MatchesAll() bool { return s.root != nil && s.root.form == formAll }

func (n *specNode) match(v Version) bool {
	switch n.form {
	case formAll:
		return true
	case formAnd:
		for _, k := range n.kids {
			if !k.match(v) {
				return false
			}
		}
		return true
	case formOr:
		for _, k := range n.kids {
			if k.match(v) {
				return true
			}
		}
		return false
	case formRegex:
		// conda runs regexes and globs on the record's version text, not on
		// the normalised version.
		return n.re.MatchString(v.raw)
	case formGlob:
		if n.re != nil {
			return n.re.MatchString(v.raw)
		}
		return n.glob.match(v.raw)
	}
	switch n.op {
	case opEq:
		return v.Compare(n.ver) == 0
	case opNe:
		return v.Compare(n.ver) != 0
	case opLt:
		return v.Compare(n.ver) < 0
	case opLe:
		return v.Compare(n.ver) <= 0
	case opGt:
		return v.Compare(n.ver) > 0
	case opGe:
		return v.Compare(n.ver) >= 0
	case opPrefix:
		return v.StartsWith(n.ver)
	case opNotPrefix:
		return !v.StartsWith(n.ver)
	case opCompatible:
		return v.Compare(n.ver) >= 0 && v.StartsWith(n.compat)
	}
	return false
}

func parseSpecExpr(s string) (*specNode, error) {
	// conda only builds an expression tree when the first line contains one of
	// ()|,^$ (regex_split_re, whose '.' stops at a line break).
	first := s
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		first = s[:i]
	}
	if !strings.ContainsAny(first, "()|,^$") {
		return parseLeaf(s)
	}
	tree, err := treeify(s)
	if err != nil {
		return nil, err
	}
	return buildTree(tree)
}

// titem is a node of conda's treeify output: a leaf string, or an operator
// ('|' or ',') applied to two or more items.
type titem struct {
	leaf string
	op   byte
	kids []titem
}

// tokenizeSpec splits "(" + s + ")" like conda's VSPEC_TOKENS regex: a
// "^...$" regex (up to the first '$') is one token even if it contains
// operators; otherwise tokens are the characters ()|, and the runs between
// them. Leaf tokens are stripped; an op token has op set.
type specToken struct {
	op   byte
	text string
}

func tokenizeSpec(s string) []specToken {
	text := "(" + s + ")"
	var toks []specToken
	for p := 0; p < len(text); {
		q := len(text) - len(pyLStripSpace(text[p:]))
		if q < len(text) && text[q] == '^' {
			if r := strings.IndexByte(text[q+1:], '$'); r >= 0 {
				end := q + 1 + r + 1
				toks = append(toks, specToken{text: pyStrip(text[p:end])})
				p = end
				continue
			}
		}
		if q < len(text) && strings.IndexByte("()|,", text[q]) >= 0 {
			toks = append(toks, specToken{op: text[q]})
			p = q + 1
			continue
		}
		e := p
		for e < len(text) && strings.IndexByte("()|,", text[e]) < 0 {
			e++
		}
		toks = append(toks, specToken{text: pyStrip(text[p:e])})
		p = e
	}
	return toks
}

// treeify is conda's shunting-yard conversion of a spec into a tree, with ','
// binding tighter than '|' and runs of the same operator fused.
func treeify(s string) (titem, error) {
	var output []titem
	var stack []byte
	applyOps := func(stop string) error {
		for len(stack) > 0 && strings.IndexByte(stop, stack[len(stack)-1]) < 0 {
			if len(output) < 2 {
				return specError(s, "cannot join single expression", nil)
			}
			c := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			r, left := output[len(output)-1], output[len(output)-2]
			output = output[:len(output)-2]
			var kids []titem
			if left.op == c {
				kids = append(kids, left.kids...)
			} else {
				kids = append(kids, left)
			}
			if r.op == c {
				kids = append(kids, r.kids...)
			} else {
				kids = append(kids, r)
			}
			output = append(output, titem{op: c, kids: kids})
		}
		return nil
	}
	for _, t := range tokenizeSpec(s) {
		var err error
		switch t.op {
		case '|':
			err = applyOps("(")
			stack = append(stack, '|')
		case ',':
			err = applyOps("|(")
			stack = append(stack, ',')
		case '(':
			stack = append(stack, '(')
		case ')':
			err = applyOps("(")
			if err == nil {
				if len(stack) == 0 || stack[len(stack)-1] != '(' {
					return titem{}, specError(s, "expression must start with '('", nil)
				}
				stack = stack[:len(stack)-1]
			}
		default:
			// conda keeps whitespace-only tokens as empty strings and then
			// either ignores them or crashes on them; dropping them gives the
			// same result wherever conda does not crash.
			if t.text != "" {
				output = append(output, titem{leaf: t.text})
			}
		}
		if err != nil {
			return titem{}, err
		}
	}
	switch {
	case len(stack) > 0:
		return titem{}, specError(s, "unbalanced parentheses", nil)
	case len(output) == 0:
		return titem{}, specError(s, "unable to determine version from spec", nil)
	case len(output) > 1:
		// conda silently keeps only the first expression here.
		return titem{}, specError(s, "expressions must be joined with ',' or '|'", nil)
	}
	return output[0], nil
}

func buildTree(t titem) (*specNode, error) {
	if t.op == 0 {
		return parseLeaf(t.leaf)
	}
	n := &specNode{form: formAnd}
	sep := ","
	if t.op == '|' {
		n.form, sep = formOr, "|"
	}
	var b strings.Builder
	for i, k := range t.kids {
		kn, err := buildTree(k)
		if err != nil {
			return nil, err
		}
		n.kids = append(n.kids, kn)
		if i > 0 {
			b.WriteString(sep)
		}
		if n.form == formAnd && kn.form == formOr {
			b.WriteString("(" + kn.text + ")")
		} else {
			b.WriteString(kn.text)
		}
	}
	n.text = b.String()
	return n, nil
}

// parseRelation is conda's version_relation_re:
// ^(=|==|!=|<=|>=|<|>|~=)(?![=<>!~])(\S+)$
func parseRelation(s string) (op, rest string, ok bool) {
	for _, cand := range [...]string{"=", "==", "!=", "<=", ">=", "<", ">", "~="} {
		if !strings.HasPrefix(s, cand) {
			continue
		}
		r := s[len(cand):]
		if r == "" || strings.IndexByte("=<>!~", r[0]) >= 0 {
			continue
		}
		if strings.IndexFunc(r, pyIsSpace) >= 0 {
			return "", "", false
		}
		return cand, r, true
	}
	return "", "", false
}

var opByText = map[string]cmpOp{
	"==": opEq, "!=": opNe, "<": opLt, "<=": opLe, ">": opGt, ">=": opGe, "=": opPrefix, "~=": opCompatible,
}

func parseLeaf(s string) (*specNode, error) {
	text := pyStrip(s)
	if text == "" {
		return nil, specError(s, "empty version spec", nil)
	}
	switch {
	case text[0] == '^' || text[len(text)-1] == '$':
		if text[0] != '^' || text[len(text)-1] != '$' {
			return nil, specError(text, "regex specs must start with '^' and end with '$'", nil)
		}
		if strings.IndexByte(text[:len(text)-1], '$') >= 0 {
			// conda's tokenizer ends a regex at its first '$' and drops what
			// follows; only a leading line break gets one this far.
			return nil, specError(text, "'$' may only end a regex spec", nil)
		}
		re, err := compilePythonRegex(text)
		if err != nil {
			return nil, specError(text, "bad regular expression", err)
		}
		return &specNode{form: formRegex, re: re, text: text}, nil

	case strings.IndexByte("=<>!~", text[0]) >= 0:
		opText, vo, ok := parseRelation(text)
		if !ok {
			return nil, specError(text, "invalid operator", nil)
		}
		op := opByText[opText]
		if strings.HasSuffix(vo, ".*") {
			vo = vo[:len(vo)-2]
			switch op {
			case opNe:
				op = opNotPrefix
			case opCompatible:
				return nil, specError(text, "invalid operator with '.*'", nil)
			case opEq:
				// conda ignores the superfluous ".*" here; dropping it from
				// the text too keeps "==1.2.*" from turning into the prefix
				// match "1.2.*" when a MatchSpec strips the "==". ("==1.*.*"
				// keeps its text: "==1.*" would mean something else.)
				if !strings.Contains(vo, "*") {
					text = "==" + vo
				}
			}
		}
		ver, err := ParseVersion(vo)
		if err != nil {
			return nil, specError(text, "bad version", err)
		}
		n := &specNode{form: formOperator, op: op, ver: ver, text: text}
		if op == opCompatible {
			norm := ver.Normalized()
			i := strings.LastIndexByte(norm, '.')
			if i < 0 {
				return nil, specError(text, "'~=' needs a version with at least two components", nil)
			}
			if n.compat, err = ParseVersion(norm[:i]); err != nil {
				return nil, specError(text, "bad version", err)
			}
		}
		return n, nil

	case text == "*":
		return &specNode{form: formAll, text: text}, nil

	case strings.Contains(strings.TrimRight(text, "*"), "*"):
		if strings.IndexFunc(text, pyIsSpace) >= 0 {
			return nil, specError(text, "whitespace inside a version glob", nil)
		}
		if strings.ContainsAny(text, "()|,") {
			// Only reachable behind a line break (conda looks for operators
			// on the first line only); such a glob could not be printed back.
			return nil, specError(text, "invalid character in a version glob", nil)
		}
		n := &specNode{form: formGlob, text: text}
		if strings.ContainsAny(text, `\^$?{}[]`) {
			// Characters with a regex meaning: compile exactly as conda does
			// (only '.', '+' and '*' are translated).
			rx := strings.NewReplacer(".", `\.`, "+", `\+`, "*", ".*").Replace(text)
			re, err := compilePythonRegex(`^(?:` + rx + `)\n?$`)
			if err != nil {
				return nil, specError(text, "bad glob", err)
			}
			n.re = re
		} else {
			n.glob = compileGlob(text)
		}
		return n, nil

	case text[len(text)-1] == '*':
		if strings.HasSuffix(text, "**") {
			// conda rewrites "1.2**" to "1.2*.*", which it then reads back
			// as a different (glob) spec.
			return nil, specError(text, "more than one trailing '*'", nil)
		}
		if strings.IndexFunc(text, pyIsSpace) >= 0 {
			return nil, specError(text, "whitespace inside a version", nil)
		}
		if !strings.HasSuffix(text, ".*") {
			text = text[:len(text)-1] + ".*"
		}
		vo := strings.TrimRight(strings.TrimRight(text, "*"), ".")
		ver, err := ParseVersion(vo)
		if err != nil {
			return nil, specError(text, "bad version", err)
		}
		return &specNode{form: formPrefix, op: opPrefix, ver: ver, text: text}, nil

	case strings.IndexByte(text, '@') >= 0:
		return nil, specError(text, "'@' is not allowed in a version", nil)
	}
	ver, err := ParseVersion(text)
	if err != nil {
		return nil, specError(text, "bad version", err)
	}
	return &specNode{form: formExact, op: opEq, ver: ver, text: text}, nil
}
