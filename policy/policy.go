// Package policy decides what a channel serves: which subdirs, and which records
// of their repodata. The request path asks it once per upstream revision, never per
// request, and serves only what it returns; every format a client can fetch is made
// from that one answer, so a rule holds everywhere.
//
// A Policy never fetches anything and never mutates the documents it is given.
package policy

import "github.com/condaproxy/condaproxy/repodata"

// Policy is one channel's filter.
type Policy interface {
	// Fingerprint changes whenever the rules change, so answers cut by older rules
	// are rebuilt (from the stored upstream repodata, without refetching).
	Fingerprint() string
	// ServesSubdir reports whether subdir is served at all.
	ServesSubdir(subdir string) bool
	// Inputs lists the other subdirs whose repodata Cut needs beside subdir's own
	// (a dependency closure that crosses subdirs), or nil.
	Inputs(subdir string) []string
	// Cut returns subdir's served document and, for each hidden record, why.
	// docs holds subdir and every subdir Inputs named (nil where upstream has none).
	Cut(subdir string, docs map[string]*repodata.Doc) Cut
}

// Cut is what a policy decided for one subdir.
type Cut struct {
	Served *repodata.Doc
	// Hidden maps each hidden filename to the rule that hid it, e.g.
	// "blacklist: numpy 1.26.*". A hidden package asked for directly answers 403
	// with this text.
	Hidden map[string]string
}

// PassAll serves every subdir and every record.
type PassAll struct{}

func (PassAll) Fingerprint() string      { return "pass-all" }
func (PassAll) ServesSubdir(string) bool { return true }
func (PassAll) Inputs(string) []string   { return nil }
func (PassAll) Cut(subdir string, docs map[string]*repodata.Doc) Cut {
	return Cut{Served: docs[subdir]}
}
