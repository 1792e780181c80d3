package admin

import (
	"context"
	"regexp"

	"github.com/condaproxy/condaproxy/config"
)

// redacting is the Backend the API and the page read through. It masks, in
// every text it passes on that can quote a URL (upstream addresses, errors, a
// job's failures, an explanation's detail), what config.RedactURL masks (a
// /t/<token>/ segment, a URL's password) and the admin token itself. The proxy's
// Backend redacts upstream URLs already; this keeps the line for texts built
// elsewhere (an upstream error wrapped three times), whatever built them.
type redacting struct {
	b   Backend
	red *config.Redactor
}

var (
	// urlInText is a URL inside free text: up to a space or a quote.
	urlInText = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`)
	// urlPassword is the password of scheme://user:password@, for a URL that
	// url.Parse refuses (and config.RedactURL therefore leaves as it is).
	urlPassword = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:\s]*:)[^/?#@\s]*@`)
)

// redactText masks the secrets s may quote: the configured ones red knows (client
// and admin tokens, upstream passwords), URL passwords and /t/<token>/ segments.
func redactText(s string, red *config.Redactor) string {
	s = red.String(s) // configured secrets, /t/<token> segments
	return urlInText.ReplaceAllStringFunc(s, func(u string) string {
		return config.RedactURL(urlPassword.ReplaceAllString(u, "${1}"+config.Mask+"@"))
	})
}

func (x redacting) text(s string) string { return redactText(s, x.red) }

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

// err keeps err's identity (errors.Is sees ErrNotFound...) under a masked text.
func (x redacting) err(err error) error {
	if err == nil {
		return nil
	}
	return redactedError{err, x.text(err.Error())}
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

func (x redacting) Packages(ctx context.Context, channel, subdir, q string, offset, limit int) (PackagePage, error) {
	p, err := x.b.Packages(ctx, channel, subdir, q, offset, limit)
	return p, x.err(err)
}

func (x redacting) Explain(ctx context.Context, channel, subdir, pkg string) ([]Explanation, error) {
	l, err := x.b.Explain(ctx, channel, subdir, pkg)
	if l != nil {
		out := make([]Explanation, len(l))
		for i, e := range l {
			e.Detail = x.text(e.Detail)
			out[i] = e
		}
		l = out
	}
	return l, x.err(err)
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
	return x.job(j), x.err(err)
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
	return x.err(x.b.Purge(ctx, channel, subdir, filename))
}
