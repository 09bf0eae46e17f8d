/* rc_coder.c -- the payload: rANS encode and decode of int32 symbols over
 * checked tables, the escape code for values outside a table, optional
 * scratch, and the integrity check folded into the initial state (rc.h
 * "Symbols", "Payload"). The container around it is rc_container.c. */
#include "rc.h"

#include <string.h>

#include "rc_internal.h"

/* The state x lives in [RC_L, 2^63) between symbols (the "normalized"
 * interval I = [L, b L) with L = 2^31 and b = 2^32 for 32-bit words).
 * L is a multiple of every M = 2^n (n <= 16), which makes I "b-unique":
 * encoding and decoding renormalize at exactly the same points. */
#define RC_L ((uint64_t)1 << 31)
#define RC_X_END ((uint64_t)1 << 63)

/* Escape code: bit length of g minus one, as a uniform 6-bit bin. */
#define RC_ESC_LEN_BITS 6u
#define RC_ESC_MAX_U 33u
#define RC_RAW_CHUNK 16u

/* ---------------------------------------------------------------------- */
/* Integrity check (rc.h "Payload"): a 31-bit hash of seed, N and symbols. */

#define RC_CHECK_POS_MUL 0x9E3779B9u
#define RC_CHECK_SYM_MUL 0x85EBCA6Bu
#define RC_CHECK_N_MUL 0xD6E8FEB86659FD93ull

/* One symbol's term; multiplying by an odd constant is a bijection mod 2^32,
 * so the term changes whenever the symbol does. */
static uint32_t check_term(int32_t v, size_t i) {
  return ((uint32_t)v ^ ((uint32_t)i * RC_CHECK_POS_MUL)) * RC_CHECK_SYM_MUL;
}

static uint32_t check_finish(uint32_t seed, size_t n, uint32_t sum) {
  const uint64_t z = (((uint64_t)seed << 32) | sum) ^
                     ((uint64_t)n * RC_CHECK_N_MUL);
  return (uint32_t)(fmix64(z) & 0x7FFFFFFFu);
}

/* ---------------------------------------------------------------------- */
/* Output bound. */

size_t rc_encode_bound(size_t num_symbols) {
  /* Per symbol at most 16 (bin) + 6 (length) + 33 (raw) bits, each step
   * overshooting the ideal by < log2(1 + 2^-15) bits: < 8 bytes. Plus the
   * 8-byte final state and one word of rounding. */
  if (num_symbols > ((size_t)-1 - 16) / 8) return 0;
  return 8 * num_symbols + 16;
}

/* ---------------------------------------------------------------------- */
/* 64 x 64 -> high 64 bits of the product, exact on every host. */

#if defined(__SIZEOF_INT128__) && !defined(RC_PORTABLE_MULHI)
__extension__ typedef unsigned __int128 rc_u128;
static uint64_t mulhi64(uint64_t a, uint64_t b) {
  return (uint64_t)(((rc_u128)a * b) >> 64);
}
#else
static uint64_t mulhi64(uint64_t a, uint64_t b) {
  const uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32;
  const uint64_t b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
  const uint64_t p0 = a_lo * b_lo, p1 = a_lo * b_hi;
  const uint64_t p2 = a_hi * b_lo, p3 = a_hi * b_hi;
  const uint64_t mid = (p0 >> 32) + (p1 & 0xFFFFFFFFu) + (p2 & 0xFFFFFFFFu);
  return p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32);
}
#endif

/* ---------------------------------------------------------------------- */
/* Encoder. Symbols go in reverse; words are written backwards from the end
 * of the buffer, so the decoder reads them forwards. */

typedef struct rc_enc {
  uint64_t x;   /* State; in [RC_L, RC_X_END) between steps. */
  uint8_t *out; /* Buffer start; never written below. */
  size_t pos;   /* Words occupy out[pos .. capacity); pos <= capacity. */
} rc_enc;

/* Codes the bin [start, start + freq) of M = 2^n onto the state.
 * REQUIRES: 1 <= n <= 16, 1 <= freq, start + freq <= 2^n. */
static rc_status enc_put(rc_enc *e, uint32_t start, uint32_t freq,
                         uint32_t n) {
  uint64_t x = e->x;
  /* x_max = ((L >> n) << 32) * freq = freq * 2^(63 - n): coding x >= x_max
   * would leave [L, 2^63), so first move 32 bits out. */
  const uint64_t x_max = (uint64_t)freq << (63 - n);
  uint64_t q;
  RC_ASSERT(n >= 1 && n <= RC_MAX_PRECISION);
  RC_ASSERT(freq >= 1 && start + freq <= ((uint32_t)1 << n));
  RC_ASSERT(x >= RC_L && x < RC_X_END);
  if (x >= x_max) {
    if (e->pos < 4) return RC_ERR_OVERFLOW;
    e->pos -= 4;
    store_le32(e->out + e->pos, (uint32_t)x);
    x >>= 32;
  }
  /* x = C(s, x) = floor(x / f) * M + (x mod f) + start. */
  q = x / freq;
  e->x = (q << n) + (x - q * freq) + start;
  RC_ASSERT(e->x >= RC_L && e->x < RC_X_END);
  return RC_OK;
}

/* Codes an out-of-table value: see "Symbols" in rc.h. Pushed in reverse of
 * the order the decoder reads: raw chunks last-first, then the length. The
 * caller pushes the escape bin itself afterwards. */
static rc_status enc_overflow(rc_enc *e, int64_t idx, int64_t k) {
  const uint64_t d = idx < 0 ? (uint64_t)(-1 - idx) * 2
                             : (uint64_t)(idx - k) * 2 + 1;
  const uint64_t g = d + 1;
  uint32_t u = 0;
  uint32_t num_full, last, shift = 0;
  rc_status s;
  while ((g >> (u + 1)) != 0) ++u; /* u = bit_length(g) - 1 <= 33 */
  RC_ASSERT(u <= RC_ESC_MAX_U);
  /* The decoder reads chunks of 16, 16, ..., then u mod 16 bits (most
   * significant first), so the last chunk read holds the lowest bits.
   * LIFO: push the lowest first. */
  num_full = u / RC_RAW_CHUNK;
  last = u % RC_RAW_CHUNK;
  if (last != 0) {
    s = enc_put(e, (uint32_t)(g & (((uint64_t)1 << last) - 1)), 1, last);
    if (s != RC_OK) return s;
    shift = last;
  }
  while (num_full-- > 0) {
    s = enc_put(e, (uint32_t)((g >> shift) & 0xFFFFu), 1, RC_RAW_CHUNK);
    if (s != RC_OK) return s;
    shift += RC_RAW_CHUNK;
  }
  return enc_put(e, u, 1, RC_ESC_LEN_BITS);
}

/* Encoder scratch: one entry per bin that replaces x / f by a multiply.
 * With f >= 2 and l = ceil(log2 f), rcp = ceil(2^(63+l) / f) gives
 * floor(x / f) = mulhi(x, rcp) >> (l - 1) for every x < 2^63 (Granlund &
 * Montgomery 1994, Thm 4.2 with N = 63: rcp * f - 2^(63+l) < f <= 2^l).
 * Then C(s, x) = x + start + q * (M - f). For f = 1, rcp = 2^64 - 1 and
 * shift 0 give q' = x - 1 (exact for 0 < x < 2^64), and the bias
 * start + M - 1 restores x + start + x * (M - 1) = x * M + start. */
typedef struct rc_enc_entry {
  uint64_t rcp;   /* Reciprocal of f (see above). */
  uint32_t bias;  /* start, or start + M - 1 when f == 1. */
  uint16_t cmpl;  /* M - f; f = M - cmpl. */
  uint16_t shift; /* l - 1, or 0 when f == 1. */
} rc_enc_entry;

static rc_enc_entry enc_entry_make(uint32_t start, uint32_t freq,
                                   uint32_t n) {
  rc_enc_entry e;
  const uint32_t m = (uint32_t)1 << n;
  e.cmpl = (uint16_t)(m - freq);
  if (freq == 1) {
    e.rcp = ~(uint64_t)0;
    e.shift = 0;
    e.bias = start + m - 1;
  } else {
    /* rcp = ceil(2^(63+l) / f) by long division in two 32-bit steps:
     * 2^(63+l) = 2^(31+l) * 2^32, and every remainder is < f <= 2^16. */
    uint32_t l = 0;
    uint64_t hi, q1, r1, q0, r0;
    while (((uint32_t)1 << l) < freq) ++l;
    hi = (uint64_t)1 << (31 + l);
    q1 = hi / freq;
    r1 = hi % freq;
    q0 = (r1 << 32) / freq;
    r0 = (r1 << 32) % freq;
    e.rcp = (q1 << 32) + q0 + (r0 != 0);
    e.shift = (uint16_t)(l - 1);
    e.bias = start;
  }
  return e;
}

/* REQUIRES: rc_check_tables(t) == RC_OK. */
static size_t enc_scratch_size(const rc_tables *t) {
  const size_t entries = (size_t)t->num_channels;
  if (entries > ((size_t)-1 / sizeof(rc_enc_entry)) / t->cdf_stride) {
    return 0;
  }
  return entries * t->cdf_stride * sizeof(rc_enc_entry);
}

size_t rc_encode_scratch_size(const rc_tables *t) {
  return rc_check_tables(t) == RC_OK ? enc_scratch_size(t) : 0;
}

/* Checks scratch against `need` bytes and `align`. NULL means "none". */
static rc_status check_scratch(const void *scratch, size_t size, size_t need,
                               size_t align) {
  if (scratch == NULL) return RC_OK;
  if (need == 0 || size < need) return RC_ERR_ARG;
  if ((uintptr_t)scratch % align != 0) {
    return RC_ERR_ARG;
  }
  return RC_OK;
}

/* rc_encode after its argument and table checks (rc_internal.h). */
rc_status rc_encode_unchecked(const rc_tables *t, const int32_t *symbols,
                              size_t num_symbols, uint32_t check_seed,
                              uint8_t *out, size_t capacity,
                              size_t *out_size, void *scratch,
                              size_t scratch_size) {
  rc_enc e;
  rc_status s;
  size_t i;
  uint32_t c;
  uint32_t n;
  uint32_t sum = 0;
  rc_enc_entry *entries = (rc_enc_entry *)scratch;
  const int32_t *cdf;
  const int32_t *cdf_length;
  const int32_t *offset;
  size_t stride;
  uint32_t num_channels;
  *out_size = 0;
  s = check_scratch(scratch, scratch_size, enc_scratch_size(t), 8);
  if (s != RC_OK) return s;
  n = t->precision;
  cdf = t->cdf;
  cdf_length = t->cdf_length;
  offset = t->offset;
  stride = t->cdf_stride;
  num_channels = t->num_channels;
  if (entries != NULL) {
    for (c = 0; c < num_channels; ++c) {
      const int32_t *row = cdf + (size_t)c * stride;
      int32_t k;
      for (k = 0; k + 1 < cdf_length[c]; ++k) {
        entries[(size_t)c * stride + (size_t)k] = enc_entry_make(
            (uint32_t)row[k], (uint32_t)(row[k + 1] - row[k]), n);
      }
    }
  }
  for (i = 0; i < num_symbols; ++i) sum += check_term(symbols[i], i);
  /* x_init = L + check, in [L, 2L); the decoder must end exactly here. */
  e.x = RC_L + check_finish(check_seed, num_symbols, sum);
  e.out = out;
  e.pos = capacity;
  c = (uint32_t)(num_symbols % num_channels);
  for (i = num_symbols; i-- > 0;) {
    const int32_t *row;
    int64_t idx;
    int64_t k;
    c = (c == 0 ? num_channels : c) - 1; /* c = i % C */
    row = cdf + (size_t)c * stride;
    k = (int64_t)cdf_length[c] - 2;
    idx = (int64_t)symbols[i] - offset[c];
    if (idx < 0 || idx >= k) {
      s = enc_overflow(&e, idx, k);
      if (s != RC_OK) return s;
      idx = k;
    }
    if (entries != NULL) {
      const rc_enc_entry *en = &entries[(size_t)c * stride + (size_t)idx];
      uint64_t x = e.x;
      const uint64_t freq = ((uint64_t)1 << n) - en->cmpl;
      RC_ASSERT(x >= RC_L && x < RC_X_END);
      if (x >= freq << (63 - n)) { /* x_max, as in enc_put */
        if (e.pos < 4) return RC_ERR_OVERFLOW;
        e.pos -= 4;
        store_le32(out + e.pos, (uint32_t)x);
        x >>= 32;
      }
      /* x = C(s, x) = x + start + floor(x / f) * (M - f). */
      e.x = x + en->bias + (mulhi64(x, en->rcp) >> en->shift) * en->cmpl;
      RC_ASSERT(e.x >= RC_L && e.x < RC_X_END);
    } else {
      s = enc_put(&e, (uint32_t)row[idx], (uint32_t)(row[idx + 1] - row[idx]),
                  n);
      if (s != RC_OK) return s;
    }
  }
  if (e.pos < 8) return RC_ERR_OVERFLOW;
  e.pos -= 8;
  store_le64(out + e.pos, e.x);
  *out_size = capacity - e.pos;
  memmove(out, out + e.pos, *out_size);
  return RC_OK;
}

rc_status rc_encode(const rc_tables *t, const int32_t *symbols,
                    size_t num_symbols, uint32_t check_seed, uint8_t *out,
                    size_t capacity, size_t *out_size, void *scratch,
                    size_t scratch_size) {
  rc_status s;
  if (out_size == NULL) return RC_ERR_ARG;
  *out_size = 0;
  if (out == NULL || (symbols == NULL && num_symbols > 0)) return RC_ERR_ARG;
  s = rc_check_tables(t);
  if (s != RC_OK) return s;
  return rc_encode_unchecked(t, symbols, num_symbols, check_seed, out,
                             capacity, out_size, scratch, scratch_size);
}

/* ---------------------------------------------------------------------- */
/* Decoder. */

typedef struct rc_dec {
  uint64_t x;        /* State; in [RC_L, RC_X_END) between steps. */
  const uint8_t *in;
  size_t size;       /* in[0..size) is readable. */
  size_t pos;        /* Next unread byte; pos <= size. */
} rc_dec;

/* Reads a uniform n-bit value: the inverse of enc_put(v, 1, n), i.e.
 * v = x mod 2^n, x = x >> n, then refill. */
static rc_status dec_raw(rc_dec *d, uint32_t n, uint32_t *value) {
  uint64_t x = d->x;
  *value = (uint32_t)(x & (((uint64_t)1 << n) - 1));
  x >>= n; /* >= 2^(31-16) = 2^15 */
  if (x < RC_L) {
    if (d->size - d->pos < 4) return RC_ERR_TRUNCATED;
    x = (x << 32) | load_le32(d->in + d->pos);
    d->pos += 4;
  }
  RC_ASSERT(x >= RC_L && x < RC_X_END);
  d->x = x;
  return RC_OK;
}

/* Reads the escape code of rc.h "Symbols" and rebuilds the value. */
static rc_status dec_overflow(rc_dec *d, int64_t k, int32_t offset,
                              int32_t *value) {
  uint32_t u;
  uint32_t chunk;
  uint64_t g = 1;
  uint64_t half;
  int64_t idx;
  int64_t v;
  rc_status s = dec_raw(d, RC_ESC_LEN_BITS, &u);
  if (s != RC_OK) return s;
  if (u > RC_ESC_MAX_U) return RC_ERR_CORRUPT;
  while (u > 0) {
    const uint32_t b = u < RC_RAW_CHUNK ? u : RC_RAW_CHUNK;
    s = dec_raw(d, b, &chunk);
    if (s != RC_OK) return s;
    g = (g << b) | chunk;
    u -= b;
  }
  /* g < 2^34, so d and idx below are far from int64 limits. */
  half = (g - 1) >> 1;
  if (((g - 1) & 1) == 0) {
    idx = -1 - (int64_t)half;
  } else {
    idx = k + (int64_t)half;
  }
  v = idx + offset;
  if (v < (int64_t)INT32_MIN || v > (int64_t)INT32_MAX) return RC_ERR_CORRUPT;
  *value = (int32_t)v;
  return RC_OK;
}

/* Decoder scratch: per channel 2^b buckets (b = min(n, RC_LUT_BITS)); bucket
 * j holds the bin that contains slot j << (n - b). A lookup starts there and
 * steps forward past at most the bins that begin inside the bucket. */
static uint32_t lut_bits(uint32_t n) {
  return n < RC_LUT_BITS ? n : RC_LUT_BITS;
}

/* REQUIRES: rc_check_tables(t) == RC_OK. */
static size_t dec_scratch_size(const rc_tables *t) {
  /* C < 2^32 and b <= 16: no overflow on hosts with 64-bit size_t; on
   * 32-bit hosts very many channels make this 0, i.e. "no scratch". */
  if ((size_t)t->num_channels >
      ((size_t)-1 / sizeof(uint16_t)) >> lut_bits(t->precision)) {
    return 0;
  }
  return ((size_t)t->num_channels << lut_bits(t->precision)) *
         sizeof(uint16_t);
}

size_t rc_decode_scratch_size(const rc_tables *t) {
  return rc_check_tables(t) == RC_OK ? dec_scratch_size(t) : 0;
}

/* rc_decode after its argument and table checks (rc_internal.h). */
rc_status rc_decode_unchecked(const rc_tables *t, const uint8_t *in,
                              size_t size, uint32_t check_seed,
                              int32_t *symbols, size_t num_symbols,
                              void *scratch, size_t scratch_size) {
  rc_dec d;
  rc_status s;
  size_t i;
  uint32_t c = 0;
  uint32_t sum = 0;
  uint32_t n, b;
  uint32_t mask;
  uint16_t *lut = (uint16_t *)scratch;
  const int32_t *cdf;
  const int32_t *cdf_length;
  const int32_t *offset;
  size_t stride;
  uint32_t num_channels;
  uint64_t x;
  size_t pos;
  s = check_scratch(scratch, scratch_size, dec_scratch_size(t), 2);
  if (s != RC_OK) return s;
  n = t->precision;
  b = lut_bits(n);
  mask = ((uint32_t)1 << n) - 1;
  cdf = t->cdf;
  cdf_length = t->cdf_length;
  offset = t->offset;
  stride = t->cdf_stride;
  num_channels = t->num_channels;
  if (lut != NULL) {
    for (c = 0; c < num_channels; ++c) {
      const int32_t *row = cdf + (size_t)c * stride;
      uint16_t *bucket = lut + ((size_t)c << b);
      uint32_t j, sym = 0;
      for (j = 0; j < ((uint32_t)1 << b); ++j) {
        const int32_t first_slot = (int32_t)(j << (n - b));
        while (row[sym + 1] <= first_slot) ++sym; /* row[len-1] = M stops */
        bucket[j] = (uint16_t)sym; /* sym <= len - 2 <= 2^16 - 1 */
      }
    }
    c = 0;
  }
  if (size < 8) return RC_ERR_TRUNCATED;
  x = load_le64(in);
  pos = 8;
  /* Every encoder's final state lies in [L, 2^63). */
  if (x < RC_L || x >= RC_X_END) return RC_ERR_CORRUPT;
  for (i = 0; i < num_symbols; ++i) {
    const int32_t *row = cdf + (size_t)c * stride;
    const uint32_t len = (uint32_t)cdf_length[c];
    const int32_t slot = (int32_t)(x & mask);
    const int32_t *base;
    uint32_t sym;
    int32_t value;
    if (lut != NULL) {
      /* Start at the bin holding the bucket's first slot; row[len-1] = M >
       * slot bounds the walk inside the row. */
      base = row + lut[((size_t)c << b) | ((uint32_t)slot >> (n - b))];
      while (base[1] <= slot) ++base;
    } else {
      /* Largest s in [0, len - 2] with row[s] <= slot: row[0] = 0 <= slot
       * < row[len - 1] = M. Branch-free halving keeps row[base] <= slot. */
      uint32_t count = len - 1;
      base = row;
      while (count > 1) {
        const uint32_t half = count >> 1;
        base = (base[half] <= slot) ? base + half : base;
        count -= half;
      }
    }
    sym = (uint32_t)(base - row);
    /* x = D(x) = f * (x >> n) + slot - start; x >> n < 2^(63-n) and
     * f <= 2^n, so no overflow; x >= f * 2^(31-n) >= 2^15 after. */
    x = (uint64_t)(uint32_t)(base[1] - base[0]) * (x >> n) +
        (uint32_t)(slot - base[0]);
    if (x < RC_L) {
      if (size - pos < 4) return RC_ERR_TRUNCATED;
      /* x < 2^31: x << 32 | w < 2^63; x >= 2^15: result >= L. */
      x = (x << 32) | load_le32(in + pos);
      pos += 4;
    }
    RC_ASSERT(x >= RC_L && x < RC_X_END);
    if (sym + 2 == len) {
      d.in = in;
      d.size = size;
      d.pos = pos;
      d.x = x;
      s = dec_overflow(&d, (int64_t)len - 2, offset[c], &value);
      if (s != RC_OK) return s;
      x = d.x;
      pos = d.pos;
    } else {
      value = offset[c] + (int32_t)sym; /* fits: rc_check_tables */
    }
    symbols[i] = value;
    sum += check_term(value, i);
    if (++c == num_channels) c = 0;
  }
  if (x != RC_L + check_finish(check_seed, num_symbols, sum)) {
    return RC_ERR_CORRUPT;
  }
  if (pos != size) return RC_ERR_TRAILING;
  return RC_OK;
}

rc_status rc_decode(const rc_tables *t, const uint8_t *in, size_t size,
                    uint32_t check_seed, int32_t *symbols,
                    size_t num_symbols, void *scratch, size_t scratch_size) {
  rc_status s;
  if ((in == NULL && size > 0) || (symbols == NULL && num_symbols > 0)) {
    return RC_ERR_ARG;
  }
  s = rc_check_tables(t);
  if (s != RC_OK) return s;
  return rc_decode_unchecked(t, in, size, check_seed, symbols, num_symbols,
                             scratch, scratch_size);
}
