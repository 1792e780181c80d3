package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure the Redis implementations. Zero values take the
// defaults given.
type RedisOptions struct {
	// Prefix starts every key and channel, so that one Redis can serve other
	// programs or several condaproxy deployments; "condaproxy:" if empty.
	Prefix string
	// Lease is how long a fill lock outlives its holder: another replica takes
	// over a dead holder's fill after at most this long. The holder renews it
	// every Lease/3. 10s if zero.
	Lease time.Duration
	// MaxPoll is the longest a waiter sleeps between two attempts at a held
	// lock (it starts at a few milliseconds and doubles). 200ms if zero.
	MaxPoll time.Duration
	// Timeout bounds one Redis command, its retries included: past it, Redis
	// counts as unavailable, so that a replica falls back after about this long
	// however the client's retries are set. 1s if zero.
	Timeout time.Duration
	// Confirm is how long Subscribe waits for Redis to confirm a subscription
	// before it returns ErrUnavailable (and goes on trying). 2s if zero.
	Confirm time.Duration
}

func (o RedisOptions) withDefaults() RedisOptions {
	if o.Prefix == "" {
		o.Prefix = "condaproxy:"
	}
	if o.Lease <= 0 {
		o.Lease = 10 * time.Second
	}
	if o.MaxPoll <= 0 {
		o.MaxPoll = 200 * time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.Confirm <= 0 {
		o.Confirm = 2 * time.Second
	}
	return o
}

// command bounds one Redis command by Timeout within ctx.
func (o RedisOptions) command(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.Timeout)
}

// unavailable turns a Redis error into what the interfaces promise: ctx's own
// error when ctx ended (the caller gave up; Redis may be fine), else
// ErrUnavailable with the cause.
func unavailable(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

var (
	// renewScript extends the lease only while it is still ours: a holder whose
	// lease expired and was taken must not extend the new holder's.
	renewScript = redis.NewScript(`
if redis.call("get", KEYS[1]) == ARGV[1] then
	return redis.call("pexpire", KEYS[1], ARGV[2])
end
return 0`)
	// releaseScript deletes the lease only while it is still ours, for the
	// same reason.
	releaseScript = redis.NewScript(`
if redis.call("get", KEYS[1]) == ARGV[1] then
	return redis.call("del", KEYS[1])
end
return 0`)
)

// RedisLocker holds a key across every replica on one Redis: SET key token NX
// PX lease, renewed while held, deleted on release only by the token's owner.
// A waiter polls with backoff; when a holder dies, its lease expires and a
// waiter's SET succeeds. Redis restarted empty forgets every lease: the
// holders find out at their next renewal (Lost), and fills may run twice.
type RedisLocker struct {
	client redis.UniversalClient
	o      RedisOptions
}

func NewRedisLocker(client redis.UniversalClient, o RedisOptions) *RedisLocker {
	return &RedisLocker{client: client, o: o.withDefaults()}
}

// Lock returns ErrUnavailable as soon as Redis fails to answer, also while
// waiting: whether to go on without it is the caller's choice (FallbackLocker).
func (l *RedisLocker) Lock(ctx context.Context, key string) (Lease, error) {
	k := l.o.Prefix + "lock:" + key
	token := newToken()
	wait := 5 * time.Millisecond
	for {
		sent := time.Now()
		cmd, cancel := l.o.command(ctx)
		ok, err := l.client.SetNX(cmd, k, token, l.o.Lease).Result()
		cancel()
		if err != nil {
			// The SET may have been applied with its answer lost: then the key
			// holds a token nobody renews, and it expires within the lease.
			return nil, unavailable(ctx, err)
		}
		if ok {
			return l.hold(k, token, sent), nil
		}
		// Jitter keeps the waiters of one key from polling in step.
		t := time.NewTimer(wait/2 + mrand.N(wait/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		wait = min(2*wait, l.o.MaxPoll)
	}
}

func newToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type redisLease struct {
	l         *RedisLocker
	key       string
	token     string
	stop      chan struct{} // closed by Release: renewal ends
	renewing  chan struct{} // closed when renewal has ended
	lost      chan struct{}
	loseOnce  sync.Once
	release   sync.Once
	renewFail error // why the lease was lost, for tests and logs; set before lost closes
}

// hold starts renewing a lease taken at sent (when the SET left: Redis started
// the lease no earlier, so a deadline counted from sent is never late).
func (l *RedisLocker) hold(key, token string, sent time.Time) *redisLease {
	lease := &redisLease{
		l: l, key: key, token: token,
		stop: make(chan struct{}), renewing: make(chan struct{}), lost: make(chan struct{}),
	}
	go lease.renew(sent.Add(l.o.Lease))
	return lease
}

// renew extends the lease every Lease/3 until Release. It gives up, closing
// Lost, when Redis says the lease is someone else's, or when renewals failed
// for so long that the next attempt could come after Redis let the lease go:
// the holder hears it is alone no more before another replica can take over.
func (l *redisLease) renew(deadline time.Time) {
	defer close(l.renewing)
	every := l.l.o.Lease / 3
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(every, l.l.o.Timeout))
		sent := time.Now()
		n, err := renewScript.Run(ctx, l.l.client, []string{l.key}, l.token, l.l.o.Lease.Milliseconds()).Int()
		cancel()
		switch {
		case err == nil && n == 1:
			deadline = sent.Add(l.l.o.Lease)
		case err == nil:
			l.lose(errors.New("coord: lease taken over or expired"))
			return
		case !time.Now().Add(every).Before(deadline):
			l.lose(fmt.Errorf("coord: lease not renewed in time: %w", err))
			return
		}
	}
}

func (l *redisLease) lose(why error) {
	l.loseOnce.Do(func() {
		l.renewFail = why
		close(l.lost)
	})
}

func (l *redisLease) Lost() <-chan struct{} { return l.lost }

// Release stops the renewal first, so that no renewal can follow the delete,
// then deletes the key if it is still ours. If Redis does not answer, the key
// expires by itself within the lease.
func (l *redisLease) Release() {
	l.release.Do(func() {
		close(l.stop)
		<-l.renewing
		ctx, cancel := l.l.o.command(context.Background())
		defer cancel()
		releaseScript.Run(ctx, l.l.client, []string{l.key}, l.token)
	})
}

// RedisClaims are SET key NX PX ttl: Redis hands the key to the first caller
// and forgets it after ttl.
type RedisClaims struct {
	client redis.UniversalClient
	o      RedisOptions
}

func NewRedisClaims(client redis.UniversalClient, o RedisOptions) *RedisClaims {
	return &RedisClaims{client: client, o: o.withDefaults()}
}

func (c *RedisClaims) Claim(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		return false, errTTL
	}
	cmd, cancel := c.o.command(ctx)
	defer cancel()
	ok, err := c.client.SetNX(cmd, c.o.Prefix+"claim:"+key, "1", ttl).Result()
	if err != nil {
		return false, unavailable(ctx, err)
	}
	return ok, nil
}

// RedisStamps are plain keys with no expiry: there is one per subdir, and a
// stamp must outlive every metadata_ttl. Redis restarted empty forgets them;
// the replicas then revalidate on their own and stamp again.
type RedisStamps struct {
	client redis.UniversalClient
	o      RedisOptions
}

func NewRedisStamps(client redis.UniversalClient, o RedisOptions) *RedisStamps {
	return &RedisStamps{client: client, o: o.withDefaults()}
}

func (s *RedisStamps) Stamp(ctx context.Context, key, value string) error {
	cmd, cancel := s.o.command(ctx)
	defer cancel()
	if err := s.client.Set(cmd, s.o.Prefix+"stamp:"+key, value, 0).Err(); err != nil {
		return unavailable(ctx, err)
	}
	return nil
}

func (s *RedisStamps) Get(ctx context.Context, key string) (string, bool, error) {
	cmd, cancel := s.o.command(ctx)
	defer cancel()
	v, err := s.client.Get(cmd, s.o.Prefix+"stamp:"+key).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", false, nil
	case err != nil:
		return "", false, unavailable(ctx, err)
	}
	return v, true, nil
}

// RedisBus is Redis pub/sub. Every subscriber gets what is published on its
// topic, those of the publishing client included.
type RedisBus struct {
	client redis.UniversalClient
	o      RedisOptions
}

func NewRedisBus(client redis.UniversalClient, o RedisOptions) *RedisBus {
	return &RedisBus{client: client, o: o.withDefaults()}
}

func (b *RedisBus) channel(topic string) string { return b.o.Prefix + "bus:" + topic }

func (b *RedisBus) Publish(ctx context.Context, topic string, payload []byte) error {
	cmd, cancel := b.o.command(ctx)
	defer cancel()
	if err := b.client.Publish(cmd, b.channel(topic), payload).Err(); err != nil {
		return unavailable(ctx, err)
	}
	return nil
}

// Subscribe holds one pub/sub connection per subscription until ctx is done.
// go-redis reconnects and resubscribes it after any error, a Redis restart
// included, and pings it when it is quiet so that a silently dead connection is
// found too. Subscribe returns once Redis has confirmed the subscription; if it
// cannot be reached, or does not confirm within Confirm, Subscribe returns
// ErrUnavailable and the subscription goes on trying in the background, so
// that a replica started during an outage joins the fan-out when Redis is back.
func (b *RedisBus) Subscribe(ctx context.Context, topic string, fn func([]byte)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ps := b.client.Subscribe(ctx) // no channel yet: the error of the first is ours to see
	cmd, cancel := b.o.command(ctx)
	subErr := ps.Subscribe(cmd, b.channel(topic))
	cancel()
	msgs := ps.ChannelWithSubscriptions()
	confirmed := make(chan struct{})
	go func() {
		var once sync.Once
		for m := range msgs { // closed by ps.Close
			switch m := m.(type) {
			case *redis.Subscription:
				// The first confirms; the next ones follow reconnections.
				once.Do(func() { close(confirmed) })
			case *redis.Message:
				if ctx.Err() == nil {
					fn([]byte(m.Payload))
				}
			}
		}
	}()
	context.AfterFunc(ctx, func() { ps.Close() })
	if subErr != nil {
		return unavailable(ctx, subErr)
	}
	t := time.NewTimer(b.o.Confirm)
	defer t.Stop()
	select {
	case <-confirmed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return unavailable(ctx, errors.New("subscription not confirmed"))
	}
}
