package coord

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// A Set is the coordination one replica uses.
type Set struct {
	Locker Locker
	Claims Claimer
	Stamps Stamps
	Bus    Bus
	// Health follows the shared engine; nil when there is none (Local).
	Health *Health
}

// Local returns the coordination of a replica that runs alone.
func Local() *Set {
	return &Set{
		Locker: NewLocalLocker(),
		Claims: NewLocalClaims(),
		Stamps: NewLocalStamps(),
		Bus:    NewLocalBus(),
	}
}

// NewRedis returns the coordination of a replica among others on client: every
// role is its Redis implementation behind its Fallback decorator, and a Health
// that pings client. Close stops the pings; the caller owns client and closes
// it after.
func NewRedis(client redis.UniversalClient, o RedisOptions, h HealthOptions) *Set {
	health := NewHealth(func(ctx context.Context) error { return client.Ping(ctx).Err() }, h)
	return &Set{
		Locker: FallbackLocker(NewLocalLocker(), NewRedisLocker(client, o), health),
		Claims: FallbackClaims(NewLocalClaims(), NewRedisClaims(client, o), health),
		Stamps: FallbackStamps(NewLocalStamps(), NewRedisStamps(client, o), health),
		Bus:    FallbackBus(NewLocalBus(), NewRedisBus(client, o), health),
		Health: health,
	}
}

// Close stops what the Set runs in the background. Subscriptions end with the
// contexts they were made with.
func (s *Set) Close() {
	if s.Health != nil {
		s.Health.Close()
	}
}
