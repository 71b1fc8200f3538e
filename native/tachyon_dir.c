/*
 * Tachyon's optional native directory scan (N-API, C), for LocalStorage listings.
 *
 * Listing a directory of 100,000 entries sorted by size or mtime needs the lstat of every
 * entry. From JavaScript each lstat is a promise, a Stats object and a thread-pool round
 * trip (about 6-10 µs each, 0.6-1 s for 100,000); here one work item on the libuv pool
 * reads the directory with readdir(3) and fstatat(AT_SYMLINK_NOFOLLOW)s its entries
 * relative to the open directory on a few threads, and hands JavaScript one buffer of
 * names and three typed arrays. Nothing runs on the event-loop thread but the copy out.
 *
 * scanDir(path, withStats, threads, skipPrefix) -> Promise<{ count, names: Buffer (the
 *   names back to back, sorted in UTF-16 code-unit order, the order of JavaScript's `<`),
 *   offsets: Uint32Array (count + 1: name i is names[offsets[i], offsets[i + 1])),
 *   validUtf8 (false when names were left out for not being valid UTF-8 or holding U+FFFD,
 *   which the storage API cannot address), kinds: Uint8Array (1 file, 2 directory), sizes and mtimes: Float64Array (ms
 *   since the epoch, computed as Node computes mtimeMs) }>.
 * Only regular files and directories are returned, no name starting with skipPrefix, and
 * no name that is not valid UTF-8 or holds U+FFFD.
 * Without withStats, kinds come from d_type (an unknown d_type is stat'ed) and sizes and
 * mtimes are 0. The directory itself is opened with O_NOFOLLOW | O_DIRECTORY. A failure
 * rejects with an Error whose `code` is the errno name (ENOENT, ENOTDIR, ELOOP, EACCES,
 * EPERM, EMFILE, ENFILE, ENOMEM; anything else EIO).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_THREADS 8

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  char *skip_prefix; /* names starting with it are left out ("" for none) */
  int with_stats;
  int valid_utf8; /* every name is valid UTF-8 (else the order may not be JavaScript's) */
  int threads;
  int err; /* errno, 0 on success */
  int dirfd;
  /* results */
  char *names; /* NUL-terminated names, back to back */
  size_t names_len, names_cap;
  uint32_t *offsets; /* start of each name in names */
  uint8_t *kinds;
  double *sizes, *mtimes;
  size_t count, cap;
} scan_t;

typedef struct {
  scan_t *s;
  size_t from, to;
} slice_t;

/*
 * True for valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF) without
 * U+FFFD: the names the storage API can address (normalizeStoragePath refuses U+FFFD,
 * which is also what Node decodes invalid bytes to).
 */
static int utf8_valid(const unsigned char *p) {
  while (*p) {
    unsigned c = *p;
    if (c < 0x80) {
      p++;
      continue;
    }
    int n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c == 0xE0) n = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) n = 2;
    else if (c == 0xED) n = 2, hi = 0x9F;
    else if (c == 0xEF && p[1] == 0xBF && p[2] == 0xBD) return 0; /* U+FFFD */
    else if (c >= 0xEE && c <= 0xEF) n = 2;
    else if (c == 0xF0) n = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) n = 3;
    else if (c == 0xF4) n = 3, hi = 0x8F;
    else return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i <= n; i++)
      if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    p += n + 1;
  }
  return 1;
}

static int push_name(scan_t *s, const char *name, uint8_t kind) {
  size_t len = strlen(name) + 1;
  if (s->names_len + len > s->names_cap) {
    size_t cap = s->names_cap ? s->names_cap * 2 : 65536;
    while (cap < s->names_len + len) cap *= 2;
    char *p = realloc(s->names, cap);
    if (!p) return ENOMEM;
    s->names = p;
    s->names_cap = cap;
  }
  if (s->count == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 1024;
    uint32_t *o = realloc(s->offsets, cap * sizeof *o);
    if (!o) return ENOMEM;
    s->offsets = o;
    uint8_t *k = realloc(s->kinds, cap);
    if (!k) return ENOMEM;
    s->kinds = k;
    s->cap = cap;
  }
  if (s->names_len > UINT32_MAX - len) return ENOMEM;
  memcpy(s->names + s->names_len, name, len);
  s->offsets[s->count] = (uint32_t)s->names_len;
  s->kinds[s->count] = kind;
  s->names_len += len;
  s->count++;
  return 0;
}

/* 255: d_type unknown, decide by stat */
static uint8_t kind_of_dtype(unsigned char t) {
  if (t == DT_REG) return 1;
  if (t == DT_DIR) return 2;
  if (t == DT_UNKNOWN) return 255;
  return 0;
}

static void stat_one(scan_t *s, size_t i) {
  struct stat st;
  if (fstatat(s->dirfd, s->names + s->offsets[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
    s->kinds[i] = 0; /* gone meanwhile */
    return;
  }
  s->kinds[i] = S_ISREG(st.st_mode) ? 1 : S_ISDIR(st.st_mode) ? 2 : 0;
  s->sizes[i] = S_ISREG(st.st_mode) ? (double)st.st_size : 0;
  s->mtimes[i] = (double)st.st_mtim.tv_sec * 1e3 + (double)st.st_mtim.tv_nsec / 1e6;
}

/*
 * Name order: UTF-16 code-unit order (JavaScript's `<`). For valid UTF-8, byte order is
 * code point order, which differs from code-unit order only between U+E000..U+FFFF (lead
 * bytes 0xEE, 0xEF) and supplementary characters (lead bytes 0xF0..0xF4, surrogate pairs
 * in UTF-16, which sort below U+E000). Those bytes only ever appear as lead bytes, so
 * comparing bytes through RANK (0xF0..0xF4 -> 0xEE..0xF2, 0xEE/0xEF -> 0xF3/0xF4) gives
 * code-unit order.
 */
static unsigned char RANK[256];

static void init_rank(void) {
  for (int i = 0; i < 256; i++) RANK[i] = (unsigned char)i;
  for (int i = 0xF0; i <= 0xF4; i++) RANK[i] = (unsigned char)(i - 2);
  RANK[0xEE] = 0xF3;
  RANK[0xEF] = 0xF4;
}

typedef struct {
  uint64_t key; /* the first 8 bytes through RANK, big-endian, zero-padded */
  uint32_t off;
  uint8_t kind;
} rec_t;

static int cmp_tail(const void *pa, const void *pb, void *arg) {
  /* records with equal keys: their first 8 bytes are equal and non-NUL */
  const unsigned char *a = (const unsigned char *)arg + ((const rec_t *)pa)->off + 8;
  const unsigned char *b = (const unsigned char *)arg + ((const rec_t *)pb)->off + 8;
  while (*a && *a == *b) {
    a++;
    b++;
  }
  return (int)RANK[*a] - (int)RANK[*b];
}

/*
 * Sorts the scan's names (offsets and kinds) by name: LSD radix on 8-byte prefixes, then
 * each run of equal prefixes by the rest of the names.
 */
static int sort_names(scan_t *s) {
  size_t n = s->count;
  rec_t *rec = malloc(n * sizeof *rec);
  rec_t *tmp = malloc(n * sizeof *tmp);
  if (!rec || !tmp) {
    free(rec);
    free(tmp);
    return ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    const unsigned char *p = (const unsigned char *)s->names + s->offsets[i];
    uint64_t k = 0;
    int j = 0;
    for (; j < 8 && p[j]; j++) k = (k << 8) | RANK[p[j]];
    if (j < 8) k <<= 8 * (8 - j);
    rec[i].key = k;
    rec[i].off = s->offsets[i];
    rec[i].kind = s->kinds[i];
  }
  for (int shift = 0; shift < 64; shift += 8) {
    size_t count[256] = {0};
    for (size_t i = 0; i < n; i++) count[(rec[i].key >> shift) & 0xff]++;
    if (count[(rec[0].key >> shift) & 0xff] == n) continue; /* the same byte everywhere */
    size_t pos = 0;
    for (int b = 0; b < 256; b++) {
      size_t c = count[b];
      count[b] = pos;
      pos += c;
    }
    for (size_t i = 0; i < n; i++) tmp[count[(rec[i].key >> shift) & 0xff]++] = rec[i];
    rec_t *t = rec;
    rec = tmp;
    tmp = t;
  }
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && rec[j].key == rec[i].key) j++;
    if (j - i > 1) qsort_r(rec + i, j - i, sizeof *rec, cmp_tail, s->names);
    i = j;
  }
  for (size_t i = 0; i < n; i++) {
    s->offsets[i] = rec[i].off;
    s->kinds[i] = rec[i].kind;
  }
  free(rec);
  free(tmp);
  return 0;
}

static void *stat_slice(void *arg) {
  slice_t *sl = arg;
  for (size_t i = sl->from; i < sl->to; i++) {
    if (sl->s->with_stats || sl->s->kinds[i] == 255) stat_one(sl->s, i);
  }
  return NULL;
}

static void execute(napi_env env, void *data) {
  scan_t *s = data;
  int fd = open(s->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    s->err = errno;
    return;
  }
  DIR *d = fdopendir(fd);
  if (!d) {
    s->err = errno;
    close(fd);
    return;
  }
  s->dirfd = fd;
  struct dirent *e;
  errno = 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) continue;
    uint8_t k = kind_of_dtype(e->d_type);
    if (k == 0 && !s->with_stats) continue;
    if (s->skip_prefix[0] && strncmp(e->d_name, s->skip_prefix, strlen(s->skip_prefix)) == 0) continue;
    if (!utf8_valid((const unsigned char *)e->d_name)) {
      s->valid_utf8 = 0; /* left out */
      continue;
    }
    int r = push_name(s, e->d_name, k);
    if (r) {
      s->err = r;
      closedir(d);
      return;
    }
    errno = 0;
  }
  if (errno != 0) {
    s->err = errno;
    closedir(d);
    return;
  }
  size_t n = s->count;
  if (n > 1) {
    int r = sort_names(s);
    if (r) {
      s->err = r;
      closedir(d);
      return;
    }
  }
  s->sizes = calloc(n ? n : 1, sizeof(double));
  s->mtimes = calloc(n ? n : 1, sizeof(double));
  if (!s->sizes || !s->mtimes) {
    s->err = ENOMEM;
    closedir(d);
    return;
  }
  int threads = s->threads;
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  if (!s->with_stats || n < 4096) threads = 1;
  slice_t slices[MAX_THREADS];
  pthread_t tids[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (int t = 0; t < threads; t++) {
    slices[t].s = s;
    slices[t].from = n * (size_t)t / (size_t)threads;
    slices[t].to = n * (size_t)(t + 1) / (size_t)threads;
  }
  for (int t = 1; t < threads; t++) started[t] = pthread_create(&tids[t], NULL, stat_slice, &slices[t]) == 0;
  stat_slice(&slices[0]);
  for (int t = 1; t < threads; t++) {
    if (started[t]) pthread_join(tids[t], NULL);
    else stat_slice(&slices[t]); /* no thread: do it here */
  }
  /* only files and directories are listed: drop links, special files, entries gone */
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    if (s->kinds[i] != 1 && s->kinds[i] != 2) continue;
    s->offsets[kept] = s->offsets[i];
    s->kinds[kept] = s->kinds[i];
    s->sizes[kept] = s->sizes[i];
    s->mtimes[kept] = s->mtimes[i];
    kept++;
  }
  s->count = kept;
  closedir(d);
}

static const char *errno_name(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case ENOTDIR: return "ENOTDIR";
    case ELOOP: return "ELOOP";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOMEM: return "ENOMEM";
    default: return "EIO";
  }
}

static void free_scan(scan_t *s) {
  free(s->path);
  free(s->skip_prefix);
  free(s->names);
  free(s->offsets);
  free(s->kinds);
  free(s->sizes);
  free(s->mtimes);
  free(s);
}

static napi_value typed(napi_env env, napi_typedarray_type type, const void *src, size_t count, size_t elem) {
  void *data;
  napi_value ab, ta;
  if (napi_create_arraybuffer(env, count * elem, &data, &ab) != napi_ok) return NULL;
  if (count) memcpy(data, src, count * elem);
  if (napi_create_typedarray(env, type, count, ab, 0, &ta) != napi_ok) return NULL;
  return ta;
}

static void complete(napi_env env, napi_status status, void *data) {
  scan_t *s = data;
  if (status != napi_ok || s->err) {
    int e = status != napi_ok ? EIO : s->err;
    napi_value msg, code, error;
    napi_create_string_utf8(env, strerror(e), NAPI_AUTO_LENGTH, &msg);
    napi_create_string_utf8(env, errno_name(e), NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, msg, &error);
    napi_reject_deferred(env, s->deferred, error);
  } else {
    napi_value result, names, count, kinds, sizes, mtimes;
    void *bufdata;
    int ok = napi_create_object(env, &result) == napi_ok &&
             napi_create_buffer(env, s->names_len, &bufdata, &names) == napi_ok &&
             napi_create_double(env, (double)s->count, &count) == napi_ok;
    napi_value offsets = NULL, valid = NULL;
    uint32_t *outoff = NULL;
    if (ok) {
      void *od;
      napi_value ab;
      ok = napi_create_arraybuffer(env, (s->count + 1) * sizeof(uint32_t), &od, &ab) == napi_ok &&
           napi_create_typedarray(env, napi_uint32_array, s->count + 1, ab, 0, &offsets) == napi_ok &&
           napi_get_boolean(env, s->valid_utf8, &valid) == napi_ok;
      outoff = od;
    }
    if (ok) {
      /* names in order, back to back without separators; offsets[i]..offsets[i + 1] */
      char *out = bufdata;
      uint32_t pos = 0;
      for (size_t i = 0; i < s->count; i++) {
        const char *nm = s->names + s->offsets[i];
        size_t len = strlen(nm);
        memcpy(out + pos, nm, len);
        outoff[i] = pos;
        pos += (uint32_t)len;
      }
      outoff[s->count] = pos;
    }
    kinds = ok ? typed(env, napi_uint8_array, s->kinds, s->count, 1) : NULL;
    sizes = ok && kinds ? typed(env, napi_float64_array, s->sizes, s->count, sizeof(double)) : NULL;
    mtimes = ok && sizes ? typed(env, napi_float64_array, s->mtimes, s->count, sizeof(double)) : NULL;
    if (ok && mtimes && napi_set_named_property(env, result, "names", names) == napi_ok &&
        napi_set_named_property(env, result, "count", count) == napi_ok &&
        napi_set_named_property(env, result, "offsets", offsets) == napi_ok &&
        napi_set_named_property(env, result, "validUtf8", valid) == napi_ok &&
        napi_set_named_property(env, result, "kinds", kinds) == napi_ok &&
        napi_set_named_property(env, result, "sizes", sizes) == napi_ok &&
        napi_set_named_property(env, result, "mtimes", mtimes) == napi_ok) {
      napi_resolve_deferred(env, s->deferred, result);
    } else {
      napi_value msg, code, error;
      napi_create_string_utf8(env, "scanDir: out of memory", NAPI_AUTO_LENGTH, &msg);
      napi_create_string_utf8(env, "ENOMEM", NAPI_AUTO_LENGTH, &code);
      napi_create_error(env, code, msg, &error);
      napi_reject_deferred(env, s->deferred, error);
    }
  }
  napi_delete_async_work(env, s->work);
  free_scan(s);
}

static napi_value throw_err(napi_env env, const char *msg) {
  napi_throw_type_error(env, "TACHYON_DIR", msg);
  return NULL;
}

/* scanDir(path: string, withStats: boolean, threads: number, skipPrefix: string): Promise<…> */
static napi_value scan_dir(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) return throw_err(env, "scanDir: bad arguments");
  size_t plen;
  if (napi_get_value_string_utf8(env, argv[3], NULL, 0, &plen) != napi_ok || plen > 255) return throw_err(env, "scanDir: bad skipPrefix");
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], NULL, 0, &len) != napi_ok || len == 0 || len > 4096 * 4) return throw_err(env, "scanDir: bad path");
  bool with_stats;
  int32_t threads;
  if (napi_get_value_bool(env, argv[1], &with_stats) != napi_ok) return throw_err(env, "scanDir: bad withStats");
  if (napi_get_value_int32(env, argv[2], &threads) != napi_ok) return throw_err(env, "scanDir: bad threads");
  scan_t *s = calloc(1, sizeof *s);
  if (!s) return throw_err(env, "scanDir: out of memory");
  s->path = malloc(len + 1);
  if (!s->path) {
    free(s);
    return throw_err(env, "scanDir: out of memory");
  }
  napi_get_value_string_utf8(env, argv[0], s->path, len + 1, &len);
  if (strlen(s->path) != len) {
    free_scan(s);
    return throw_err(env, "scanDir: NUL in path");
  }
  s->skip_prefix = malloc(plen + 1);
  if (!s->skip_prefix) {
    free_scan(s);
    return throw_err(env, "scanDir: out of memory");
  }
  napi_get_value_string_utf8(env, argv[3], s->skip_prefix, plen + 1, &plen);
  s->valid_utf8 = 1;
  s->with_stats = with_stats;
  s->threads = threads;
  s->dirfd = -1;
  napi_value promise, name;
  if (napi_create_promise(env, &s->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "tachyon.scanDir", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, s, &s->work) != napi_ok) {
    free_scan(s);
    return throw_err(env, "scanDir: cannot queue");
  }
  if (napi_queue_async_work(env, s->work) != napi_ok) {
    napi_delete_async_work(env, s->work);
    free_scan(s);
    return throw_err(env, "scanDir: cannot queue");
  }
  return promise;
}

static napi_value init(napi_env env, napi_value exports) {
  init_rank();
  napi_property_descriptor props[] = {
      {"scanDir", NULL, scan_dir, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
