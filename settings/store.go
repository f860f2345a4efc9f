package settings

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/caddyaccounts/gateway/fastapi"
)

// Names, modes and limits of the settings files.
const (
	aiSettingsName        = "ai.json"
	documentsSettingsName = "documents.json"
	aiSettingsMode        = 0o600
	documentsSettingsMode = 0o644
	settingsDirMode       = 0o750
	// maxSettingsFileBytes bounds what is read of a settings file; a
	// larger one is corrupt.
	maxSettingsFileBytes = 1 << 20
	// settingsLockWait bounds the wait for another writer's lock.
	settingsLockWait = 10 * time.Second
)

// settingsFile is one settings file: its reads (cached by the file's
// identity and mtime) and its serialized, atomic read-modify-writes.
type settingsFile[T any] struct {
	dir, name string
	mode      os.FileMode
	defaults  func() T
	check     func(*T) error

	mu    sync.Mutex // serializes this process's writers
	cache atomic.Pointer[settingsCache[T]]
}

// settingsCache is the parsed content of a file version.
type settingsCache[T any] struct {
	key   fileKey
	value T
	err   error
}

// fileKey identifies a version of a file: a rename gives a new inode, an
// edit in place a new mtime or size.
type fileKey struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func fileKeyOf(fi os.FileInfo) fileKey {
	k := fileKey{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.dev, k.ino = uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // Dev's type differs between platforms
	}
	return k
}

func (f *settingsFile[T]) path() string { return filepath.Join(f.dir, f.name) }

// Errors of the settings files. Their causes name files and fields, never
// values.
func (f *settingsFile[T]) corrupt(reason string) *fastapi.Error {
	return &fastapi.Error{
		Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("Settings file %s is corrupt; fix or remove it", f.name),
		Err:    fmt.Errorf("settings file %s: %s", f.path(), reason),
	}
}

func (f *settingsFile[T]) unavailable(op string, err error) *fastapi.Error {
	return &fastapi.Error{
		Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("Settings file %s could not be %s", f.name, op),
		Err:    fmt.Errorf("settings file %s: %w", f.path(), err),
	}
}

// load returns the file's current content: the defaults when it does not
// exist. It costs one stat(2) when the file has not changed since it was
// last read, by this process or any other.
func (f *settingsFile[T]) load() (T, error) {
	fi, err := os.Stat(f.path())
	if errors.Is(err, os.ErrNotExist) {
		return f.defaults(), nil
	}
	if err != nil {
		var zero T
		return zero, f.unavailable("read", err)
	}
	if c := f.cache.Load(); c != nil && c.key == fileKeyOf(fi) {
		return c.value, c.err
	}
	return f.read()
}

// read reads and parses the file, bypassing the cache, and caches what it
// found under the identity of the very file it read.
func (f *settingsFile[T]) read() (T, error) {
	var zero T
	file, err := os.Open(f.path())
	if errors.Is(err, os.ErrNotExist) {
		return f.defaults(), nil
	}
	if err != nil {
		return zero, f.unavailable("read", err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return zero, f.unavailable("read", err)
	}
	if !fi.Mode().IsRegular() {
		return zero, f.corrupt("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(file, maxSettingsFileBytes+1))
	if err != nil {
		return zero, f.unavailable("read", err)
	}
	c := &settingsCache[T]{key: fileKeyOf(fi)}
	c.value, err = f.decode(data)
	if err != nil {
		c.value, c.err = zero, err
	}
	f.cache.Store(c)
	return c.value, c.err
}

// decode parses a file's content strictly: one JSON object with fields of
// the right types and values in range, onto the defaults.
func (f *settingsFile[T]) decode(data []byte) (T, error) {
	var zero T
	if len(data) > maxSettingsFileBytes {
		return zero, f.corrupt("larger than 1 MiB")
	}
	if !utf8.Valid(data) {
		return zero, f.corrupt("not UTF-8")
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return zero, f.corrupt("not a JSON object")
	}
	v := f.defaults()
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(&v); err != nil {
		return zero, f.corrupt(describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return zero, f.corrupt("data after the JSON object")
	}
	if err := f.check(&v); err != nil {
		return zero, f.corrupt(err.Error())
	}
	return v, nil
}

// describeJSONError says where JSON is broken without quoting it.
func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q: not a valid %s", te.Field, te.Type)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated JSON"
	}
	return "invalid JSON"
}

// update applies change to the file's current content under the process
// mutex and the directory's file lock, and writes the result atomically
// when change reports a difference. A corrupt file is returned as an
// error and never overwritten.
func (f *settingsFile[T]) update(ctx context.Context, change func(cur T) (next T, changed bool)) (T, error) {
	var zero T
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.MkdirAll(f.dir, settingsDirMode); err != nil {
		return zero, f.unavailable("saved", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(f.dir, "."+f.name+".lock"))
	if err != nil {
		return zero, f.unavailable("saved", err)
	}
	defer unlock()
	cur, err := f.read()
	if err != nil {
		return zero, err
	}
	next, changed := change(cur)
	if !changed {
		return cur, nil
	}
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return zero, f.unavailable("saved", err)
	}
	key, err := writeFileAtomic(f.dir, f.name, append(data, '\n'), f.mode)
	if err != nil {
		return zero, f.unavailable("saved", err)
	}
	f.cache.Store(&settingsCache[T]{key: key, value: next})
	return next, nil
}

// writeFileAtomic replaces dir/name with data: temporary file in dir,
// fsync, rename, fsync of dir. It returns the new file's identity.
func writeFileAtomic(dir, name string, data []byte, mode os.FileMode) (key fileKey, err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return key, err
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Chmod, unlike the create mode, is not narrowed by the umask.
	if err := tmp.Chmod(mode); err != nil {
		return key, err
	}
	if _, err := tmp.Write(data); err != nil {
		return key, err
	}
	if err := tmp.Sync(); err != nil {
		return key, err
	}
	fi, err := tmp.Stat()
	if err != nil {
		return key, err
	}
	if err := tmp.Close(); err != nil {
		return key, err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return key, err
	}
	renamed = true
	// The rename is durable once the directory is synced. It has happened
	// either way, so a failure here is not reported as a failed write.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return fileKeyOf(fi), nil
}

// lockFile takes an exclusive flock(2) on path, waiting at most
// settingsLockWait or until ctx ends, and returns its release.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	deadline := time.Now().Add(settingsLockWait)
	wait := time.Millisecond
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(fd, syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("locking %s: still held by another writer after %s", path, settingsLockWait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}
