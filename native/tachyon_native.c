/*
 * Tachyon's optional native datagram path (N-API, C).
 *
 * Two things the pure-TypeScript path pays for per datagram, and this addon does not:
 *  - AEAD: Node's crypto creates a cipher object and a fresh output buffer for every
 *    datagram. Here one OpenSSL EVP context per key generation is kept, only the nonce
 *    changes per packet, and sealing/opening happens in place in the caller's buffer.
 *  - Receiving: node:dgram allocates a new buffer for every datagram. Here a socket is
 *    polled on the event loop (uv_poll) and drained with recvmmsg into one slab the
 *    JavaScript side owns; JavaScript gets one call per batch with lengths and senders.
 *
 * Everything runs on the event-loop thread; no locks. The wire format and the key
 * schedule are the TypeScript path's (src/transport/crypto/aead.ts): the same tests run
 * against both (test/transport/native.test.ts).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>
#include <openssl/evp.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TAG_BYTES 16

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      napi_throw_error((env), "TACHYON_NATIVE", #call);    \
      return NULL;                                         \
    }                                                      \
  } while (0)

static napi_value throw_err(napi_env env, const char *msg) {
  napi_throw_error(env, "TACHYON_NATIVE", msg);
  return NULL;
}

/* ------------------------------------------------------------------ AEAD */

typedef struct {
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
  uint8_t iv[12];
} gcm_t;

static void gcm_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  gcm_t *g = (gcm_t *)data;
  EVP_CIPHER_CTX_free(g->enc);
  EVP_CIPHER_CTX_free(g->dec);
  OPENSSL_cleanse(g->iv, sizeof g->iv);
  free(g);
}

static int get_buffer(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) return 0;
  return napi_get_buffer_info(env, v, (void **)data, len) == napi_ok;
}

static int get_u32(napi_env env, napi_value v, uint32_t *out) {
  return napi_get_value_uint32(env, v, out) == napi_ok;
}

/* gcmCreate(keyBuffer, ivBuffer) -> external; key length 16/24/32 selects AES-128/192/256 */
static napi_value gcm_create(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *key, *iv;
  size_t klen, ivlen;
  if (argc < 2 || !get_buffer(env, argv[0], &key, &klen) || !get_buffer(env, argv[1], &iv, &ivlen) || ivlen != 12)
    return throw_err(env, "gcmCreate(key, iv): bad arguments");
  const EVP_CIPHER *c = klen == 16 ? EVP_aes_128_gcm() : klen == 24 ? EVP_aes_192_gcm() : klen == 32 ? EVP_aes_256_gcm() : NULL;
  if (!c) return throw_err(env, "gcmCreate: key must be 16, 24 or 32 bytes");
  gcm_t *g = calloc(1, sizeof *g);
  if (!g) return throw_err(env, "gcmCreate: out of memory");
  g->enc = EVP_CIPHER_CTX_new();
  g->dec = EVP_CIPHER_CTX_new();
  memcpy(g->iv, iv, 12);
  if (!g->enc || !g->dec || EVP_EncryptInit_ex(g->enc, c, NULL, key, g->iv) != 1 ||
      EVP_DecryptInit_ex(g->dec, c, NULL, key, g->iv) != 1) {
    gcm_finalize(env, g, NULL);
    return throw_err(env, "gcmCreate: OpenSSL refused the key");
  }
  napi_value ext;
  if (napi_create_external(env, g, gcm_finalize, NULL, &ext) != napi_ok) {
    gcm_finalize(env, g, NULL);
    return throw_err(env, "gcmCreate: napi_create_external");
  }
  return ext;
}

static void make_nonce(const uint8_t iv[12], double pn, uint8_t out[12]) {
  uint64_t p = (uint64_t)pn;
  memcpy(out, iv, 12);
  for (int i = 0; i < 6; i++) out[11 - i] ^= (uint8_t)(p >> (8 * i));
}

static gcm_t *get_gcm(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return (gcm_t *)p;
}

/* gcmSeal(ctx, buf, headerLen, plainLen, pn): buf[headerLen, +plainLen) is encrypted in
 * place and the tag written after it; buf[0, headerLen) is the associated data. */
static napi_value gcm_seal(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  gcm_t *g;
  uint8_t *buf;
  size_t len;
  uint32_t hl, pl;
  double pn;
  if (argc < 5 || !(g = get_gcm(env, argv[0])) || !get_buffer(env, argv[1], &buf, &len) || !get_u32(env, argv[2], &hl) ||
      !get_u32(env, argv[3], &pl) || napi_get_value_double(env, argv[4], &pn) != napi_ok)
    return throw_err(env, "gcmSeal: bad arguments");
  if ((size_t)hl + pl + TAG_BYTES > len || pn < 0 || pn >= 281474976710656.0) return throw_err(env, "gcmSeal: out of range");
  uint8_t nonce[12];
  make_nonce(g->iv, pn, nonce);
  int outl = 0, fl = 0;
  if (EVP_EncryptInit_ex(g->enc, NULL, NULL, NULL, nonce) != 1 || (hl && EVP_EncryptUpdate(g->enc, NULL, &outl, buf, (int)hl) != 1) ||
      EVP_EncryptUpdate(g->enc, buf + hl, &outl, buf + hl, (int)pl) != 1 || EVP_EncryptFinal_ex(g->enc, buf + hl + outl, &fl) != 1 ||
      EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, buf + hl + pl) != 1)
    return throw_err(env, "gcmSeal: OpenSSL failed");
  return NULL;
}

/* gcmOpen(ctx, buf, headerLen, totalLen, pn) -> boolean: authenticates and decrypts
 * buf[headerLen, totalLen - 16) in place. On false the body is garbage. */
static napi_value gcm_open(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  gcm_t *g;
  uint8_t *buf;
  size_t len;
  uint32_t hl, tl;
  double pn;
  if (argc < 5 || !(g = get_gcm(env, argv[0])) || !get_buffer(env, argv[1], &buf, &len) || !get_u32(env, argv[2], &hl) ||
      !get_u32(env, argv[3], &tl) || napi_get_value_double(env, argv[4], &pn) != napi_ok)
    return throw_err(env, "gcmOpen: bad arguments");
  bool ok = false;
  if (tl <= len && (size_t)hl + TAG_BYTES <= tl && pn >= 0 && pn < 281474976710656.0) {
    uint8_t nonce[12];
    make_nonce(g->iv, pn, nonce);
    int outl = 0, fl = 0;
    size_t bl = tl - hl - TAG_BYTES;
    ok = EVP_DecryptInit_ex(g->dec, NULL, NULL, NULL, nonce) == 1 &&
         (hl == 0 || EVP_DecryptUpdate(g->dec, NULL, &outl, buf, (int)hl) == 1) &&
         EVP_DecryptUpdate(g->dec, buf + hl, &outl, buf + hl, (int)bl) == 1 &&
         EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, buf + hl + bl) == 1 &&
         EVP_DecryptFinal_ex(g->dec, buf + hl + outl, &fl) == 1;
  }
  napi_value r;
  CHECK(env, napi_get_boolean(env, ok, &r));
  return r;
}

/* ------------------------------------------------------------------ UDP */

#define MAX_BATCH 64

typedef struct pending_s {
  struct pending_s *next;
  struct sockaddr_in to;
  size_t len;
  uint8_t data[];
} pending_t;

typedef struct {
  napi_env env;
  int fd;
  uv_poll_t poll;
  int events;
  int closing;
  napi_ref slab_ref;
  uint8_t *slab;
  size_t slot;     /* bytes per slot in the slab */
  size_t slots;    /* number of slots (<= MAX_BATCH) */
  napi_ref meta_ref;
  uint32_t *meta;  /* per message: length, IPv4 address (host order), port */
  napi_ref ages_ref;
  double *ages;    /* per message (optional): ms between its arrival (kernel timestamp) and the read */
  napi_ref cb_ref;
  napi_async_context actx;
  napi_ref self_ref;
  pending_t *head, *tail;
  size_t pending_bytes;
  double dropped;
  int released;
} udp_t;

#define PENDING_MAX (8u << 20)

static void udp_poll_cb(uv_poll_t *h, int status, int events);

static void udp_update_events(udp_t *u) {
  int want = UV_READABLE | (u->head ? UV_WRITABLE : 0);
  if (want != u->events && !u->closing) {
    u->events = want;
    uv_poll_start(&u->poll, want, udp_poll_cb);
  }
}

static void udp_flush(udp_t *u) {
  while (u->head) {
    pending_t *p = u->head;
    ssize_t n = sendto(u->fd, p->data, p->len, 0, (struct sockaddr *)&p->to, sizeof p->to);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) break;
    /* sent, or a hard error for this datagram (UDP: it is gone either way) */
    u->head = p->next;
    if (!u->head) u->tail = NULL;
    u->pending_bytes -= p->len;
    free(p);
  }
  udp_update_events(u);
}

static void udp_read(udp_t *u) {
  napi_env env = u->env;
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH];
  struct sockaddr_in from[MAX_BATCH];
  /* SO_TIMESTAMPNS: the kernel's receive time of each datagram */
  union {
    char buf[CMSG_SPACE(sizeof(struct timespec))];
    struct cmsghdr align;
  } ctl[MAX_BATCH];
  for (int rounds = 0; rounds < 16 && !u->closing; rounds++) {
    size_t n = u->slots;
    memset(msgs, 0, sizeof(msgs[0]) * n);
    for (size_t i = 0; i < n; i++) {
      iov[i].iov_base = u->slab + i * u->slot;
      iov[i].iov_len = u->slot;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
      if (u->ages) {
        msgs[i].msg_hdr.msg_control = ctl[i].buf;
        msgs[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
      }
    }
    int got = recvmmsg(u->fd, msgs, (unsigned)n, MSG_DONTWAIT, NULL);
    if (got <= 0) return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int count = 0;
    for (int i = 0; i < got; i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) continue; /* larger than a slot: drop */
      if (from[i].sin_family != AF_INET) continue;
      /* compact: message i moves to slot `count` only in the metadata; the JS side
       * reads slot index from meta[4*k+3] */
      u->meta[4 * count] = (uint32_t)msgs[i].msg_len;
      u->meta[4 * count + 1] = ntohl(from[i].sin_addr.s_addr);
      u->meta[4 * count + 2] = ntohs(from[i].sin_port);
      u->meta[4 * count + 3] = (uint32_t)i;
      if (u->ages) {
        double age = -1; /* no timestamp */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
          if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            age = (double)(now.tv_sec - ts.tv_sec) * 1e3 + (double)(now.tv_nsec - ts.tv_nsec) / 1e6;
            if (age < 0) age = 0; /* the realtime clock stepped back */
          }
        }
        u->ages[count] = age;
      }
      count++;
    }
    if (count > 0) {
      napi_handle_scope scope;
      if (napi_open_handle_scope(env, &scope) != napi_ok) return;
      napi_value cb, self, argv[1], result;
      napi_get_reference_value(env, u->cb_ref, &cb);
      napi_get_reference_value(env, u->self_ref, &self);
      napi_create_uint32(env, (uint32_t)count, &argv[0]);
      napi_status st = napi_make_callback(env, u->actx, self, cb, 1, argv, &result);
      if (st == napi_pending_exception) {
        napi_value exc;
        napi_get_and_clear_last_exception(env, &exc);
        napi_fatal_exception(env, exc);
      }
      napi_close_handle_scope(env, scope);
    }
    if ((size_t)got < n) return; /* drained */
  }
}

static void udp_poll_cb(uv_poll_t *h, int status, int events) {
  udp_t *u = (udp_t *)h->data;
  if (u->closing) return;
  if (status < 0) return;
  if (events & UV_WRITABLE) udp_flush(u);
  if (events & UV_READABLE) udp_read(u);
}

static void udp_free(udp_t *u) {
  while (u->head) {
    pending_t *p = u->head;
    u->head = p->next;
    free(p);
  }
  free(u);
}

static void udp_closed_cb(uv_handle_t *h) {
  udp_t *u = (udp_t *)h->data;
  napi_env env = u->env;
  if (u->slab_ref) napi_delete_reference(env, u->slab_ref);
  if (u->meta_ref) napi_delete_reference(env, u->meta_ref);
  if (u->ages_ref) napi_delete_reference(env, u->ages_ref);
  if (u->cb_ref) napi_delete_reference(env, u->cb_ref);
  if (u->actx) napi_async_destroy(env, u->actx);
  u->released = 1;
  /* the external (JavaScript's handle) may outlive the socket: it is freed by its
   * finalizer, once the last JavaScript reference is gone */
  if (u->self_ref) napi_delete_reference(env, u->self_ref);
  u->self_ref = NULL;
}

static void udp_ext_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  udp_t *u = (udp_t *)data;
  if (u->released) udp_free(u);
}

static void udp_do_close(udp_t *u) {
  if (u->closing) return;
  u->closing = 1;
  uv_poll_stop(&u->poll);
  close(u->fd);
  u->fd = -1;
  uv_close((uv_handle_t *)&u->poll, udp_closed_cb);
}

static udp_t *get_udp(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return (udp_t *)p;
}

/* udpOpen(address, port, bufferBytes, slab, slotBytes, meta, onBatch[, ages]) -> external.
 * Binds an IPv4 UDP socket; the address is an IPv4 literal. `slab` holds the received
 * datagrams (slot i at i * slotBytes), `meta` (Uint32Array, 4 per message) their length,
 * sender address, sender port and slot. onBatch(count) is called once per batch. With
 * `ages` (Float64Array, 1 per message) the socket asks for kernel receive timestamps
 * (SO_TIMESTAMPNS) and ages[k] is how long before the read message k arrived, in ms
 * (-1 when the kernel gave no timestamp). */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char addr[64];
  size_t alen;
  uint32_t port, bufbytes, slot;
  uint8_t *slab;
  size_t slablen;
  if (argc < 7 || napi_get_value_string_utf8(env, argv[0], addr, sizeof addr, &alen) != napi_ok || !get_u32(env, argv[1], &port) ||
      !get_u32(env, argv[2], &bufbytes) || !get_buffer(env, argv[3], &slab, &slablen) || !get_u32(env, argv[4], &slot) || slot < 1500)
    return throw_err(env, "udpOpen: bad arguments");
  bool is_ta;
  napi_typedarray_type tt;
  size_t mlen;
  void *mdata;
  if (napi_is_typedarray(env, argv[5], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[5], &tt, &mlen, &mdata, NULL, NULL) != napi_ok || tt != napi_uint32_array)
    return throw_err(env, "udpOpen: meta must be a Uint32Array");
  size_t slots = slablen / slot;
  if (slots > MAX_BATCH) slots = MAX_BATCH;
  if (slots < 1 || mlen < 4 * slots) return throw_err(env, "udpOpen: slab or meta too small");
  double *ages = NULL;
  if (argc >= 8) {
    napi_valuetype vt;
    if (napi_typeof(env, argv[7], &vt) != napi_ok) return throw_err(env, "udpOpen: bad ages");
    if (vt != napi_undefined) {
      size_t alen2;
      void *adata;
      if (napi_is_typedarray(env, argv[7], &is_ta) != napi_ok || !is_ta ||
          napi_get_typedarray_info(env, argv[7], &tt, &alen2, &adata, NULL, NULL) != napi_ok || tt != napi_float64_array || alen2 < slots)
        return throw_err(env, "udpOpen: ages must be a Float64Array with a slot per message");
      ages = (double *)adata;
    }
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) return throw_err(env, "udpOpen: not an IPv4 address");
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_err(env, "udpOpen: socket() failed");
  int b = (int)bufbytes;
  /* a privileged server may exceed net.core.rmem_max (CAP_NET_ADMIN); others get what it allows */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &b, sizeof b) != 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &b, sizeof b) != 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
  int on = 1;
  if (ages && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) != 0) ages = NULL;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    char msg[128];
    snprintf(msg, sizeof msg, "udpOpen: bind failed: %s", strerror(e));
    napi_value code, m, err;
    napi_create_string_utf8(env, e == EADDRINUSE ? "EADDRINUSE" : e == EACCES ? "EACCES" : "EBIND", NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, code, m, &err);
    napi_throw(env, err);
    return NULL;
  }
  udp_t *u = calloc(1, sizeof *u);
  if (!u) {
    close(fd);
    return throw_err(env, "udpOpen: out of memory");
  }
  u->env = env;
  u->fd = fd;
  u->slab = slab;
  u->slot = slot;
  u->slots = slots;
  u->meta = (uint32_t *)mdata;
  u->ages = ages;
  uv_loop_t *loop;
  napi_value ext, name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &u->poll, fd) != 0) {
    close(fd);
    free(u);
    return throw_err(env, "udpOpen: uv_poll_init failed");
  }
  u->poll.data = u;
  CHECK(env, napi_create_reference(env, argv[3], 1, &u->slab_ref));
  CHECK(env, napi_create_reference(env, argv[5], 1, &u->meta_ref));
  if (ages) CHECK(env, napi_create_reference(env, argv[7], 1, &u->ages_ref));
  CHECK(env, napi_create_reference(env, argv[6], 1, &u->cb_ref));
  CHECK(env, napi_create_string_utf8(env, "tachyon.udp", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_async_init(env, NULL, name, &u->actx));
  CHECK(env, napi_create_external(env, u, udp_ext_finalize, NULL, &ext));
  CHECK(env, napi_create_reference(env, ext, 1, &u->self_ref));
  u->events = UV_READABLE;
  uv_poll_start(&u->poll, UV_READABLE, udp_poll_cb);
  return ext;
}

/* udpSend(sock, buf, offset, length, ipv4 (host order), port) -> 0 sent now, 1 queued,
 * 2 dropped (queue full or closed). */
static napi_value udp_send(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  udp_t *u;
  uint8_t *buf;
  size_t blen;
  uint32_t off, len, ip, port;
  if (argc < 6 || !(u = get_udp(env, argv[0])) || !get_buffer(env, argv[1], &buf, &blen) || !get_u32(env, argv[2], &off) ||
      !get_u32(env, argv[3], &len) || !get_u32(env, argv[4], &ip) || !get_u32(env, argv[5], &port) || (size_t)off + len > blen)
    return throw_err(env, "udpSend: bad arguments");
  uint32_t result = 2;
  if (!u->closing) {
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(ip);
    to.sin_port = htons((uint16_t)port);
    ssize_t n = -1;
    if (!u->head) n = sendto(u->fd, buf + off, len, 0, (struct sockaddr *)&to, sizeof to);
    if (n >= 0) {
      result = 0;
    } else if (u->head || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      if (u->pending_bytes + len <= PENDING_MAX) {
        pending_t *p = malloc(sizeof *p + len);
        if (p) {
          p->next = NULL;
          p->to = to;
          p->len = len;
          memcpy(p->data, buf + off, len);
          if (u->tail) u->tail->next = p;
          else u->head = p;
          u->tail = p;
          u->pending_bytes += len;
          result = 1;
          udp_update_events(u);
        }
      }
      if (result == 2) u->dropped++;
    } else {
      result = 0; /* ICMP-reported errors (ECONNREFUSED...): the datagram is gone, as with dgram */
    }
  }
  napi_value r;
  CHECK(env, napi_create_uint32(env, result, &r));
  return r;
}

/* udpLocalPort(sock) -> number */
static napi_value udp_local_port(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  udp_t *u;
  if (argc < 1 || !(u = get_udp(env, argv[0])) || u->closing) return throw_err(env, "udpLocalPort: closed");
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;
  if (getsockname(u->fd, (struct sockaddr *)&sa, &sl) != 0) return throw_err(env, "udpLocalPort: getsockname failed");
  napi_value r;
  CHECK(env, napi_create_uint32(env, ntohs(sa.sin_port), &r));
  return r;
}

/* udpClose(sock): stops polling and closes the socket; queued datagrams are dropped. */
static napi_value udp_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  udp_t *u;
  if (argc < 1 || !(u = get_udp(env, argv[0]))) return throw_err(env, "udpClose: bad arguments");
  udp_do_close(u);
  return NULL;
}


/* ------------------------------------------------------------------ tail parity (GF(2^8)) */
/* The same code as src/transport/fec/parity.ts: polynomial 0x11d, Cauchy coefficients
 * 1 / (j ^ (128 + i)). Only the byte loops live here; the TypeScript path is the reference. */

static uint8_t gf_mul_table[256][256];
static uint8_t gf_coef[128][128];

static void gf_init(void) {
  uint8_t exp[512], log[256];
  unsigned x = 1;
  for (int i = 0; i < 255; i++) {
    exp[i] = (uint8_t)x;
    log[x] = (uint8_t)i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (int i = 255; i < 512; i++) exp[i] = exp[i - 255];
  log[0] = 0;
  for (int a = 0; a < 256; a++)
    for (int b = 0; b < 256; b++) gf_mul_table[a][b] = (a == 0 || b == 0) ? 0 : exp[log[a] + log[b]];
  for (int j = 0; j < 128; j++)
    for (int i = 0; i < 128; i++) gf_coef[j][i] = exp[255 - log[j ^ (128 + i)]];
}

static void gf_mul_add(uint8_t *dst, const uint8_t *src, size_t n, uint8_t c) {
  if (c == 0) return;
  if (c == 1) {
    for (size_t i = 0; i < n; i++) dst[i] ^= src[i];
    return;
  }
  const uint8_t *t = gf_mul_table[c];
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    dst[i] ^= t[src[i]];
    dst[i + 1] ^= t[src[i + 1]];
    dst[i + 2] ^= t[src[i + 2]];
    dst[i + 3] ^= t[src[i + 3]];
    dst[i + 4] ^= t[src[i + 4]];
    dst[i + 5] ^= t[src[i + 5]];
    dst[i + 6] ^= t[src[i + 6]];
    dst[i + 7] ^= t[src[i + 7]];
  }
  for (; i < n; i++) dst[i] ^= t[src[i]];
}

/* fecMulAdd(dst, src, c): dst[0, src.length) ^= c * src */
static napi_value fec_mul_add(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *dst, *src;
  size_t dl, sl;
  uint32_t c;
  if (argc < 3 || !get_buffer(env, argv[0], &dst, &dl) || !get_buffer(env, argv[1], &src, &sl) || !get_u32(env, argv[2], &c) || c > 255)
    return throw_err(env, "fecMulAdd: bad arguments");
  if (sl > dl) return throw_err(env, "fecMulAdd: source longer than destination");
  gf_mul_add(dst, src, sl, (uint8_t)c);
  return NULL;
}

/* fecAdd(parity, m, len, block, i): parity holds m symbols of len bytes one after the
 * other; adds data block i (block.length <= len) to each of them. */
static napi_value fec_add(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *par, *blk;
  size_t pl, bl;
  uint32_t m, len, i;
  if (argc < 5 || !get_buffer(env, argv[0], &par, &pl) || !get_u32(env, argv[1], &m) || !get_u32(env, argv[2], &len) ||
      !get_buffer(env, argv[3], &blk, &bl) || !get_u32(env, argv[4], &i))
    return throw_err(env, "fecAdd: bad arguments");
  if (m < 1 || m > 128 || i >= 128 || bl > len || (size_t)m * len > pl) return throw_err(env, "fecAdd: out of range");
  for (uint32_t j = 0; j < m; j++) gf_mul_add(par + (size_t)j * len, blk, bl, gf_coef[j][i]);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  gf_init();
  napi_property_descriptor props[] = {
      {"gcmCreate", NULL, gcm_create, NULL, NULL, NULL, napi_default, NULL},
      {"gcmSeal", NULL, gcm_seal, NULL, NULL, NULL, napi_default, NULL},
      {"gcmOpen", NULL, gcm_open, NULL, NULL, NULL, napi_default, NULL},
      {"udpOpen", NULL, udp_open, NULL, NULL, NULL, napi_default, NULL},
      {"udpSend", NULL, udp_send, NULL, NULL, NULL, napi_default, NULL},
      {"udpLocalPort", NULL, udp_local_port, NULL, NULL, NULL, napi_default, NULL},
      {"udpClose", NULL, udp_close, NULL, NULL, NULL, napi_default, NULL},
      {"fecMulAdd", NULL, fec_mul_add, NULL, NULL, NULL, napi_default, NULL},
      {"fecAdd", NULL, fec_add, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
