package matchspec

import "fmt"

// Kinds of input named in a ParseError.
const (
	KindVersion     = "version"
	KindVersionSpec = "version spec"
	KindBuildNumber = "build number spec"
	KindMatchSpec   = "match spec"
)

// ParseError reports text that is not valid conda syntax. The message always
// quotes the offending input so that a policy author can find it in a
// configuration file.
type ParseError struct {
	Kind   string // one of the Kind constants
	Input  string // the text that failed to parse
	Reason string // what is wrong, in words
	Err    error  // the error of a nested part (e.g. a version inside a spec), or nil
}

func (e *ParseError) Error() string {
	msg := fmt.Sprintf("invalid %s %q: %s", e.Kind, e.Input, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *ParseError) Unwrap() error { return e.Err }

func versionError(input, reason string) error {
	return &ParseError{Kind: KindVersion, Input: input, Reason: reason}
}

func specError(input, reason string, cause error) error {
	return &ParseError{Kind: KindVersionSpec, Input: input, Reason: reason, Err: cause}
}

func matchSpecError(input, reason string, cause error) error {
	return &ParseError{Kind: KindMatchSpec, Input: input, Reason: reason, Err: cause}
}
