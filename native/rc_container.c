/* rc_container.c -- the container around a payload (rc.h "Container"):
 * the versioned header (magic, model id, shape as LEB128 varints) and the
 * whole-container encode/decode that check the tables once, compare model
 * ids and seed the payload's check with the header's hash. */
#include "rc.h"

#include <string.h>

#include "rc_internal.h"

/* ---------------------------------------------------------------------- */
/* Container header. */

static const uint8_t kMagic[4] = {0x48, 0x4A, 0x52, 0x43}; /* "HJRC" */

/* Product of dims must stay below this (and so fits size_t math on 64-bit
 * hosts; 32-bit hosts reject large counts at allocation time). */
#define RC_MAX_SYMBOLS ((uint64_t)1 << 62)

/* A dim must be below 2^63 (a varint holds at most 63 bits). */
#define RC_MAX_DIM ((uint64_t)1 << 63)

/* FNV-1a, 32 bits. */
static uint32_t fnv1a32(const uint8_t *p, size_t n) {
  uint32_t h = 2166136261u;
  size_t i;
  for (i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 16777619u;
  }
  return h;
}

rc_status rc_header_write(rc_header *h, uint8_t *out, size_t capacity) {
  size_t pos = 0;
  uint32_t r;
  uint64_t count = 1;
  if (h == NULL || out == NULL) return RC_ERR_ARG;
  if (h->rank < 1 || h->rank > RC_MAX_RANK) return RC_ERR_ARG;
  for (r = 0; r < h->rank; ++r) {
    if (h->dims[r] >= RC_MAX_DIM) return RC_ERR_ARG;
    if (h->dims[r] != 0 && count >= RC_MAX_SYMBOLS / h->dims[r] + 1) {
      return RC_ERR_ARG;
    }
    count *= h->dims[r];
  }
  if (count >= RC_MAX_SYMBOLS) return RC_ERR_ARG;
  if (capacity < 14) return RC_ERR_OVERFLOW;
  memcpy(out, kMagic, 4);
  out[4] = (uint8_t)RC_FORMAT_VERSION;
  memcpy(out + 5, h->model_id, RC_MODEL_ID_SIZE);
  out[13] = (uint8_t)h->rank;
  pos = 14;
  for (r = 0; r < h->rank; ++r) {
    uint64_t v = h->dims[r];
    do {
      const uint8_t low = (uint8_t)(v & 0x7F);
      v >>= 7;
      if (pos >= capacity) return RC_ERR_OVERFLOW;
      out[pos++] = (uint8_t)(low | (v != 0 ? 0x80 : 0));
    } while (v != 0);
  }
  h->header_size = pos;
  h->check_seed = fnv1a32(out, pos);
  return RC_OK;
}

/* Reads one minimal LEB128 varint < 2^63 from in[*pos..size). */
static rc_status read_varint(const uint8_t *in, size_t size, size_t *pos,
                             uint64_t *value) {
  uint64_t v = 0;
  uint32_t shift = 0;
  for (;;) {
    uint8_t b;
    if (*pos >= size) return RC_ERR_TRUNCATED;
    b = in[(*pos)++];
    /* 9 groups hold 63 bits; a 10th byte would reach bit 63. */
    if (shift == 63) return RC_ERR_CORRUPT;
    v |= (uint64_t)(b & 0x7F) << shift;
    if ((b & 0x80) == 0) {
      /* Minimal: a final zero group is only allowed as the first byte. */
      if (b == 0 && shift != 0) return RC_ERR_CORRUPT;
      break;
    }
    shift += 7;
  }
  *value = v;
  return RC_OK;
}

rc_status rc_header_parse(const uint8_t *in, size_t size, rc_header *h) {
  size_t pos;
  uint32_t r;
  uint64_t count = 1;
  if (h == NULL || (in == NULL && size > 0)) return RC_ERR_ARG;
  if (size < 4) return size == 0 || memcmp(in, kMagic, size) == 0
                           ? RC_ERR_TRUNCATED
                           : RC_ERR_MAGIC;
  if (memcmp(in, kMagic, 4) != 0) return RC_ERR_MAGIC;
  if (size < 5) return RC_ERR_TRUNCATED;
  if (in[4] != RC_FORMAT_VERSION) return RC_ERR_VERSION;
  if (size < 14) return RC_ERR_TRUNCATED;
  memcpy(h->model_id, in + 5, RC_MODEL_ID_SIZE);
  h->rank = in[13];
  if (h->rank < 1 || h->rank > RC_MAX_RANK) return RC_ERR_CORRUPT;
  pos = 14;
  for (r = 0; r < h->rank; ++r) {
    rc_status s = read_varint(in, size, &pos, &h->dims[r]);
    if (s != RC_OK) return s;
    if (h->dims[r] != 0 && count >= RC_MAX_SYMBOLS / h->dims[r] + 1) {
      return RC_ERR_CORRUPT;
    }
    count *= h->dims[r];
  }
  if (count >= RC_MAX_SYMBOLS) return RC_ERR_CORRUPT;
  h->num_symbols = count;
  h->header_size = pos;
  h->check_seed = fnv1a32(in, pos);
  return RC_OK;
}

/* ---------------------------------------------------------------------- */
/* Whole containers. */

rc_status rc_container_encode(const rc_tables *t, const uint64_t *dims,
                              uint32_t rank, const int32_t *symbols,
                              size_t num_symbols, uint8_t *out,
                              size_t capacity, size_t *out_size,
                              void *scratch, size_t scratch_size) {
  rc_header h;
  rc_status s;
  size_t payload = 0;
  uint64_t count = 1;
  uint32_t r;
  if (out_size == NULL) return RC_ERR_ARG;
  *out_size = 0;
  if (dims == NULL || out == NULL || rank < 1 || rank > RC_MAX_RANK ||
      (symbols == NULL && num_symbols > 0)) {
    return RC_ERR_ARG;
  }
  s = rc_check_tables(t);
  if (s != RC_OK) return s;
  memset(&h, 0, sizeof(h));
  h.rank = rank;
  for (r = 0; r < rank; ++r) h.dims[r] = dims[r];
  if (dims[rank - 1] != t->num_channels) return RC_ERR_ARG;
  rc_model_id_unchecked(t, h.model_id);
  s = rc_header_write(&h, out, capacity); /* checks dims: product < 2^62 */
  if (s != RC_OK) return s;
  for (r = 0; r < rank; ++r) count *= dims[r]; /* no overflow: checked */
  if (count != (uint64_t)num_symbols) return RC_ERR_ARG;
  s = rc_encode_unchecked(t, symbols, num_symbols, h.check_seed,
                          out + h.header_size, capacity - h.header_size,
                          &payload, scratch, scratch_size);
  if (s != RC_OK) return s;
  *out_size = h.header_size + payload;
  return RC_OK;
}

rc_status rc_container_decode(const rc_tables *t, const uint8_t *in,
                              size_t size, int32_t *symbols,
                              size_t num_symbols, void *scratch,
                              size_t scratch_size) {
  rc_header h;
  uint8_t id[RC_MODEL_ID_SIZE];
  rc_status s;
  if ((in == NULL && size > 0) || (symbols == NULL && num_symbols > 0)) {
    return RC_ERR_ARG;
  }
  s = rc_check_tables(t);
  if (s != RC_OK) return s;
  s = rc_header_parse(in, size, &h);
  if (s != RC_OK) return s;
  rc_model_id_unchecked(t, id);
  if (memcmp(id, h.model_id, RC_MODEL_ID_SIZE) != 0) return RC_ERR_MODEL;
  if (h.dims[h.rank - 1] != t->num_channels) return RC_ERR_CORRUPT;
  if (h.num_symbols != (uint64_t)num_symbols) return RC_ERR_ARG;
  return rc_decode_unchecked(t, in + h.header_size, size - h.header_size,
                             h.check_seed, symbols, num_symbols, scratch,
                             scratch_size);
}
