package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/condaproxy/condaproxy/coord"
)

// Several replicas share work through s.coord (package coord: Redis, or this
// process alone): one upstream fetch per missing file (fillLock), and purges
// that apply on every replica (Purge).

// purgeTopic carries purges between replicas.
const purgeTopic = "purge"

type purgeMsg struct {
	Channel  string `json:"channel"`
	Subdir   string `json:"subdir,omitempty"`
	Filename string `json:"filename,omitempty"`
}

// Purge drops channel's cached repodata (filename "") or one cached file, here
// and, through the coordination bus, on every other replica. With Redis down it
// applies here and says so in the log; the others keep theirs until their
// metadata_ttl (repodata) or until purged again (files).
func (s *Server) Purge(ctx context.Context, channel, subdir, filename string) error {
	if err := s.applyPurge(purgeMsg{channel, subdir, filename}); err != nil {
		return err
	}
	payload, _ := json.Marshal(purgeMsg{channel, subdir, filename})
	if err := s.coord.Bus.Publish(ctx, purgeTopic, payload); err != nil {
		s.log.Warn("purge applied on this replica only: the others were not told", "channel", channel, "subdir", subdir, "file", filename, "err", err)
	}
	return nil
}

func (s *Server) applyPurge(m purgeMsg) error {
	if m.Filename == "" {
		return s.PurgeRepodata(m.Channel, m.Subdir)
	}
	return s.Uncache(m.Channel, m.Subdir, m.Filename)
}

// listenPurges applies the purges other replicas publish, until s stops. Its
// own are applied again (the bus may echo them): purging is idempotent.
func (s *Server) listenPurges() {
	err := s.coord.Bus.Subscribe(s.base, purgeTopic, func(payload []byte) {
		var m purgeMsg
		if json.Unmarshal(payload, &m) != nil || m.Channel == "" {
			s.log.Warn("ignored a malformed purge message from the coordination bus")
			return
		}
		if _, err := s.condaChannel(m.Channel); err != nil {
			return // a channel this replica's configuration lacks
		}
		s.guard("purge", func() error {
			if err := s.applyPurge(m); err != nil && !IsNotFound(err) {
				s.log.Warn("purge from another replica failed here", "channel", m.Channel, "subdir", m.Subdir, "file", m.Filename, "err", err)
			}
			return nil
		})
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("cannot listen for purges from other replicas", "err", err)
	}
}

// fillLock takes the lock of one missing file across replicas (in-process
// without Redis): only its holder asks upstream; the others, once they hold it,
// find the blob in the shared store. key is the file's sha256 when the record
// has one, so the same file under two channels is one fetch too.
func (s *Server) fillLock(ctx context.Context, key string) (coord.Lease, error) {
	lease, err := s.coord.Locker.Lock(ctx, "fill:"+key)
	if err != nil {
		return nil, fmt.Errorf("take the fill lock: %w", err)
	}
	return lease, nil
}
