package mirror

import (
	"time"

	"github.com/condaproxy/condaproxy/cache"
)

// LastSync is what the data directory remembers of a channel's last sync.
type LastSync struct {
	Finished time.Time `json:"finished"`
	Records  int       `json:"records"`
	Fetched  int       `json:"fetched"`
	Failed   int       `json:"failed"`
}

// SyncLedger keeps each channel's LastSync in the metadata store, for the
// admin page; the CLI's sync and the admin API's sync jobs write it alike.
type SyncLedger struct{ Meta *cache.Meta }

func syncKey(channel string) string { return "sync/" + channel }

// Last is channel's last completed sync, if any.
func (l SyncLedger) Last(channel string) (LastSync, bool) {
	var last LastSync
	ok, err := l.Meta.Get(syncKey(channel), &last)
	return last, ok && err == nil
}

// Record remembers rep, a sync that ran to its end, as the last sync of each
// channel it covered: Failed counts that channel's failures, Records and
// Fetched are the whole run's. at is when it finished.
func (l SyncLedger) Record(rep *SyncReport, at time.Time) error {
	var first error
	for _, ch := range rep.Channels {
		failed := 0
		for _, f := range rep.Failures {
			if f.Channel == ch {
				failed++
			}
		}
		err := l.Meta.Put(syncKey(ch), LastSync{Finished: at.UTC(), Records: rep.Records, Fetched: rep.Fetched, Failed: failed})
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}
