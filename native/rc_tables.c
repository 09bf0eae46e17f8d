/* rc_tables.c -- status names, the checks on coding tables, and the 64-bit
 * model id that names a set of tables (rc.h "Tables", "Model id"). Every
 * other entry point checks its tables here first. */
#include "rc.h"

#include "rc_internal.h"

/* ---------------------------------------------------------------------- */
/* Status names and table checks (rc.h "Tables"). */

const char *rc_status_string(rc_status status) {
  switch (status) {
    case RC_OK:
      return "ok";
    case RC_ERR_ARG:
      return "invalid argument";
    case RC_ERR_TABLE:
      return "invalid coding tables";
    case RC_ERR_OVERFLOW:
      return "output buffer too small";
    case RC_ERR_TRUNCATED:
      return "input truncated";
    case RC_ERR_CORRUPT:
      return "input corrupt";
    case RC_ERR_TRAILING:
      return "trailing bytes after the last symbol";
    case RC_ERR_MAGIC:
      return "not an HJRC container (bad magic)";
    case RC_ERR_VERSION:
      return "unsupported container format version";
    case RC_ERR_MODEL:
      return "container was made for other tables (model id differs)";
  }
  return "unknown status";
}

rc_status rc_check_cdf(const int32_t *cdf, size_t length, uint32_t precision) {
  size_t k;
  int bad = 0;
  if (precision < 1 || precision > RC_MAX_PRECISION) return RC_ERR_ARG;
  if (length > 0 && cdf == NULL) return RC_ERR_ARG;
  if (length < 2) return RC_ERR_TABLE;
  /* Strictly increasing: every bin, the escape included, has freq >= 1.
   * One pass with no early exit, so that compilers vectorize it: it runs
   * over every row on every call. */
  for (k = 1; k < length; ++k) bad |= cdf[k] <= cdf[k - 1];
  if (bad || cdf[0] != 0 ||
      cdf[length - 1] != (int32_t)((uint32_t)1 << precision)) {
    return RC_ERR_TABLE;
  }
  return RC_OK;
}

rc_status rc_check_tables(const rc_tables *t) {
  uint32_t c;
  if (t == NULL || t->cdf == NULL || t->cdf_length == NULL ||
      t->offset == NULL) {
    return RC_ERR_ARG;
  }
  if (t->num_channels < 1 || t->cdf_stride < 2 ||
      t->num_channels > (uint32_t)INT32_MAX ||
      t->cdf_stride > (uint32_t)INT32_MAX) {
    return RC_ERR_ARG;
  }
  if (t->precision < 1 || t->precision > RC_MAX_PRECISION) return RC_ERR_ARG;
  for (c = 0; c < t->num_channels; ++c) {
    const int32_t len = t->cdf_length[c];
    rc_status s;
    if (len < 2 || (uint32_t)len > t->cdf_stride) return RC_ERR_TABLE;
    s = rc_check_cdf(t->cdf + (size_t)c * t->cdf_stride, (size_t)len,
                     t->precision);
    if (s != RC_OK) return s;
    /* The last regular value offset + K - 1 must be an int32. */
    if ((int64_t)t->offset[c] + (len - 2) - 1 > (int64_t)INT32_MAX) {
      return RC_ERR_TABLE;
    }
  }
  return RC_OK;
}

/* ---------------------------------------------------------------------- */
/* Model id (rc.h "Model id"). */

#define RC_ID_P1 0x9E3779B97F4A7C15ull
#define RC_ID_P2 0xBF58476D1CE4E5B9ull
/* Lane l starts at (l + 1) * RC_ID_LANE_MUL (the odd constant the payload
 * check multiplies N by). */
#define RC_ID_LANE_MUL 0xD6E8FEB86659FD93ull

typedef struct rc_id_state {
  uint64_t v[4];    /* lanes */
  uint64_t count;   /* words fed so far */
  uint32_t pending; /* the first word of an incomplete pair (count odd) */
} rc_id_state;

static uint64_t rotl64(uint64_t x, unsigned r) {
  return (x << r) | (x >> (64 - r));
}

/* One multiply per pair of words: the bound on speed is the multiplier. */
static uint64_t id_round(uint64_t v, uint64_t pair) {
  return rotl64(v ^ pair, 29) * RC_ID_P2;
}

/* Pair k = word[2k] | word[2k+1] << 32 goes to lane k % 4. */
static void id_word(rc_id_state *s, uint32_t w) {
  if ((s->count & 1) == 0) {
    s->pending = w;
  } else {
    const size_t lane = (size_t)(s->count >> 1) & 3;
    s->v[lane] = id_round(s->v[lane], s->pending | ((uint64_t)w << 32));
  }
  ++s->count;
}

/* Feeds n words; eight at a time (one pair per lane) once aligned to lane
 * 0, so the lane chains run in parallel. Same result as id_word one by
 * one. */
static void id_feed(rc_id_state *s, const int32_t *w, size_t n) {
  while (n > 0 && (s->count & 7) != 0) {
    id_word(s, (uint32_t)*w++);
    --n;
  }
  {
    uint64_t v0 = s->v[0], v1 = s->v[1], v2 = s->v[2], v3 = s->v[3];
    size_t groups = n / 8;
    s->count += 8 * (uint64_t)groups;
    n %= 8;
    while (groups-- > 0) {
      v0 = id_round(v0, (uint32_t)w[0] | ((uint64_t)(uint32_t)w[1] << 32));
      v1 = id_round(v1, (uint32_t)w[2] | ((uint64_t)(uint32_t)w[3] << 32));
      v2 = id_round(v2, (uint32_t)w[4] | ((uint64_t)(uint32_t)w[5] << 32));
      v3 = id_round(v3, (uint32_t)w[6] | ((uint64_t)(uint32_t)w[7] << 32));
      w += 8;
    }
    s->v[0] = v0;
    s->v[1] = v1;
    s->v[2] = v2;
    s->v[3] = v3;
  }
  while (n-- > 0) id_word(s, (uint32_t)*w++);
}

/* REQUIRES: rc_check_tables(t) == RC_OK. */
void rc_model_id_unchecked(const rc_tables *t, uint8_t id[RC_MODEL_ID_SIZE]) {
  rc_id_state st;
  uint32_t c, l;
  int32_t head[2];
  uint64_t h, m;
  for (l = 0; l < 4; ++l) st.v[l] = (uint64_t)(l + 1) * RC_ID_LANE_MUL;
  st.count = 0;
  st.pending = 0;
  head[0] = (int32_t)t->precision;
  head[1] = (int32_t)t->num_channels; /* <= INT32_MAX: same bits */
  id_feed(&st, head, 2);
  id_feed(&st, t->offset, t->num_channels);
  id_feed(&st, t->cdf_length, t->num_channels);
  for (c = 0; c < t->num_channels; ++c) {
    id_feed(&st, t->cdf + (size_t)c * t->cdf_stride,
            (size_t)t->cdf_length[c]);
  }
  m = st.count;
  if (m & 1) id_word(&st, 0); /* complete the last pair with a zero word */
  h = m * RC_ID_P1;
  for (l = 0; l < 4; ++l) h = rotl64(h ^ fmix64(st.v[l]), 27) * RC_ID_P2;
  store_le64(id, fmix64(h));
}

rc_status rc_model_id(const rc_tables *t, uint8_t id[RC_MODEL_ID_SIZE]) {
  rc_status s = rc_check_tables(t);
  if (s != RC_OK) return s;
  if (id == NULL) return RC_ERR_ARG;
  rc_model_id_unchecked(t, id);
  return RC_OK;
}
