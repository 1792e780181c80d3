// Package policy decides what a channel serves: which subdirs, and which records
// of their repodata, by the mirror rules of SPEC "The filter, exactly".
//
// The request path asks it once per upstream revision, never per request, and
// serves only what it allows; every format a client can fetch is made from that
// one decision, so a rule holds everywhere. A Policy never fetches anything and
// never changes the records it is shown.
package policy

import "github.com/condaproxy/condaproxy/repodata"

// Policy is one channel's filter. Its methods are safe for concurrent use, and
// Prepare may run for several subdirs at once.
type Policy interface {
	// Fingerprint changes whenever the rules change, so answers cut by older rules
	// are rebuilt (from the stored upstream repodata, without refetching).
	Fingerprint() string
	// ServesSubdir reports whether subdir is served at all (step 1, platforms).
	ServesSubdir(subdir string) bool
	// Inputs lists the subdirs whose records Prepare must see to decide for
	// subdir, subdir first, the others sorted; nil means subdir alone. available
	// gives the subdirs the channel has (what its upstreams list, what imports
	// brought); it is called only when the answer depends on it (a closure with no
	// platforms), and may be nil where nothing is known.
	Inputs(subdir string, available func() []string) []string
	// Prepare returns the decisions for subdir. all visits every record of every
	// subdir Inputs named (each subdir's records once, first upstream wins); it
	// need not be called when the rules look at one record at a time.
	Prepare(subdir string, all func(visit func(subdir string, r *repodata.Record)) error) (Decider, error)
}

// Decider decides for one record at a time. It must not keep r or its strings.
//
// A Decider is safe for concurrent use: the proxy shares one among the requests
// for a subdir (package downloads check their record against it) while a build
// may be cutting the same subdir's repodata. An implementation that learns as it
// goes (a memo) must synchronize it.
type Decider interface {
	// Decide returns "" for a served record, else the rule that hides it (a short
	// shared string such as "blacklist: numpy 1.26.*", what a 403 body names) and
	// a detail saying which value of the record the rule caught.
	Decide(r *repodata.Record) (rule, detail string)
}

// PassAll serves every subdir and every record.
type PassAll struct{}

func (PassAll) Fingerprint() string                     { return "pass-all" }
func (PassAll) ServesSubdir(string) bool                { return true }
func (PassAll) Inputs(string, func() []string) []string { return nil }
func (PassAll) HidesNothing() bool                      { return true }
func (PassAll) Prepare(string, func(func(string, *repodata.Record)) error) (Decider, error) {
	return passAll{}, nil
}

type passAll struct{}

func (passAll) Decide(*repodata.Record) (string, string) { return "", "" }
