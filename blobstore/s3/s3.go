// Package s3 is the blobstore.Store that several replicas share: objects in an
// S3-compatible object store, at PREFIX/blobs/xx/<sha256> in one bucket.
//
// A Writer spools to a local temp file while hashing; Commit verifies it and
// only then uploads it, in one PutObject with If-None-Match: *, so an object
// appears whole or not at all and two replicas committing one blob never
// clobber each other (the second gets 412 Precondition Failed, which is
// success here: same name, same bytes). The upload reads the verified temp
// file, never a pipe: the body is seekable, so the client can retry it (and
// over plain http the SDK refuses an unseekable one outright), and
// the object store is told the sha256 we verified (the x-amz-checksum-sha256
// header and the signed payload hash), so it refuses bytes damaged on the way.
//
// The client is aws-sdk-go-v2 (service/s3), chosen over minio-go and
// gocloud.dev/blob because storage.s3 with empty keys promises the standard
// AWS credential chain (environment, shared files, web identity as on EKS,
// instance and container roles), which is that SDK's own config loader; it is
// maintained by AWS alongside the S3 API, has the conditional create as a
// typed field (PutObjectInput.IfNoneMatch), and is the client versitygw's own
// integration tests use, so the server in our tests is proven with it.
// minio-go has a credential chain of its own making, not AWS's.
// gocloud.dev/blob would bring GCS and Azure, which SPEC does not ask for, at
// the cost of a generic API over the requests this package shapes itself
// (conditional create, checksum headers, payload hash, ranged GETs).
//
// Errors name the operation, bucket and key, with the HTTP status and S3
// error code, or the network error; never the credentials, nor text the
// server sent. A store that does not answer, or answers 5xx, is
// blobstore.ErrUnavailable.
package s3

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	s3api "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/condaproxy/condaproxy/blobstore"
	"github.com/condaproxy/condaproxy/blobstore/internal/spool"
)

// Options are SPEC's storage.s3 keys plus the bucket and prefix of
// storage.blobs (s3://BUCKET/PREFIX). Zero values take the defaults given.
type Options struct {
	// Endpoint is the server's base URL, e.g. http://minio:9000; "" is AWS's
	// own endpoint for Region.
	Endpoint string
	// Region defaults to us-east-1.
	Region string
	// Bucket is required.
	Bucket string
	// Prefix is put before blobs/ in every key; "" puts blobs/ at the top of
	// the bucket. Slashes around it are ignored.
	Prefix string
	// AccessKey and SecretKey go together; both empty means the standard AWS
	// credential chain.
	AccessKey, SecretKey string
	// PathStyle addresses the bucket in the path (http://host/bucket/key),
	// as most self-hosted servers need, not in the host name.
	PathStyle bool
	// TempDir holds the temp files of writes not yet committed; "" is
	// os.TempDir(). A directory of its own (given here) is emptied of this
	// package's temp files at New: a process killed mid-write leaves them.
	TempDir string
	// MaxAttempts bounds the tries of each request, retries included; 0 is
	// the SDK's default (3). With the store down each try costs a backoff, so
	// a caller answering clients may want fewer.
	MaxAttempts int
	// ResponseTimeout bounds the wait for an answer's headers once a request
	// is sent; default 15s. A store that hangs without refusing costs a client
	// this per try, not the fill's timeout. An upload gets 2 minutes more once
	// its body is sent: a store may answer only after persisting it.
	ResponseTimeout time.Duration
}

// Store keeps objects in one bucket under one prefix.
type Store struct {
	client *s3api.Client
	bucket string
	blobs  string // the key prefix of every object, ending in "blobs/"
	tmp    string
	// upload is the HTTP client of PutObject: a longer response timeout.
	upload aws.HTTPClient
}

var _ blobstore.Store = (*Store)(nil)

// New returns a store for o. It does not contact the server, so a replica
// can start while the object store is down; Check does.
func New(ctx context.Context, o Options) (*Store, error) {
	return newStore(ctx, o, nil)
}

// newStore lets tests put a recording HTTP client under the SDK.
func newStore(ctx context.Context, o Options, hc s3api.HTTPClient) (*Store, error) {
	if o.Bucket == "" {
		return nil, errors.New("blobstore/s3: no bucket")
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		// Credentials go in access_key and secret_key; a URL with user info
		// would put them in every error message that quotes it.
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return nil, errors.New("blobstore/s3: endpoint must be an http:// or https:// URL with a host and no user info")
		}
	}
	if (o.AccessKey == "") != (o.SecretKey == "") {
		return nil, errors.New("blobstore/s3: access key and secret key go together; give both, or neither for the AWS credential chain")
	}
	region := o.Region
	if region == "" {
		region = "us-east-1"
	}
	var cfg aws.Config
	if o.AccessKey == "" {
		var err error
		if cfg, err = config.LoadDefaultConfig(ctx, config.WithRegion(region)); err != nil {
			return nil, fmt.Errorf("blobstore/s3: AWS configuration: %w", err)
		}
	} else {
		// Not LoadDefaultConfig: with explicit keys, a profile or AWS_*
		// variable in the environment must not change what this store does.
		cfg = aws.Config{Region: region, Credentials: credentials.NewStaticCredentialsProvider(o.AccessKey, o.SecretKey, "")}
	}
	custom := hc != nil // a test's recording client, used for every request
	client := s3api.NewFromConfig(cfg, func(so *s3api.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
		if o.MaxAttempts > 0 {
			so.RetryMaxAttempts = o.MaxAttempts
		}
		if hc == nil {
			hc = withResponseTimeout(so.HTTPClient, cmp.Or(o.ResponseTimeout, 15*time.Second))
		}
		so.HTTPClient = hc
	})
	upload := aws.HTTPClient(hc)
	if !custom {
		upload = withResponseTimeout(cfg.HTTPClient, cmp.Or(o.ResponseTimeout, 15*time.Second)+2*time.Minute)
	}
	tmp := o.TempDir
	if tmp == "" {
		tmp = os.TempDir()
	} else {
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return nil, fmt.Errorf("blobstore/s3: temp dir: %w", err)
		}
		leftovers, _ := filepath.Glob(filepath.Join(tmp, spool.Pattern))
		for _, f := range leftovers {
			os.Remove(f)
		}
	}
	blobs := "blobs/"
	if p := strings.Trim(o.Prefix, "/"); p != "" {
		blobs = p + "/blobs/"
	}
	return &Store{client: client, bucket: o.Bucket, blobs: blobs, tmp: tmp, upload: upload}, nil
}

// withResponseTimeout is base (the SDK's client from the AWS configuration,
// which carries AWS_CA_BUNDLE's roots, or a new one) with a response header
// timeout.
func withResponseTimeout(base aws.HTTPClient, d time.Duration) aws.HTTPClient {
	bc, ok := base.(*awshttp.BuildableClient)
	if !ok || bc == nil {
		bc = awshttp.NewBuildableClient()
	}
	return bc.WithTransportOptions(func(tr *http.Transport) { tr.ResponseHeaderTimeout = d })
}

func (s *Store) key(sha string) string { return s.blobs + sha[:2] + "/" + sha }

// Check asks the server for the bucket: for a readiness probe, or to refuse a
// wrong configuration at start.
func (s *Store) Check(ctx context.Context) error {
	if _, err := s.client.HeadBucket(ctx, &s3api.HeadBucketInput{Bucket: &s.bucket}); err != nil {
		e := s.fail(ctx, "check bucket", "", err)
		if errors.Is(e, blobstore.ErrNotFound) {
			return fmt.Errorf("blobstore/s3: no bucket %s", s.bucket)
		}
		return e
	}
	return nil
}

// Stat implements blobstore.Store with a HEAD request.
func (s *Store) Stat(ctx context.Context, sha string) (blobstore.Info, error) {
	if !blobstore.ValidName(sha) {
		return blobstore.Info{}, fmt.Errorf("blobstore/s3: stat: %w", blobstore.ErrInvalidName)
	}
	key := s.key(sha)
	out, err := s.client.HeadObject(ctx, &s3api.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return blobstore.Info{}, s.fail(ctx, "stat", key, err)
	}
	return blobstore.Info{SHA256: sha, Size: aws.ToInt64(out.ContentLength)}, nil
}

// Open implements blobstore.Store with a GET, ranged unless the whole object
// is asked for.
func (s *Store) Open(ctx context.Context, sha string, off, n int64) (io.ReadCloser, error) {
	if !blobstore.ValidName(sha) {
		return nil, fmt.Errorf("blobstore/s3: open: %w", blobstore.ErrInvalidName)
	}
	key := s.key(sha)
	if off < 0 {
		return nil, fmt.Errorf("blobstore/s3: open %s at %d: %w", s.where(key), off, blobstore.ErrOutOfRange)
	}
	if n == 0 {
		// No Range header can ask for nothing; the answer is empty if the
		// object exists and is long enough.
		return s.emptyAt(ctx, sha, off)
	}
	in := &s3api.GetObjectInput{Bucket: &s.bucket, Key: &key}
	if off > 0 || n > 0 {
		r := "bytes=" + strconv.FormatInt(off, 10) + "-"
		if n > 0 && n <= math.MaxInt64-off {
			r += strconv.FormatInt(off+n-1, 10)
		}
		in.Range = &r
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		if httpStatus(err) == http.StatusRequestedRangeNotSatisfiable {
			// Past the end, or at it (S3 refuses a range starting at the
			// size, and any range of an empty object): tell them apart.
			return s.emptyAt(ctx, sha, off)
		}
		return nil, s.fail(ctx, "open", key, err)
	}
	if in.Range != nil && !strings.HasPrefix(aws.ToString(out.ContentRange), "bytes "+strconv.FormatInt(off, 10)+"-") {
		// A server that ignored the Range would hand out the wrong bytes.
		out.Body.Close()
		return nil, fmt.Errorf("blobstore/s3: open %s: the server answered range %s with %q", s.where(key), *in.Range, aws.ToString(out.ContentRange))
	}
	return out.Body, nil
}

// emptyAt returns an empty reader if the object sha exists and off is its
// size at most.
func (s *Store) emptyAt(ctx context.Context, sha string, off int64) (io.ReadCloser, error) {
	info, err := s.Stat(ctx, sha)
	if err != nil {
		return nil, err
	}
	if off > info.Size {
		return nil, fmt.Errorf("blobstore/s3: open %s at %d of %d bytes: %w", s.where(s.key(sha)), off, info.Size, blobstore.ErrOutOfRange)
	}
	return io.NopCloser(bytes.NewReader(nil)), nil
}

// Create implements blobstore.Store.
func (s *Store) Create(ctx context.Context) (blobstore.Writer, error) {
	w, err := spool.NewWriter(ctx, s.tmp, "blobstore/s3")
	if err != nil {
		return nil, err
	}
	return &writer{Writer: w, s: s}, nil
}

type writer struct {
	*spool.Writer
	s *Store
}

// conflictRetries bounds the retries of a 409: S3 answers it to a
// conditional write racing another one for the same key, and asks for a
// retry; the retry then finds the object (412) or writes it.
const conflictRetries = 5

func (w *writer) Commit(ctx context.Context, want blobstore.Digest) (string, error) {
	return w.Writer.Commit(ctx, want, func(sha string) (string, error) { return w.upload(ctx, sha) })
}

// upload puts the verified spool file under the object's key, unless the
// key is taken (by the same bytes: its name is their sha256).
func (w *writer) upload(ctx context.Context, sha string) (string, error) {
	sp := w.File
	s := w.s
	key := s.key(sha)
	sum := base64.StdEncoding.EncodeToString(sp.SHA256Sum())
	for attempt := 0; ; attempt++ {
		_, err := s.client.PutObject(ctx, &s3api.PutObjectInput{
			Bucket:         &s.bucket,
			Key:            &key,
			Body:           sp.Reader(),
			ContentLength:  aws.Int64(sp.Size()),
			ContentType:    aws.String("application/octet-stream"),
			IfNoneMatch:    aws.String("*"),
			ChecksumSHA256: &sum,
		}, signPayloadAs(sha), func(so *s3api.Options) { so.HTTPClient = s.upload })
		switch status := httpStatus(err); {
		case err == nil, status == http.StatusPreconditionFailed:
			return sha, nil
		case status == http.StatusConflict && attempt < conflictRetries:
			select {
			case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
			case <-ctx.Done():
				return "", s.fail(ctx, "commit", key, ctx.Err())
			}
		default:
			return "", s.fail(ctx, "commit", key, err)
		}
	}
}

// signPayloadAs gives SigV4 the payload hash we already verified, instead of
// letting the SDK read the whole temp file again to compute it (it does on
// plain http). The server checks the bytes against it, too.
func signPayloadAs(sha string) func(*s3api.Options) {
	return func(o *s3api.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Add(middleware.FinalizeMiddlewareFunc("condaproxyVerifiedPayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, sha), in)
				}), middleware.Before)
		})
	}
}

// Delete implements blobstore.Store. S3 answers a delete of an absent key
// with success too.
func (s *Store) Delete(ctx context.Context, sha string) error {
	if !blobstore.ValidName(sha) {
		return fmt.Errorf("blobstore/s3: delete: %w", blobstore.ErrInvalidName)
	}
	key := s.key(sha)
	if _, err := s.client.DeleteObject(ctx, &s3api.DeleteObjectInput{Bucket: &s.bucket, Key: &key}); err != nil {
		if err := s.fail(ctx, "delete", key, err); !errors.Is(err, blobstore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// Walk implements blobstore.Store by listing PREFIX/blobs/. Keys that are not
// objects of this store (put there by hand, or in the wrong xx/) are skipped.
func (s *Store) Walk(ctx context.Context, fn func(blobstore.Info) error) error {
	pages := s3api.NewListObjectsV2Paginator(s.client, &s3api.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &s.blobs})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return s.fail(ctx, "walk", s.blobs, err)
		}
		for _, obj := range page.Contents {
			sub, sha, ok := strings.Cut(strings.TrimPrefix(aws.ToString(obj.Key), s.blobs), "/")
			if !ok || !blobstore.ValidName(sha) || sub != sha[:2] {
				continue
			}
			if err := fn(blobstore.Info{SHA256: sha, Size: aws.ToInt64(obj.Size)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) where(key string) string { return "s3://" + s.bucket + "/" + key }

// httpStatus is the status of the response err came with, or 0 if none came.
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.HTTPStatusCode()
	}
	return 0
}

// fail turns an SDK error into this package's: ErrNotFound, ErrUnavailable or
// a plain error, and a message of our making (see the package doc).
func (s *Store) fail(ctx context.Context, op, key string, err error) error {
	e := &Error{Op: op, Where: s.where(key), err: err}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The caller gave up: not the store's fault, and errors.Is finds the
		// cause. (A response timeout also reads as a deadline, but the
		// caller's context is still live: that is a store that hangs.)
		return e
	}
	e.Status = httpStatus(err)
	var ae smithy.APIError
	if errors.As(err, &ae) {
		e.Code = ae.ErrorCode()
	}
	switch {
	case e.Status == http.StatusNotFound && e.Code != "NoSuchBucket":
		e.kind = blobstore.ErrNotFound
	case e.Status == 0, e.Status >= 500, e.Status == http.StatusTooManyRequests:
		e.kind = blobstore.ErrUnavailable
	}
	return e
}

// Error is a failed request to the object store.
type Error struct {
	Op     string // "stat", "open", "commit", "delete", "walk", "check bucket"
	Where  string // s3://bucket/key
	Status int    // the HTTP status; 0 when no answer came
	Code   string // the S3 error code, e.g. "NoSuchBucket", if the server sent one
	kind   error  // a blobstore sentinel, or nil
	err    error  // the SDK's error, kept for errors.As but never printed
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("blobstore/s3: " + e.Op + " " + e.Where + ": ")
	if e.kind != nil {
		b.WriteString(e.kind.Error())
		if e.kind == blobstore.ErrNotFound {
			return b.String() // the status adds nothing
		}
		b.WriteString(": ")
	}
	switch {
	case e.Status != 0:
		b.WriteString(strconv.Itoa(e.Status) + " " + http.StatusText(e.Status))
		if e.Code != "" {
			b.WriteString(" (" + e.Code + ")")
		}
	case errors.Is(e.err, context.Canceled):
		b.WriteString(context.Canceled.Error())
	case errors.Is(e.err, context.DeadlineExceeded):
		b.WriteString(context.DeadlineExceeded.Error())
	default:
		b.WriteString(networkError(e.err))
	}
	return b.String()
}

func (e *Error) Unwrap() []error {
	if e.kind == nil {
		return []error{e.err}
	}
	return []error{e.kind, e.err}
}

// networkError describes a request that got no answer by its network error
// alone (dial tcp 127.0.0.1:9000: connection refused): the SDK's text around it
// repeats the request URL and retry counts.
func networkError(err error) string {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	var se *smithyhttp.RequestSendError
	if errors.As(err, &se) && se.Err != nil {
		return se.Err.Error()
	}
	return "no answer from the object store"
}
