package proxy

import (
	"context"
	"fmt"
	"strings"

	"github.com/condaproxy/condaproxy/repodata"
)

// Explanation says what the channel does with one record.
type Explanation struct {
	Filename string `json:"filename"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Build    string `json:"build"`
	Served   bool   `json:"served"`
	Rule     string `json:"rule,omitempty"`   // the rule that hides it
	Detail   string `json:"detail,omitempty"` // the record's value the rule caught
	Cached   bool   `json:"cached"`
}

// ErrUnknownChannel is an explain request for a channel the config lacks.
var ErrUnknownChannel = fmt.Errorf("no such channel")

// Explain reports, for each record of channel/subdir whose filename or name is
// query, whether it is served and, if not, which rule hides it. It is the logic of
// `condaproxy explain` and of the admin API's explain call.
func (s *Server) Explain(ctx context.Context, channel, subdir, query string) ([]Explanation, error) {
	ch := s.channels[channel]
	if ch == nil || ch.cfg.Kind != "conda" {
		return nil, fmt.Errorf("%w %q", ErrUnknownChannel, channel)
	}
	if !ch.serves(subdir) {
		return []Explanation{{Filename: query, Rule: "platforms", Detail: "subdir " + subdir + " is not served"}}, nil
	}
	sd := ch.subdir(subdir)
	sv, err := s.load(ctx, sd)
	if err != nil {
		return nil, err
	}
	var docs []*upDoc
	// The documents are mapped: unmapped when the explanation is made (what it
	// returns is cloned), or every ask would keep a mapping, and a replaced
	// document's disk blocks, until restart.
	defer func() { closeDocList(docs) }()
	for i := 0; i <= len(ch.sources); i++ { // the upstreams, then what imports brought
		var st *upState
		if i < len(ch.sources) {
			st, err = s.upstreamState(ctx, ch, subdir, i, false)
		} else {
			st, err = s.importState(ch, subdir)
		}
		if err != nil || st == nil || !st.Found {
			docs = append(docs, nil)
			continue
		}
		d, err := s.readUpstream(ctx, ch, subdir, i, st)
		if err != nil {
			return nil, err
		}
		docs = append(docs, d)
	}
	var out []Explanation
	byFile := repodata.ValidFilename(query)
	err = scanMerged(docs, nil, several(docs), func(r *repodata.Record, _ int) {
		if (byFile && r.Filename != query) || (!byFile && r.Name != query) {
			return
		}
		e := Explanation{Filename: strings.Clone(r.Filename), Name: strings.Clone(r.Name),
			Version: strings.Clone(r.Version), Build: strings.Clone(r.Build)}
		if ref, ok := sv.packages.get(r.Filename); ok {
			e.Served = true
			e.Cached = ref.hasSHA && s.store.Has(ref.shaHex())
		} else if sv.decider != nil {
			rule, detail := sv.decider.Decide(r)
			e.Rule, e.Detail = rule, strings.Clone(detail)
			if rule == "" {
				e.Rule, _ = sv.hidden.get(r.Filename) // decided by an older revision
			}
		}
		if !e.Cached {
			if pe, ok := s.pkgEntry(ch, subdir, r.Filename); ok {
				e.Cached = s.store.Has(pe.SHA256)
			}
		}
		out = append(out, e)
	})
	return out, err
}
