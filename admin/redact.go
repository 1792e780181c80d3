package admin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/condaproxy/condaproxy/config"
)

// redacting is the Backend the API and the page read through. It masks, in
// every text it passes on that can quote a URL (upstream addresses, errors, a
// job's failures, an explanation's detail), what config.RedactURL masks (a
// /t/<token>/ segment, a URL's password) and the admin token itself. The proxy's
// Backend redacts upstream URLs already; this keeps the line for texts built
// elsewhere (an upstream error wrapped three times), whatever built them.
//
// Masking alone would make an oracle of every text that quotes what a request
// asked for: `channel=Guess` answered "no conda channel "***"" exactly when the
// guess is a secret. So the values a call was asked for are masked as well,
// secret or not, unless they name what anyone who may read can list anyway (a
// configured channel, a subdir of its platforms): see withheld.
type redacting struct {
	b   Backend
	red *config.Redactor
	// secrets are those red masks (3 characters and more), for withheld.
	secrets []string
}

func newRedacting(b Backend, secrets []string) redacting {
	var kept []string
	for _, s := range secrets {
		if len(s) >= minMasked {
			kept = append(kept, s)
		}
	}
	return redacting{b: b, red: config.NewRedactor(kept), secrets: kept}
}

// minMasked is the shortest secret config.NewRedactor masks: a shorter value is
// never masked, so quoting it answers no guess.
const minMasked = 3

// redactText masks the secrets s may quote: the configured ones red knows
// (client and admin tokens, upstream passwords), /t/<token>/ segments and the
// credentials of any URL in it (config.Redactor, the process's one rule; a nil
// red knows no configured secret).
func redactText(s string, red *config.Redactor) string { return red.String(s) }

func (x redacting) text(s string) string { return redactText(s, x.red) }

// withheld is text for a text that may quote asked, the values a request
// passed: every occurrence of a configured secret and of an asked value that is
// not public is masked, the overlapping and touching ones as one stretch, so the
// answer is the same whether a value is a secret or not (and whether a secret
// is part of it). Then what text masks.
func (x redacting) withheld(ctx context.Context, s string, asked ...string) string {
	var quoted []string
	for _, v := range asked {
		if len(v) >= minMasked && strings.Contains(s, v) {
			quoted = append(quoted, v)
		}
	}
	if len(quoted) > 0 {
		public := x.publicNames(ctx)
		quoted = slices.DeleteFunc(quoted, func(v string) bool { return public[v] })
	}
	if len(quoted) == 0 {
		return x.text(s)
	}
	masked := make([]bool, len(s))
	for _, v := range append(quoted, x.secrets...) {
		for i := 0; ; {
			j := strings.Index(s[i:], v)
			if j < 0 {
				break
			}
			for k := i + j; k < i+j+len(v); k++ {
				masked[k] = true
			}
			i += j + 1
		}
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case !masked[i]:
			b.WriteByte(s[i])
		case i == 0 || !masked[i-1]:
			b.WriteString(config.Mask)
		}
	}
	return x.text(b.String())
}

// publicNames are the values a request may have quoted that any reader can list
// (GET /api/v1/channels): the channels' names and platforms, and noarch.
func (x redacting) publicNames(ctx context.Context) map[string]bool {
	public := map[string]bool{"noarch": true}
	for _, ch := range x.b.Channels(ctx) {
		public[ch.Name] = true
		for _, p := range ch.Platforms {
			public[p] = true
		}
	}
	return public
}

// errAsked keeps err's identity (errors.Is sees ErrNotFound...) under a
// withheld text.
func (x redacting) errAsked(ctx context.Context, err error, asked ...string) error {
	if err == nil {
		return nil
	}
	return redactedError{err, x.withheld(ctx, err.Error(), asked...)}
}

func (x redacting) texts(l []string) []string {
	if l == nil {
		return nil
	}
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = x.text(s)
	}
	return out
}

type redactedError struct {
	err error
	msg string
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

func (x redacting) job(j Job) Job {
	j.Error = x.text(j.Error)
	j.Failed = x.texts(j.Failed)
	if j.Cleaned != nil {
		cleaned := make([]CleanedFile, len(j.Cleaned))
		for i, f := range j.Cleaned {
			f.Rule = x.text(f.Rule)
			cleaned[i] = f
		}
		j.Cleaned = cleaned
	}
	return j
}

func (x redacting) Channels(ctx context.Context) []ChannelInfo {
	l := x.b.Channels(ctx)
	if l == nil {
		return nil
	}
	out := make([]ChannelInfo, len(l))
	for i, ch := range l {
		ch.Upstreams = x.texts(ch.Upstreams)
		out[i] = ch
	}
	return out
}

func (x redacting) Packages(ctx context.Context, channel, subdir, q string, servedOnly bool, offset, limit int) (PackagePage, error) {
	p, err := x.b.Packages(ctx, channel, subdir, q, servedOnly, offset, limit)
	return p, x.errAsked(ctx, err, channel, subdir, q)
}

func (x redacting) Subdirs(ctx context.Context, channel string) ([]string, error) {
	l, err := x.b.Subdirs(ctx, channel)
	return l, x.errAsked(ctx, err, channel)
}

func (x redacting) Explain(ctx context.Context, channel, subdir, pkg string) ([]Explanation, error) {
	l, err := x.b.Explain(ctx, channel, subdir, pkg)
	if l != nil {
		out := make([]Explanation, len(l))
		for i, e := range l {
			e.Detail = x.withheld(ctx, e.Detail, channel, subdir, pkg)
			out[i] = e
		}
		l = out
	}
	return l, x.errAsked(ctx, err, channel, subdir, pkg)
}

func (x redacting) Stats(ctx context.Context) Stats {
	st := x.b.Stats(ctx)
	if st.BytesBySource != nil {
		by := make(map[string]int64, len(st.BytesBySource))
		for k, v := range st.BytesBySource {
			by[x.text(k)] += v
		}
		st.BytesBySource = by
	}
	return st
}

func (x redacting) StartSync(channels []string) (Job, error) {
	j, err := x.b.StartSync(channels)
	return x.job(j), x.errAsked(context.Background(), err, channels...)
}

func (x redacting) Job(id string) (Job, bool) {
	j, ok := x.b.Job(id)
	return x.job(j), ok
}

func (x redacting) Jobs() []Job {
	l := x.b.Jobs()
	if l == nil {
		return nil
	}
	out := make([]Job, len(l))
	for i, j := range l {
		out[i] = x.job(j)
	}
	return out
}

func (x redacting) Purge(ctx context.Context, channel, subdir, filename string) error {
	return x.errAsked(ctx, x.b.Purge(ctx, channel, subdir, filename), channel, subdir, filename)
}

// errNoMaintainer answers the maintenance calls of a Backend that offers none.
var errNoMaintainer = fmt.Errorf("%w: this server offers no clean, export or import", ErrNotFound)

func (x redacting) maintainer() (Maintainer, error) {
	if m, ok := x.b.(Maintainer); ok {
		return m, nil
	}
	return nil, errNoMaintainer
}

func (x redacting) StartClean(channels []string, dryRun bool) (Job, error) {
	m, err := x.maintainer()
	if err != nil {
		return Job{}, err
	}
	j, err := m.StartClean(channels, dryRun)
	return x.job(j), x.errAsked(context.Background(), err, channels...)
}

func (x redacting) Export(ctx context.Context, id string, channels []string, delta bool, w io.Writer) (ExportResult, error) {
	m, err := x.maintainer()
	if err != nil {
		return ExportResult{}, err
	}
	r, err := m.Export(ctx, id, channels, delta, w)
	return r, x.errAsked(ctx, err, channels...)
}

func (x redacting) CommitExport(id string) error {
	m, err := x.maintainer()
	if err != nil {
		return err
	}
	return x.errAsked(context.Background(), m.CommitExport(id), id)
}

func (x redacting) Import(ctx context.Context, r io.Reader, size int64) (Job, error) {
	m, err := x.maintainer()
	if err != nil {
		return Job{}, err
	}
	j, err := m.Import(ctx, r, size)
	return x.job(j), x.errAsked(ctx, err)
}
